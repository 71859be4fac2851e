"""The parent's side of the namespace child (namespace/child.py): its JSON-lines
conversation, and what to say when it, or a helper, dies while the parent waits."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TypeVar

from dockerup.errors import DockerUpError
from dockerup.linux.exits import describe_exit
from dockerup.linux.fdwait import readable
from dockerup.logs import tail
from dockerup.wire.messages import Step, StepFailed, read_step
from dockerup.wire.specs import SpecError

T = TypeVar("T", bound=Step)


class ChildLink:
    """The parent's end of the JSON-lines conversation with child.py."""

    def __init__(self, p: subprocess.Popen[bytes], rfd: int, wfd: int, log: Path) -> None:
        self.p, self.rfd, self.wfd, self.log = p, rfd, wfd, log
        self.spawned_at = time.monotonic()
        self.buf = b""
        # The child process execs dockerd once told to go: errors name what it is by then.
        self.name = "docker-up's namespace child"

    def send(self, msg: Step) -> None:
        try:
            os.write(self.wfd, msg.line())
        except BrokenPipeError:  # it ended (killed, say) before reading: say how, as recv does
            raise helper_died(self.p, self.name, "the namespace set-up", self.log) from None

    def recv(self, kind: type[T], what: str, deadline: float) -> T:
        while b"\n" not in self.buf:
            wait_readable(self.rfd, self.p, self.name, what, self.log, deadline)
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise helper_died(self.p, self.name, what, self.log)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return read_step(line, kind)
        except StepFailed as e:
            raise DockerUpError(
                f"setting up the namespace failed: {e}", hint=f"log: {self.log}"
            ) from None
        except SpecError as e:  # a child of another docker-up version, or a bug
            raise DockerUpError(
                f"{self.name} said what docker-up does not understand: {e}", hint=f"log: {self.log}"
            ) from None


def wait_readable(
    fd: int, helper: subprocess.Popen[bytes], name: str, what: str, log: Path, deadline: float
) -> None:
    """Block until fd is readable; fail at once if the helper exits first (its pidfd becomes
    readable), or at the deadline."""
    pidfd = os.pidfd_open(helper.pid)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DockerUpError(f"timed out waiting for {what}", detail=tail(log))
            ready = readable([fd, pidfd], left)
            if fd in ready:
                return
            if pidfd in ready:
                raise helper_died(helper, name, what, log)
    finally:
        os.close(pidfd)


def helper_died(p: subprocess.Popen[bytes], name: str, what: str, log: Path) -> DockerUpError:
    code = p.wait()
    return DockerUpError(
        f"{name} {describe_exit(code)} while waiting for {what}",
        hint=f"full log: {log}",
        detail=tail(log, 20),
    )
