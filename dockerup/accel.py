"""The acceleration agent: containers' TCP connections to the workspace's loopback become real
sockets of the workspace, so their bytes never cross the network helper.

How: docker-up's runtime (dockerup/runtime.py) gives each container a seccomp filter that
notifies on connect(), with this agent's socket as the listener; runc hands the agent the
notification fd. For each connect() the agent reads the address the container asks for:
- the workspace's loopback as the container sees it (10.0.2.2, only when host loopback is
  allowed): the agent connects a socket of its own, in the workspace's network namespace,
  to 127.0.0.1 on that port, puts it in place of the container's socket (the same fd
  number, SECCOMP_IOCTL_NOTIF_ADDFD) and answers the call with connect()'s result;
- an address outside every network of docker-up's namespace (one only its default route
  leads to, i.e. through the helper): the agent puts a fresh workspace socket in place of
  the container's and lets the call continue on it, so the kernel connects from the
  workspace, with connect()'s usual semantics (EINPROGRESS for a non-blocking socket);
- anything else (the container's own loopback, docker networks, the helper's 10.0.2.0/24,
  UDP, IPv6, bound sockets) continues unchanged on the container's socket: the normal path.

Rules it keeps (the kernel's user-notification caveats):
- The address is read from the container's memory once, into a copy that is validated and
  acted on; the notification id is checked valid after every read of the process (its pid
  could have been reused, or the call abandoned).
- A socket is opened only for the one address policy allows; anything unexpected makes the
  call continue on the normal path, never an error.

It runs as a thread of the keeper (stdlib only): the keeper is the process that outlives
everything else docker-up starts, and it holds the listening socket from before dockerd
starts, so no container is ever created without its agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import threading
from collections.abc import Callable

from dockerup.net import routes

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
FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE
ADDFD_SETFD = 1  # SECCOMP_ADDFD_FLAG_SETFD

SYS_CONNECT = {"x86_64": 42, "aarch64": 203}[os.uname().machine]
SYS_PIDFD_GETFD = 438

GATEWAY = socket.inet_aton("10.0.2.2")  # the workspace's loopback, as containers see it
LOOPBACK = "127.0.0.1"
NEVER = ((0x7F000000, 0xFF000000), (0, 0xFF000000))  # 127/8, 0/8: the container's own

_libc = ctypes.CDLL(None, use_errno=True)


class Gone(Exception):
    """The notification is no longer valid: the call was abandoned or the process died."""


RUNC_MIN = (1, 1)  # seccomp listenerPath and SCMP_ACT_NOTIFY
LIBSECCOMP_MIN = (2, 5)


def _version(text: str, label: str) -> tuple[int, int] | None:
    import re

    m = re.search(re.escape(label) + r"\D*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def support_problems(seccomp_actions: str, runc_version: str) -> list[str]:
    """Why --net-accel cannot work on this machine (pure; empty: it can). runc_version is
    the whole output of `runc --version`."""
    problems = []
    if "user_notif" not in seccomp_actions.split():
        problems.append("the kernel has no seccomp user notification (Linux 5.0+)")
    rv = _version(runc_version, "runc version")
    if rv is None or rv < RUNC_MIN:
        problems.append(f"runc {rv or '?'} cannot hand over a seccomp listener (1.1+)")
    lv = _version(runc_version, "libseccomp:")
    if lv is None or lv < LIBSECCOMP_MIN:
        problems.append(f"runc's libseccomp {lv or '?'} lacks user notification (2.5+)")
    return problems


def pidfd_getfd(pidfd: int, fd: int) -> int:
    r: int = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def parse_inet(raw: bytes) -> tuple[bytes, int] | None:
    """(IPv4 address, port) of a sockaddr_in copy, or None for anything else."""
    if len(raw) < 8:
        return None
    family, port = struct.unpack_from("=H", raw)[0], struct.unpack_from("!H", raw, 2)[0]
    if family != socket.AF_INET:
        return None
    return raw[4:8], port


def connected_networks(route_table: str) -> list[tuple[int, int]]:
    """(network, mask) of every route but the default one, from /proc/PID/net/route of
    docker-up's namespace: docker's bridges and the helper's 10.0.2.0/24. Host order."""
    return [(dest, mask) for dest, mask in routes(route_table) if mask != 0]


