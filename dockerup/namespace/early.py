"""What a start does before it imports the core (stdlib only, a few milliseconds): pick up
the fds the lazy holder hands over, and start the namespace child, whose own Python start
(~25 ms) then overlaps the CLI's imports and planning. The child waits for its spec on a
pipe; if the start fails before sending one, closing the pipe ends it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from types import FrameType

from dockerup.lean import script
from dockerup.linux.exits import STOP_SIGNALS

# When each step of this start happened (CLOCK_MONOTONIC): the executor puts them into the
# timings that state.json and `scripts/bench` show, with the child's own.
MARKS: dict[str, float] = {"main": time.monotonic()}


def mark(step: str) -> None:
    MARKS[step] = time.monotonic()


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP while starting: stop everything in order."""


def stop_on_signals() -> None:
    """From a start's first line on, a stop signal raises Interrupted: whatever the start
    has begun (a probe, the namespace child, the background start) unwinds and the start
    says so. Left at the default disposition, SIGTERM or SIGHUP in the first second of a
    loaded start (imports, probes, planning) ended it silently, exit -15, and orphaned
    what it was running then (issue 33). The first signal only: the unwinding itself must
    not be cut short by a second one."""

    def handler(signum: int, frame: FrameType | None) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)


def activated_fds() -> tuple[int, int] | None:
    """(listen fd, lock fd) when the lazy holder exec'd us on a first connection."""
    listen, lock = (
        os.environ.pop("DOCKER_UP_LISTEN_FD", ""),
        os.environ.pop("DOCKER_UP_LOCK_FD", ""),
    )
    if listen.isdigit() and lock.isdigit():
        return int(listen), int(lock)
    return None


class Child:
    """A started namespace child: the process and our ends of its two pipes. (A plain
    class: importing dataclasses would cost this early step ~10 ms.)"""

    def __init__(self, p: subprocess.Popen[bytes], rfd: int, wfd: int) -> None:
        self.p = p
        self.rfd = rfd  # child -> us
        self.wfd = wfd  # us -> child
        self.taken = False  # the executor owns it now (and stops it in order)
        self.spawned_at = time.monotonic()


def start_child(python: str, listen_fd: int | None) -> Child:
    c2p_r, c2p_w = os.pipe2(os.O_CLOEXEC)
    p2c_r, p2c_w = os.pipe2(os.O_CLOEXEC)
    listen = () if listen_fd is None else (listen_fd,)
    try:
        # Its own session: the terminal's Ctrl-C is docker-up's to handle, in order.
        p = subprocess.Popen(
            [python, "-S", script("child"), str(p2c_r), str(c2p_w), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(p2c_r, c2p_w, *listen),
            start_new_session=True,
        )
    finally:
        os.close(p2c_r)
        os.close(c2p_w)
    return Child(p, c2p_r, p2c_w)


@contextlib.contextmanager
def child_started(python: str, listen_fd: int | None) -> Iterator[Child]:
    """A child for this start; ended here unless the executor took it."""
    child = start_child(python, listen_fd)
    try:
        yield child
    finally:
        if not child.taken:
            for fd in (child.wfd, child.rfd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            child.p.wait()  # it reads end-of-file and exits: nothing is left behind
