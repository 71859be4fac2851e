"""The network helper's one launcher (stdlib only). The first start (keeper/supervise.py) and every
restart after the helper died (keeper/resident.py) go through start_net, from the one argv template
the planner wrote (net/: {target}, {ready_fd} and {exit_fd} filled in here), so a restarted
slirp4netns or pasta is started exactly as the first was.

The helper reports readiness on a pipe it inherits, or on a named pipe for one that closes
inherited fds (trixie's pasta), and exits when the exit pipe's other end closes: when its
starter closes it on purpose, or dies. A helper that cannot watch an exit pipe (pasta) has
the parent-death signal instead, which start_net gives every helper, checked
(linux.die_with_parent): its starter is docker-up, later the keeper, the same PID."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time


@dataclasses.dataclass
class Started:
    p: subprocess.Popen[bytes]
    ready_r: int  # readable once the helper is up, or at its end (wait_ready)
    exit_w: int  # ours: closing it tells the helper to exit


def fill(template: list[str], target: int, ready: str, exit_fd: int) -> list[str]:
    return [
        a.replace("{target}", str(target))
        .replace("{ready_fd}", ready)
        .replace("{exit_fd}", str(exit_fd))
        for a in template
    ]


def start_net(template: list[str], target: int, fifo: str, log: str) -> Started:
    """The helper for target's namespaces, its output appended to log. fifo: the named pipe
    to report readiness on ("" for an inherited pipe). OSError: it could not be started
    (nothing is left open then)."""
    from dockerup.linux import libc as linux

    ready_r, ready_w, ready = ready_channel(fifo)
    exit_r, exit_w = os.pipe()
    inherited = (exit_r,) if ready_w is None else (ready_w, exit_r)
    starter = os.getpid()
    try:
        with open(log, "ab") as out:
            # Its own session: the terminal's Ctrl-C is for docker-up, which stops it in order.
            p = subprocess.Popen(
                fill(template, target, ready, exit_r),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                pass_fds=inherited,
                start_new_session=True,
                preexec_fn=lambda: linux.die_with_parent(signal.SIGTERM, starter),
            )
    except OSError:
        os.close(ready_r)
        os.close(exit_w)
        raise
    finally:
        for fd in inherited:
            os.close(fd)
    return Started(p, ready_r, exit_w)


def open_ready_fifo(path: str) -> int:
    """A new named pipe at path (in docker-up's own 0700 runtime dir; an old one of ours is
    replaced), opened for reading without waiting for a writer: a helper's ready channel."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def ready_channel(fifo: str = "") -> tuple[int, int | None, str]:
    """A network helper's ready channel: (the end we read, the end the helper inherits or
    None, what its argv names: that fd's number or the named pipe's path). fifo: the named
    pipe for a helper that keeps no inherited fd (net/pasta.py); "" for an inherited pipe."""
    if fifo:
        return open_ready_fifo(fifo), None, fifo
    r, w = os.pipe()
    return r, w, str(w)


def wait_ready(ready_fd: int, pidfd: int, timeout: float) -> str:
    """A helper that reports readiness by writing to ready_fd (slirp4netns, pasta): "ready",
    "died" (it exited, or closed the pipe without a word) or "timeout"."""
    from dockerup.linux.fdwait import readable

    deadline = time.monotonic() + timeout
    while True:
        ready = readable([ready_fd, pidfd], max(0.0, deadline - time.monotonic()))
        if ready_fd in ready:
            try:
                data = os.read(ready_fd, 64)
            except BlockingIOError:  # a named pipe's writer came and went: look again
                continue
            # End of file means the helper is gone: it wrote nothing.
            return "ready" if data else "died"
        if pidfd in ready:
            return "died"
        if time.monotonic() >= deadline:
            return "timeout"
