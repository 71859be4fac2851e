"""The keeper's last sweep: every process still in docker-up's own user namespace.

Every process there is one docker-up started (dockerd's tree, containers), so whatever
still runs there when dockerd is gone would outlive docker-up: it ends, through a pidfd
(a PID checked twice, never a reused one). Stdlib only, like the keeper."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from dockerup.linux import procid
from dockerup.linux.fdwait import readable


def end_namespace(
    user_fd: int, keep: set[int], timeout: float = 15.0
) -> tuple[list[str], list[str]]:
    """SIGKILL all in the user namespace of user_fd but `keep`, and wait until each has
    wholly exited (at most timeout seconds for all). Returns what was killed and what of it
    still had not exited ("comm (pid)"). Never the namespace the caller itself lives in."""
    ours = os.fstat(user_fd).st_ino
    if ours == os.stat("/proc/self/ns/user").st_ino:
        return [], []
    deadline = time.monotonic() + timeout
    killed: list[str] = []
    # Pass after pass: a process may fork between the listing and its SIGKILL, and its
    # child is only in the next listing. Once a pass finds nobody, nobody is left to fork.
    while found := _kill_all(ours, keep):
        killed += found.values()
        # A killed process may take seconds to exit (in uninterruptible sleep on a busy
        # disk, unmapping much memory); until then it is still the user's: wait for it.
        left = [name for fd, name in found.items() if not _ended(fd, deadline)]
        if left or time.monotonic() > deadline:
            return killed, left
    return killed, []


def _kill_all(userns: int, keep: set[int]) -> dict[int, str]:
    """SIGKILL every live process in the namespace but `keep`: their pidfds and names."""
    found = {}
    for name in os.listdir("/proc"):
        pidfd = _open_if_in(name, userns) if name.isdigit() and int(name) not in keep else None
        if pidfd is not None:
            found[pidfd] = _comm(name)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    return found


def _ended(pidfd: int, deadline: float) -> bool:
    try:
        return bool(readable([pidfd], max(0.0, deadline - time.monotonic())))
    finally:
        os.close(pidfd)


def _open_if_in(pid: str, userns: int) -> int | None:
    """A pidfd for the process if it lives in the namespace and has not exited (a zombie
    keeps its namespace link, but runs nothing and would be found pass after pass)."""
    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino != userns or _exited(pid):
            return None
        pidfd = os.pidfd_open(int(pid))
    except OSError:
        return None
    # Checked again through the pidfd's own process: not a reused PID.
    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino == userns:
            return pidfd
    except OSError:
        pass
    os.close(pidfd)
    return None


def _exited(pid: str) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return procid.state(f.read()) in procid.EXITED


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"{f.read().strip()} ({pid})"
    except OSError:
        return pid
