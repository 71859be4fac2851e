"""The kernel's side of the acceleration agent (accel.py), stdlib only: seccomp user
notification (<linux/seccomp.h>: receive, answer, check, install an fd), and the calls the
agent makes on a caller's behalf: copy its memory once, fetch the file its fd names, read
a socket's state, connect raw sockaddr bytes."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import select
import socket
import struct

from dockerup.linux.libc import libc

# <linux/seccomp.h>, x86-64 and arm64 alike.
NOTIF = struct.Struct("=QII iIQ6Q")  # id, pid, flags, data{nr, arch, ip, args[6]}
RESP = struct.Struct("=QqiI")  # id, val, error, flags
ADDFD = struct.Struct("=QIIII")  # id, flags, srcfd, newfd, newfd_flags


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("!") << 8) | nr


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (ord("!") << 8) | nr


IOCTL_RECV = _iowr(0, NOTIF.size)
IOCTL_SEND = _iowr(1, RESP.size)
IOCTL_ID_VALID = _iow(2, 8)
IOCTL_ADDFD = _iow(3, ADDFD.size)
ADDFD_SETFD = 1  # SECCOMP_ADDFD_FLAG_SETFD

SYS_PIDFD_GETFD = 438
PIDFD_THREAD = os.O_EXCL  # Linux 6.9+: a pidfd for any thread, not only a leader
SO_NETNS_COOKIE = 71  # Linux 5.14+: which network namespace a socket lives in
SO_PROTOCOL = 38


class Gone(Exception):
    """The notification is no longer valid: the call was abandoned or the process died."""


# -- seccomp user notification -------------------------------------------------------------


def receive(nfd: int) -> tuple[int, int, int, list[int]]:
    """The next notification: (id, thread, syscall number, its six arguments)."""
    buf = bytearray(NOTIF.size)
    fcntl.ioctl(nfd, IOCTL_RECV, buf)
    nid, tid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
    return nid, tid, nr, args


def respond(nfd: int, nid: int, err: int) -> None:
    """Answer a call: 0, or -1 with err as its errno."""
    resp = RESP.pack(nid, 0 if err == 0 else -1, -err, 0)
    with contextlib.suppress(OSError):  # ENOENT: the caller is gone meanwhile
        fcntl.ioctl(nfd, IOCTL_SEND, resp)


def id_valid(nfd: int, nid: int) -> bool:
    """Is the caller still waiting in that call (so its TID was not reused)?"""
    try:
        fcntl.ioctl(nfd, IOCTL_ID_VALID, struct.pack("=Q", nid))
    except OSError:
        return False
    return True


def add_fd(nfd: int, nid: int, mine: int, theirs: int, flags: int) -> None:
    """Put our fd in place of the caller's fd number `theirs` (dup2, in its table)."""
    fcntl.ioctl(nfd, IOCTL_ADDFD, ADDFD.pack(nid, ADDFD_SETFD, mine, theirs, flags))


# -- on the caller's behalf ----------------------------------------------------------------


class _IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


def read_memory(tid: int, ptr: int, length: int) -> bytes:
    """The caller's bytes at ptr, copied once: process_vm_readv, one call (the same
    ptrace access check as /proc/TID/mem, without opening it each time)."""
    if length == 0:
        return b""
    buf = ctypes.create_string_buffer(length)
    local = _IOVec(ctypes.cast(buf, ctypes.c_void_p), length)
    remote = _IOVec(ptr, length)
    n = libc.process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n != length:
        e = ctypes.get_errno() if n < 0 else errno.EFAULT
        if e in (errno.ESRCH, errno.EPERM):
            raise OSError(e, os.strerror(e))
        raise OSError(errno.EFAULT, "bad address")
    return buf.raw[:length]


def pidfd_getfd(pidfd: int, fd: int) -> int:
    r: int = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def fetch_fd(tid: int, fd: int) -> int:
    """The file a thread's fd names, as an fd of ours. A thread of a multithreaded process
    (Go, Java) is not a pidfd leader: PIDFD_THREAD where the kernel has it, else its
    thread group (whose fd table threads share)."""
    try:
        pidfd = os.pidfd_open(tid, PIDFD_THREAD)
    except OSError:
        pidfd = os.pidfd_open(tgid(tid))
    try:
        return pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)


def tgid(tid: int) -> int:
    with open(f"/proc/{tid}/status") as f:
        for line in f:
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    raise ProcessLookupError(tid)


def fd_cloexec(tid: int, fd: int) -> bool:
    """Whether the thread's fd is close-on-exec (a property of the fd, not of the file)."""
    h = os.open(f"/proc/{tid}/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(h, 4096).decode()
    finally:
        os.close(h)
    m = re.search(r"^flags:\s*([0-7]+)", text, re.M)
    return bool(m and int(m.group(1), 8) & os.O_CLOEXEC)


# -- sockets -------------------------------------------------------------------------------


def raw_connect(fd: int, raw: bytes) -> int:
    """connect() to the bytes as they are; 0 or the errno."""
    return 0 if libc.connect(fd, raw, len(raw)) == 0 else ctypes.get_errno()


_INT = ctypes.c_int


def so_error(fd: int) -> int:
    value, size = _INT(0), ctypes.c_uint32(4)
    libc.getsockopt(fd, socket.SOL_SOCKET, socket.SO_ERROR, ctypes.byref(value), ctypes.byref(size))
    return value.value


def describe(s: socket.socket) -> tuple[bool, bytes]:
    """(a fresh TCP/IPv4 socket: unbound, unconnected; its netns cookie)."""
    cookie = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    fresh = (
        s.family == socket.AF_INET
        and s.type == socket.SOCK_STREAM
        and s.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL) == socket.IPPROTO_TCP
        and s.getsockname()[1] == 0
    )
    return fresh, cookie


def netns_cookie() -> bytes | None:
    """This process's network namespace, as the kernel names it; None before Linux 5.14."""
    with socket.socket() as s:
        try:
            return s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError:
            return None


def ready(fd: int) -> bool:
    """Has a connect in progress finished? (On loopback it usually has, at once.)"""
    p = select.poll()
    p.register(fd, select.POLLOUT)
    return bool(p.poll(0))
