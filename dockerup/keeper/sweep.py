"""The keeper's last sweep: every process still in docker-up's own user namespace.

Every process there is one docker-up started (dockerd's tree, containers), so whatever
still runs there when dockerd is gone would outlive docker-up: it ends, through a pidfd
(a PID checked twice, never a reused one). Stdlib only, like the keeper."""

from __future__ import annotations

import contextlib
import os
import signal

from dockerup.linux.fdwait import readable


def end_namespace(user_fd: int, keep: set[int]) -> list[str]:
    """SIGKILL all in the user namespace of user_fd but `keep`; wait for each (at most 5 s).
    Returns what ended ("comm (pid)"). Never the namespace the caller itself lives in."""
    ours = os.fstat(user_fd).st_ino
    if ours == os.stat("/proc/self/ns/user").st_ino:
        return []
    pidfds, names = [], []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in keep:
            continue
        pidfd = _open_if_in(name, ours)
        if pidfd is None:
            continue
        names.append(_comm(name))
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        pidfds.append(pidfd)
    for pidfd in pidfds:
        readable([pidfd], 5.0)
        os.close(pidfd)
    return names


def _open_if_in(pid: str, userns: int) -> int | None:
    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino != userns:
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


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"{f.read().strip()} ({pid})"
    except OSError:
        return pid
