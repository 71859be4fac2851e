"""dockerd's own connections through the acceleration agent (stdlib only).

dockerd's registry traffic (pulls, pushes), `docker build`'s downloads and its other TCP
connections start in docker-up's network namespace, so they cross the network helper, whose
user-space TCP stack is slow to distant hosts (libslirp has no window scaling). The agent
that swaps containers' connections for workspace sockets (accel.py) can do the same for
dockerd: just before dockerd is exec'd, its process installs a seccomp filter that notifies
on IPv4 connect() and hands the notification fd to the agent, as runc does for a container.
The agent decides exactly as for containers: destinations outside docker-up's networks get
a workspace socket; 10.0.2.2 does only with host loopback allowed; everything else (the
namespace's loopback, containers, the helper's own addresses) connects as before.

Only IPv4 is notified: the filter tests the address length (16, a sockaddr_in) because a
filter cannot read the address itself. A unix socket path that happens to make 16 bytes is
notified too and the agent connects it as the caller (accel/creds.py): slower, same result.
The filter is inherited by what dockerd starts (its port proxies), not by containerd and
containers, which docker-up starts before it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct

from dockerup.linux import libc as linux
from dockerup.linux.libc import libc

SET_MODE_FILTER, FLAG_NEW_LISTENER = 1, 8
RET_USER_NOTIF, RET_ALLOW = 0x7FC00000, 0x7FFF0000
SOCKADDR_IN = 16

# BPF: struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}; seccomp_data: nr at 0, arch at
# 4, args[i] at 16 + 8 i (the low half first on these little-endian machines).
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
INSN = struct.Struct("=HBBI")


def connect_filter() -> bytes:
    """IPv4 connect() of this machine's native ABI: notify; everything else: allow."""
    program = [
        (LD_W_ABS, 0, 0, 4),
        # Another ABI (x32 or 32-bit): allow (index 7).
        (JEQ_K, 0, 5, linux.AUDIT_ARCH[linux.MACHINE]),
        (LD_W_ABS, 0, 0, 0),
        (JEQ_K, 0, 3, linux.syscall_number("connect")),
        (LD_W_ABS, 0, 0, 16 + 8 * 2),  # connect(fd, addr, addrlen): addrlen
        (JEQ_K, 0, 1, SOCKADDR_IN),
        (RET_K, 0, 0, RET_USER_NOTIF),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    return b"".join(INSN.pack(*insn) for insn in program)


def install_filter() -> int:
    """The filter, on this thread and whatever it execs and forks; the notification fd.
    Needs CAP_SYS_ADMIN in this user namespace (dockerd's root has it) or no_new_privs."""
    code = ctypes.create_string_buffer(connect_filter())
    fprog = ctypes.create_string_buffer(
        struct.pack("=HxxxxxxQ", len(code.raw) // INSN.size, ctypes.addressof(code))
    )
    fd: int = libc.syscall(
        ctypes.c_long(linux.syscall_number("seccomp")),
        ctypes.c_long(SET_MODE_FILTER),
        ctypes.c_long(FLAG_NEW_LISTENER),
        fprog,
    )
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"seccomp: {os.strerror(e)}")
    return fd


def watch_connects(agent_socket: str) -> None:
    """Hand this process's IPv4 connects to the agent listening on agent_socket. The agent
    may not be running yet (the keeper starts it): the fd waits in the socket's backlog, and
    a connect() waits for the agent, never for nothing."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(agent_socket)  # before the filter: this one is not watched
        nfd = install_filter()
        try:
            socket.send_fds(conn, [b"dockerd"], [nfd])
        finally:
            os.close(nfd)


LONG_SOCKADDR_IN = 32  # the kernel reads 16 bytes of a longer sockaddr_in


def connect_unwatched(sock: socket.socket, target: tuple[str, int], timeout: float) -> None:
    """connect() an IPv4 socket with a 32-byte sockaddr_in, which the filter above does not
    select: dockerd's port proxies (they inherit the filter) connect to containers for every
    client, never anywhere the agent would send to the workspace, and a trip through the
    agent cost published ports a third of their connection rate. Then blocking again, like
    a socket after a plain connect(). Other families: a plain connect()."""
    if sock.family != socket.AF_INET:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.settimeout(None)
        return
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", target[1])
    raw += socket.inet_aton(target[0]) + bytes(LONG_SOCKADDR_IN - 8)
    sock.setblocking(False)
    if libc.connect(sock.fileno(), raw, len(raw)) != 0:
        err = ctypes.get_errno()
        if err != errno.EINPROGRESS:
            raise OSError(err, os.strerror(err))
        p = select.poll()
        p.register(sock.fileno(), select.POLLOUT)
        if not p.poll(int(timeout * 1000)):
            raise TimeoutError(errno.ETIMEDOUT, "connect timed out")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    sock.setblocking(True)
