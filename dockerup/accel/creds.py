"""Become a container's thread, for the one call the acceleration agent cannot make for it.

A connect() to a path (AF_UNIX) is resolved against the caller's root, working directory
and mount namespace, and allowed by the caller's ids and capabilities. The agent (a thread
of the keeper, in the workspace) has none of those, and must never let the kernel re-run
the container's own call instead: the kernel would read the address and the fd number
again from the container, and a second thread could have aimed them at a workspace socket
in between (seccomp_unotify(2): CONTINUE is no basis for a security decision).

So the agent forks a child that takes the caller's user and mount namespace, root, working
directory, ids, groups and capabilities, and connects the very socket the agent fetched to
the very bytes it copied. The child is never in the container's PID namespace: nothing in
the container can see, signal or trace it. Stdlib only (runs in the keeper).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct

from dockerup.linux import libc as linux

CAP_VERSION_3 = 0x20080522


def parse_status(text: str) -> dict[str, list[int]]:
    """Uid, Gid (real, effective, saved, fs), Groups and the capability sets of a
    /proc/TID/status, as numbers in the reader's user namespace."""
    out: dict[str, list[int]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(v) for v in value.split()]
        elif key in ("CapInh", "CapPrm", "CapEff"):
            out[key] = [int(value.strip(), 16)]
    return out


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = struct.pack("=Ii", CAP_VERSION_3, 0)
    data = struct.pack(
        "=6I",
        effective & 0xFFFFFFFF,
        permitted & 0xFFFFFFFF,
        inheritable & 0xFFFFFFFF,
        effective >> 32,
        permitted >> 32,
        inheritable >> 32,
    )
    linux.check(linux.libc.syscall(linux.syscall_number("capset"), header, data), "capset")


class Caller:
    """What the child needs of the calling thread, opened by the agent while the thread's
    /proc entries are still the ones the notification named (it checks the id after)."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.fds: list[int] = []
        own_user = os.stat("/proc/self/ns/user").st_ino
        user = os.open(f"/proc/{tid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(user)
        # Root of the agent's own user namespace (privileged mode): nothing to join.
        self.user = user if os.fstat(user).st_ino != own_user else -1
        self.mnt = self._open(f"/proc/{tid}/ns/mnt", os.O_RDONLY)
        self.root = self._open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY)
        self.cwd = self._open(f"/proc/{tid}/cwd", os.O_PATH | os.O_DIRECTORY)

    def _open(self, path: str, flags: int) -> int:
        fd = os.open(path, flags | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def become(self) -> None:
        """In the forked child only: no way back."""
        if self.user >= 0:
            linux.setns(self.user, linux.CLONE_NEWUSER)
        # Read after joining: the kernel translates ids into the reader's namespace.
        with open(f"/proc/{self.tid}/status") as f:
            st = parse_status(f.read())
        linux.setns(self.mnt, linux.CLONE_NEWNS)
        os.fchdir(self.root)
        os.chroot(".")
        os.fchdir(self.cwd)
        linux.prctl(linux.PR_SET_KEEPCAPS, 1)
        os.setgroups(st.get("Groups", []))
        os.setresgid(*st["Gid"][:3])
        os.setresuid(*st["Uid"][:3])
        linux.libc.setfsgid(st["Gid"][3])
        linux.libc.setfsuid(st["Uid"][3])
        capset(st["CapEff"][0], st["CapPrm"][0], st["CapInh"][0])


def connect_as(caller: Caller, sock: int, raw: bytes) -> tuple[int, int]:
    """Fork a child that becomes the caller and connects sock to raw; returns (a pidfd of
    it, read end of a pipe) that yields connect()'s errno (0: connected) as 4 bytes, or
    nothing if the child failed to become the caller. A pidfd, not a PID: the keeper reaps
    every child it has (waitpid(-1)), and pid_max may be 32768, so by the time the agent
    ends its child that PID may be anyone's, a container's process included."""
    r, w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 1
        try:
            os.close(hold_w)
            os.read(hold_r, 1)  # until the parent holds its pidfd: not reaped before that
            # Only what the call needs survives: the keeper's other fds are the workspace's.
            wanted = {sock, w, hold_r, *caller.fds}
            for fd in os.listdir("/proc/self/fd"):
                if int(fd) not in wanted:
                    with contextlib.suppress(OSError):
                        os.close(int(fd))
            caller.become()
            res = linux.libc.connect(sock, raw, len(raw))
            err = 0 if res == 0 else ctypes.get_errno()
            os.write(w, struct.pack("=i", err))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.close(hold_r)
    try:
        pidfd = os.pidfd_open(pid)
    finally:
        os.close(hold_w)  # the child goes on
    return pidfd, r
