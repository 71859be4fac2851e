"""The parent's side of the namespace child: a child that ended says how, on either end of
the conversation (the start storm, issue 33, SIGKILLed it between steps: docker-up's
next message then met a broken pipe and it failed with an internal error, exit 70)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.namespace.childlink import ChildLink
from dockerup.wire.messages import Mapped


def test_a_message_to_a_killed_child_says_it_was_killed(tmp_path: Path) -> None:
    r, w = os.pipe()
    p = subprocess.Popen(["sleep", "60"], pass_fds=(r,))
    os.close(r)
    p.send_signal(signal.SIGKILL)
    p.wait()  # its end of the pipe is closed now: nobody reads
    log = tmp_path / "child.log"
    log.write_text("the child's last words\n")
    link = ChildLink(p, os.open(os.devnull, os.O_RDONLY), w, log)
    with pytest.raises(DockerUpError) as caught:
        link.send(Mapped())
    assert "killed by SIGKILL" in str(caught.value), str(caught.value)
    assert "the child's last words" in (caught.value.detail or "")
    os.close(w)
