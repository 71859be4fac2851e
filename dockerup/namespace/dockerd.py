"""Becoming dockerd inside docker-up's namespaces, and containerd beside it (stdlib only).

The one way dockerd starts: the namespace child execs it at first (child.py), the keeper's
fork after each restart (keeper/resident.py); both are already in the namespaces.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

from dockerup.files import atomic_write


def hand_over_socket(listen_fd: int | None, env: dict[str, str]) -> int:
    """Socket activation as systemd does it, for the process about to exec dockerd: the
    listening socket at fd 3, LISTEN_PID naming this process (exec keeps the PID). Returns
    the first fd that is not to be passed on."""
    if listen_fd is None:
        return 3
    os.dup2(listen_fd, 3, inheritable=True)
    env.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    return 4


def exec_dockerd(argv: list[str], env: dict[str, str], listen_fd: int | None) -> NoReturn:
    """Become dockerd: the one way it starts, in the namespace child at first (child.py)
    and in the keeper's fork after each restart (keeper/resident.py), both already in the
    namespaces. exec keeps the PID (socket activation names it); nothing of docker-up's
    (the lock, the child's pipes, the helper's exit pipe, the namespaces' fds) may
    outlive this process inside dockerd."""
    env = dict(env)
    keep = hand_over_socket(listen_fd, env)
    os.closerange(keep, 65536)
    os.execve(argv[0], argv, env)


def start_containerd(argv: list[str], env: dict[str, str], pidfile: str) -> int:
    """containerd, as a child of this process, which is about to become dockerd: it gets
    SIGTERM when dockerd ends (as dockerd's own containerd would), inherits no fd but
    stdin, stdout and stderr, and its pid goes where the keeper looks before a restart."""
    from dockerup.linux import libc as linux

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            linux.die_with_parent(signal.SIGTERM, parent)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    atomic_write(pidfile, str(pid), 0o644)
    return pid