def outside(addr: bytes, nets: list[tuple[int, int]]) -> bool:
    """Does an IPv4 address lie outside the namespace's own networks (reached only through
    the default route, the helper), and outside the container's own loopback? Without a
    route table (it always has the helper's 10.0.2.0/24) nothing counts as outside."""
    if not nets:
        return False
    ip = struct.unpack("!I", addr)[0]
    return not any(ip & mask == net & mask for net, mask in (*NEVER, *nets))


def fd_flags(pid: int, fd: int) -> int:
    """The open-file flags of a process's fd (O_NONBLOCK, O_CLOEXEC), from fdinfo."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    return 0


class Agent:
    def __init__(self, listener: socket.socket, allow_host_loopback: bool,
                 log: Callable[[str], None], routes: Callable[[], str]) -> None:  # fmt: skip
        self.listener = listener
        self.allow = allow_host_loopback
        self.routes = routes  # docker-up's namespace's route table, read afresh each time
        self.log = log
        self.poll = select.poll()
        self.notify_fds: set[int] = set()
        self.bypassed = 0

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.poll.register(self.listener.fileno(), select.POLLIN)
        while True:
            for fd, events in self.poll.poll():
                if fd == self.listener.fileno():
                    self.accept()
                elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    self.drop(fd)  # the container's processes are all gone
                elif events & select.POLLIN:
                    self.handle(fd)

    def accept(self) -> None:
        """runc sends the notification fd, with the container's state as the message."""
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)  # runc sends at once; a stuck peer must not stall every call
            try:
                _, fds, _, _ = socket.recv_fds(conn, 1 << 16, 8)
            except OSError:
                return
        for fd in fds:
            self.notify_fds.add(fd)
            self.poll.register(fd, select.POLLIN)

    def drop(self, fd: int) -> None:
        self.poll.unregister(fd)
        self.notify_fds.discard(fd)
        os.close(fd)

    def handle(self, nfd: int) -> None:
        buf = bytearray(NOTIF.size)
        try:
            fcntl.ioctl(nfd, IOCTL_RECV, buf)
        except OSError as e:
            if e.errno == errno.ENOENT:  # the call was abandoned before we read it
                return
            self.drop(nfd)
            return
        nid, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
        try:
            answer = self.decide(nfd, nid, pid, nr, args)
        except Gone:
            return
        except Exception as e:
            self.log(f"accel: connect of pid {pid} left on the normal path: {e}")
            answer = None
        self.respond(nfd, nid, answer)

    def respond(self, nfd: int, nid: int, answer: int | None) -> None:
        """answer None: continue the call unchanged; else its result (0 or -errno)."""
        if answer is None:
            resp = RESP.pack(nid, 0, 0, FLAG_CONTINUE)
        else:
            resp = RESP.pack(nid, 0 if answer == 0 else -1, answer, 0)
        with contextlib.suppress(OSError):  # ENOENT: the caller is gone meanwhile
            fcntl.ioctl(nfd, IOCTL_SEND, resp)

    # -- one connect() -------------------------------------------------------------------

    def valid(self, nfd: int, nid: int) -> None:
        try:
            fcntl.ioctl(nfd, IOCTL_ID_VALID, struct.pack("=Q", nid))
        except OSError as e:
            raise Gone from e

    def decide(self, nfd: int, nid: int, pid: int, nr: int, args: list[int]) -> int | None:
        if nr != SYS_CONNECT:
            return None
        fd, addr_ptr, addr_len = args[0], args[1], args[2]
        if not 8 <= addr_len <= 128:
            return None
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            raw = os.pread(mem.fileno(), addr_len, addr_ptr)  # read once, act on the copy
        self.valid(nfd, nid)  # the memory we read was that caller's
        target = parse_inet(raw)
        if target is None:
            return None
        addr, port = target
        if addr == GATEWAY:
            return self.bypass(nfd, nid, pid, fd, port) if self.allow else None
        if outside(addr, connected_networks(self.routes())):
            self.bypass(nfd, nid, pid, fd, None)
        return None  # the call continues: on the workspace socket if one was put in place

    def bypass(self, nfd: int, nid: int, pid: int, fd: int, port: int | None) -> int | None:
        """Put a workspace socket in place of the container's fd. port: connect it to the
        workspace's loopback and return connect()'s result; None: leave it unconnected for
        the call to continue on."""
        pidfd = os.pidfd_open(pid)
        try:
            theirs = pidfd_getfd(pidfd, fd)
        finally:
            os.close(pidfd)
        try:
            flags = fd_flags(pid, fd)
            self.valid(nfd, nid)  # the fd and flags we read belong to that caller
            s = socket.socket(fileno=theirs)
            try:
                # Only a fresh TCP/IPv4 socket is ours to replace; anything bound or with
                # another protocol stays on the normal path.
                if s.type != socket.SOCK_STREAM or s.family != socket.AF_INET:
                    return None
                if s.getsockname()[1] != 0:
                    return None
                mine = self.connect_local(s, port) if port else fresh_like(s)
            finally:
                s.detach()
        finally:
            os.close(theirs)
        if isinstance(mine, int):
            return mine  # connect()'s error, as the container would have seen it
        with mine:
            if flags & os.O_NONBLOCK:
                mine.setblocking(False)
            cloexec = flags & os.O_CLOEXEC
            req = ADDFD.pack(nid, ADDFD_SETFD, mine.fileno(), fd, cloexec)
            try:
                fcntl.ioctl(nfd, IOCTL_ADDFD, req)
            except OSError as e:
                raise Gone from e
        self.bypassed += 1
        return 0

    def connect_local(self, theirs: socket.socket, port: int) -> socket.socket | int:
        """A workspace socket with the container socket's options, connected to the
        workspace's loopback; or the errno of the failed connect()."""
        mine = fresh_like(theirs)
        mine.settimeout(10)
        try:
            mine.connect((LOOPBACK, port))
        except OSError as e:
            mine.close()
            return -(e.errno or errno.ECONNREFUSED)
        mine.settimeout(None)
        return mine


def fresh_like(theirs: socket.socket) -> socket.socket:
    """A TCP/IPv4 socket of the workspace with the options that matter copied over."""
    mine = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for level, opt in ((socket.IPPROTO_TCP, socket.TCP_NODELAY),
                       (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                       (socket.SOL_SOCKET, socket.SO_REUSEADDR)):  # fmt: skip
        with contextlib.suppress(OSError):
            mine.setsockopt(level, opt, theirs.getsockopt(level, opt))
    return mine


def start(listen_fd: int, allow_host_loopback: bool, log: Callable[[str], None],
          routes: Callable[[], str]) -> None:  # fmt: skip
    """Run the agent in a daemon thread of the keeper; if its loop ever fails, it starts
    again on the same sockets (pending calls wait in the kernel meanwhile)."""
    listener = socket.socket(fileno=listen_fd)
    agent = Agent(listener, allow_host_loopback, log, routes)

    def loop() -> None:
        while True:
            try:
                agent.run()
            except Exception as e:
                log(f"accel: agent loop failed ({e}); restarting it")
                agent.poll = select.poll()
                for fd in agent.notify_fds:
                    agent.poll.register(fd, select.POLLIN)

    threading.Thread(target=loop, name="accel", daemon=True).start()
