"""Recognising docker-up's own processes by pid, start time and executable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dockerup.linux import procid
from dockerup.linux.procid import ProcId
from dockerup.wire.specs import SpecError


def test_start_time_survives_a_command_name_with_spaces_and_parens() -> None:
    fields = " ".join(str(n) for n in range(3, 60))  # field 3 onwards; 22 is "22"
    assert procid.start_time(f"123 (a b) c) {fields}") == 22


def test_this_process_is_recognised_and_a_wrong_record_is_not() -> None:
    me = procid.identify(os.getpid())
    assert me is not None and me.exe == os.path.realpath(sys.executable)
    assert ProcId.from_json(me.to_json()) == me
    fd = procid.open_if_same(me)
    assert fd is not None
    os.close(fd)
    # Same PID, another start time: a reused PID; never signalled.
    assert procid.open_if_same(ProcId(me.pid, me.start + 1, me.exe)) is None
    assert procid.open_if_same(ProcId(me.pid, me.start, "/usr/sbin/dockerd")) is None
    assert not procid.send(ProcId(me.pid, me.start - 1, me.exe), 0)
    for wrong in ('{"pid": "x", "start": 1, "exe": "/x"}', "null", '{"pid": 1}'):
        with pytest.raises(SpecError):
            ProcId.from_json(wrong)


def test_terminate_ends_the_recorded_process_only() -> None:
    p = subprocess.Popen(["sleep", "60"])
    try:
        ident = procid.identify(p.pid)
        assert ident is not None
        assert not procid.terminate(ProcId(p.pid, ident.start + 5, ident.exe), 1)
        assert p.poll() is None  # a record that does not match signals nothing
        assert procid.terminate(ident, 5)
        assert p.wait(5) == -15
    finally:
        p.kill()
        p.wait()
