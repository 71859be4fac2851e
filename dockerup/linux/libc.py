"""Linux's ABI, in one place: the libc handle, the flag and ioctl numbers, and the few
calls docker-up makes through ctypes (Python 3.11 has no os.setns, os.unshare, prctl or
mount). Stdlib only, and cheap to import (ctypes, about 3 ms): the namespace child loads it
on the start path, and the keeper's fork calls it between fork and exec.

One handle for the whole process, opened at import: a fork child must not dlopen, and
ctypes keeps each function it has looked up on the handle. Its calls keep errno
(use_errno), which check() turns into a LinuxError that names the call and the errno.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct

libc = ctypes.CDLL(None, use_errno=True)

# clone(2) flags, as unshare(2) and setns(2) take them.
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# /proc/PID/ns names and their flags, in the order they are joined: the user namespace
# first, whose capabilities the other two need (user_namespaces(7)).
NAMESPACES = {"user": CLONE_NEWUSER, "mnt": CLONE_NEWNS, "net": CLONE_NEWNET}

# The syscalls docker-up makes by number (libc has no wrapper for them), per machine: the
# numbers differ between ABIs. A machine not listed has no entry, and what needs one (the
# acceleration agent) is off there with its reason (machine_problem), never a KeyError.
MACHINE = os.uname().machine
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "connect": 42,
        "seccomp": 317,
        "capset": 126,
        "pivot_root": 155,
        "open_tree": 428,
        "move_mount": 429,
    },
    "aarch64": {
        "connect": 203,
        "seccomp": 277,
        "capset": 91,
        "pivot_root": 41,
        "open_tree": 428,
        "move_mount": 429,
    },
}
# seccomp_data.arch of each machine's native ABI (AUDIT_ARCH_*).
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}


def syscall_number(name: str) -> int:
    """This machine's number for a syscall; callers first ask machine_problem()."""
    return SYSCALLS[MACHINE][name]


def machine_problem(machine: str = MACHINE) -> str | None:
    """Why docker-up's syscalls by number cannot be made on this machine (None: they can)."""
    if machine in SYSCALLS:
        return None
    return f"docker-up knows no syscall numbers for this machine ({machine})"


# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

# mount(2) flags.
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
MS_SHARED = 1 << 20
MS_RDONLY, MS_NOEXEC, MS_MOVE, MS_REMOUNT = 1, 8, 8192, 32
# open_tree(2) and move_mount(2) (Linux 5.2): a copy of a mount, carried as an fd between
# mount namespaces.
AT_FDCWD = -100
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 4
MNT_DETACH = 2

# netdevice(7) ioctls, and the interface flag docker-up reads and sets.
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCGIFADDR, SIOCGIFNETMASK, SIOCGIFMTU = 0x8915, 0x891B, 0x8921
IFF_UP = 0x1
# struct ifreq as these ioctls use it: the name, then a union whose first member is read
# (flags: a short; an int MTU or a sockaddr_in from the same offset, 16).
IFREQ = struct.Struct("16sH14x")


class LinuxError(OSError):
    """A libc call failed. Its text names the call and the errno, as the user sees it:
    "mount overlay overlay on /x: Operation not permitted (errno EPERM)"."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(err, os.strerror(err))
        self.what = what
        self.name = errno.errorcode.get(err, str(err))

    def __str__(self) -> str:
        return f"{self.what}: {self.strerror} (errno {self.name})"


def check(ret: int, what: str) -> int:
    """A libc call's result, unless it failed (-1): then a LinuxError with its errno."""
    if ret < 0:
        raise LinuxError(ctypes.get_errno(), what)
    return ret


def setns(fd: int, nstype: int, what: str = "setns") -> None:
    """Join the namespace fd is open on (nstype 0: whichever kind it is)."""
    check(libc.setns(fd, nstype), what)


def unshare(flags: int, what: str = "unshare") -> None:
    check(libc.unshare(flags), what)


def prctl(option: int, arg: int) -> None:
    """One of the PR_SET_* options above (prctl(2) wants the unused arguments 0)."""
    check(libc.prctl(option, arg, 0, 0, 0), f"prctl({option}, {arg})")


NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4), ioctl_ns(2)


def userns_owner(pid: int) -> int:
    """The uid (as the caller sees it) that made the user namespace pid lives in."""
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(struct.unpack("I", fcntl.ioctl(fd, NS_GET_OWNER_UID, bytes(4)))[0])
    finally:
        os.close(fd)


def become_root() -> None:
    """uid and gid 0 in the user namespace this process made (where it holds every
    capability), so that its capabilities survive exec (capabilities(7)). Changing ids
    makes a process non-dumpable: its /proc/PID/ns could then be opened only with
    CAP_SYS_PTRACE over the namespace its memory was made in (the workspace's, until the
    next exec), which the user's network helper lacks. Dumpable again: the user owns this
    namespace (every capability in it) and may reach it anyway."""
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    prctl(PR_SET_DUMPABLE, 1)


def die_with_parent(sig: int, parent: int) -> None:
    """sig for this process when its parent thread ends (PR_SET_PDEATHSIG), kill -9
    included; an exec keeps it. parent: the PID of the process that started this one, read
    by that process before it forked (os.getpid() there; never getppid() here, which may
    already name init). The kernel sends the signal only for a parent that ends after the
    prctl: one that was gone before it (a busy machine may run a new child late) never
    sends it, and this process would live on, adopted by init. So once the prctl holds,
    a parent that is no longer `parent` ends this process at once, before it runs or execs
    anything else (exit status 1). Safe between fork and exec: two system calls."""
    prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        os._exit(1)


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(
        libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {fstype or 'bind'} {src} on {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    check(libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): glibc has no wrapper for it."""
    call = syscall_number("pivot_root")
    check(libc.syscall(call, new_root.encode(), put_old.encode()), f"pivot_root {new_root}")


def clone_mount(path: str) -> int:
    """A detached copy of the mount at path (open_tree OPEN_TREE_CLONE), as an fd that
    move_mount() attaches in another mount namespace."""
    flags = ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC)
    return check(
        libc.syscall(syscall_number("open_tree"), AT_FDCWD, path.encode(), flags),
        f"open_tree {path}",
    )


def attach_mount(fd: int, target: str) -> None:
    """move_mount(2) of a detached mount (clone_mount) onto target."""
    call = syscall_number("move_mount")
    flags = ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)
    check(
        libc.syscall(call, fd, b"", AT_FDCWD, target.encode(), flags),
        f"move_mount onto {target}",
    )


def ifreq(sock: socket.socket, request: int, name: str, flags: int = 0) -> bytes:
    """One netdevice(7) ioctl on interface name; the struct ifreq the kernel filled in."""
    return fcntl.ioctl(sock, request, IFREQ.pack(name.encode(), flags))


def if_flags(sock: socket.socket, name: str) -> int:
    flags: int = IFREQ.unpack(ifreq(sock, SIOCGIFFLAGS, name))[1]
    return flags


def set_if_flags(sock: socket.socket, name: str, flags: int) -> None:
    """Needs CAP_NET_ADMIN over the socket's network namespace, even to change nothing."""
    ifreq(sock, SIOCSIFFLAGS, name, flags)
