"""The acceleration agent: containers' TCP connections to the workspace's loopback (and to
addresses only the helper's default route leads to) become real sockets of the workspace,
so their bytes never cross the network helper.

How: docker-up's runtime (dockerup/programs/runtime.py) gives each container a seccomp filter that
notifies on connect(), with this agent's socket as the listener; runc hands the agent the
notification fd. The agent answers every connect() itself; it never lets the kernel re-run
the container's call (SECCOMP_USER_NOTIF_FLAG_CONTINUE), because the kernel would then read
the address and the fd number again from the container, and another thread of the
container could have changed either in between (seccomp_unotify(2)).

For each connect() the agent copies the address once, fetches the very file the fd names
(pidfd_getfd), and decides with one pure function (decide()):
- swap: a fresh TCP/IPv4 socket aimed at the workspace's loopback as containers see it
  (10.0.2.2, only with host loopback allowed) or at an address outside every network of
  docker-up's namespace. The agent connects a socket of its own, in the workspace, to the
  address it checked, and only once that connection is established puts it in place of
  the container's fd (SECCOMP_IOCTL_NOTIF_ADDFD) and answers 0;
- perform: anything else of the IP families: the agent connects the container's own
  socket (it routes in the container's namespace, whoever calls) to the copied bytes;
- delegate: other families (AF_UNIX paths depend on the caller's root and credentials):
  a forked child that becomes the caller does it (dockerup/programs/accel_creds.py);
- refuse: an errno, e.g. any connect() on a socket that is already the workspace's.

Why a swapped socket gives a container nothing more than its one connection: it is bound
to a port of its own before it connects (the kernel keeps that port, so no later bind()
works), it is installed only when established (so listen() and connect() answer EINVAL and
EISCONN for good), and the one call that would reset it, connect(AF_UNSPEC), is refused
here; io_uring, which could make that call without seccomp, is off in these containers
(runtime.py). Nothing blocks the agent: connections in progress, blocking callers and
delegated calls wait in one poll loop, within per-container and total bounds, and its log
lines are rate-limited.

It runs as a thread of the keeper (stdlib only): the keeper is the process that outlives
everything else docker-up starts, and it holds the listening socket from before dockerd
starts, so no container is ever created without its agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import random
import re
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dockerup.programs.accel_creds import Caller, connect_as
from dockerup.programs.common import GATEWAY as GATEWAY_ADDR
from dockerup.programs.common import routes
from dockerup.programs.logfiles import QuietLog
from dockerup.programs.watch import LIBC, SYS_CONNECT

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

GATEWAY = socket.inet_aton(GATEWAY_ADDR)  # the workspace's loopback, as containers see it
LOOPBACK = "127.0.0.1"
# Never swapped, whatever the route table says: 127/8 and 0/8 are the container's own;
# 10.0.2.0/24 is the helper's (10.0.2.2 the workspace's loopback, 10.0.2.3 its DNS);
# link-local (169.254/16: cloud metadata services, among others), multicast and the
# reserved 240/4 with 255.255.255.255 mean something else from the workspace than from a
# container. All of them take the container's own path, through the helper, as without
# the agent.
NEVER = (
    (0x7F000000, 0xFF000000),
    (0, 0xFF000000),
    (0x0A000200, 0xFFFFFF00),
    (0xA9FE0000, 0xFFFF0000),
    (0xE0000000, 0xE0000000),
)

# Bounds: one container cannot hold more of the agent than this, nor all together.
PER_CONTAINER = 64
TOTAL = 512
DELEGATES = 16  # forked children at once
# A non-blocking caller waits this long for its workspace connection, then takes the
# normal path (EINPROGRESS through the helper) instead.
NONBLOCK_WAIT = 2.0

_libc = LIBC


class Gone(Exception):
    """The notification is no longer valid: the call was abandoned or the process died."""


RUNC_MIN = (1, 1)  # seccomp listenerPath and SCMP_ACT_NOTIFY
LIBSECCOMP_MIN = (2, 5)


def _version(text: str, label: str) -> tuple[int, int] | None:
    m = re.search(re.escape(label) + r"\D*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def support_problems(seccomp_actions: str, runc_version: str, netns_cookie: bool) -> list[str]:
    """Why --net-accel cannot work on this machine (pure; empty: it can). runc_version is
    the whole output of `runc --version`; netns_cookie: the kernel tells which network
    namespace a socket lives in (how the agent knows a socket it swapped in)."""
    problems = []
    if "user_notif" not in seccomp_actions.split():
        problems.append("the kernel has no seccomp user notification (Linux 5.0+)")
    if not netns_cookie:
        problems.append("the kernel has no SO_NETNS_COOKIE (Linux 5.14+)")
    rv = _version(runc_version, "runc version")
    if rv is None or rv < RUNC_MIN:
        problems.append(f"runc {rv or '?'} cannot hand over a seccomp listener (1.1+)")
    lv = _version(runc_version, "libseccomp:")
    if lv is None or lv < LIBSECCOMP_MIN:
        problems.append(f"runc's libseccomp {lv or '?'} lacks user notification (2.5+)")
    return problems


def netns_cookie() -> bytes | None:
    """This process's network namespace, as the kernel names it; None before Linux 5.14."""
    with socket.socket() as s:
        try:
            return s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError:
            return None


def has_netns_cookie() -> bool:
    return netns_cookie() is not None


# -- the policy (pure) -------------------------------------------------------------------


class Verdict(Enum):
    perform = "perform"  # the agent connects the container's own socket to the copy
    swap = "swap"  # a workspace socket, connected by the agent, replaces it
    delegate = "delegate"  # a child that becomes the caller connects it (AF_UNIX...)
    refuse = "refuse"  # answer an errno


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    target: tuple[str, int] | None = None  # swap: where the workspace socket connects
    source: str = ""  # swap: the local address it binds first
    errno: int = 0  # refuse

    @classmethod
    def refuse(cls, e: int) -> Decision:
        return cls(Verdict.refuse, errno=e)


PERFORM = Decision(Verdict.perform)
IP_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC)


def family_of(raw: bytes) -> int | None:
    return struct.unpack_from("=H", raw)[0] if len(raw) >= 2 else None


def parse_inet(raw: bytes) -> tuple[bytes, int] | None:
    """(IPv4 address, port) of a sockaddr_in copy, or None for anything else."""
    if len(raw) < 16 or family_of(raw) != socket.AF_INET:
        return None
    return raw[4:8], struct.unpack_from("!H", raw, 2)[0]


def decide(raw: bytes, *, allow_host_loopback: bool, swapped: bool, fresh_tcp: bool,
           nets: Callable[[], list[tuple[int, int]]],
           local: Callable[[bytes], bool] = lambda _: False) -> Decision:  # fmt: skip
    """What to do with one connect(): raw is the agent's copy of the address; swapped: the
    socket already lives in the workspace (the agent put it there); fresh_tcp: an unbound,
    unconnected TCP/IPv4 socket, the only kind that may be swapped; nets: the networks of
    docker-up's namespace (connected_networks), asked only when they matter; local: is this
    IPv4 address one of the workspace's own (workspace_address), asked only before a swap."""
    family = family_of(raw)
    if swapped:
        # It is established for good; connect(AF_UNSPEC) would reset it, and then it could
        # be aimed anywhere in the workspace. Anything else: what the kernel says anyway.
        return Decision.refuse(errno.EOPNOTSUPP if family == socket.AF_UNSPEC else errno.EISCONN)
    if family is not None and family not in IP_FAMILIES:
        return Decision(Verdict.delegate)
    target = parse_inet(raw)
    if target is None or not fresh_tcp:
        return PERFORM
    addr, port = target
    if addr == GATEWAY:
        if not allow_host_loopback:
            return PERFORM  # the helper refuses it, as without the agent
        return Decision(Verdict.swap, (LOOPBACK, port), LOOPBACK)
    if not outside(addr, nets()):
        return PERFORM
    if not allow_host_loopback and local(addr):
        # The workspace's own addresses (its eth0, a veth, a system dockerd's bridge) would
        # reach every service the workspace listens on: with host loopback closed, as closed
        # as its 127.0.0.1. Refused as a host without a listener would refuse it.
        return Decision.refuse(errno.ECONNREFUSED)
    return Decision(Verdict.swap, (socket.inet_ntoa(addr), port), "0.0.0.0")


def workspace_address(addr: bytes) -> bool:
    """Is this IPv4 address one of the workspace's own, now? The kernel binds only its own
    addresses (EADDRNOTAVAIL for any other), asked at the moment of the decision, so an
    address added a moment ago counts. Where non-local binds are allowed the answer would
    be yes for everything; the local routing table (fib_trie) answers instead. Any other
    error counts as "ours": the agent then refuses rather than reach the workspace."""
    if NONLOCAL_BIND:
        return addr in local_addresses(read_text("/proc/net/fib_trie"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((socket.inet_ntoa(addr), 0))
        except OSError as e:
            return e.errno != errno.EADDRNOTAVAIL
    return True


def local_addresses(fib_trie: str) -> set[bytes]:
    """The addresses of /proc/net/fib_trie's local table ("/32 host LOCAL" leaves)."""
    found, last = set(), ""
    for line in fib_trie.splitlines():
        word = line.strip()
        if word.startswith("|--"):
            last = word[3:].strip()
        elif word.startswith("+--"):
            last = ""
        elif word.startswith("/32 host LOCAL") and last:
            with contextlib.suppress(OSError):
                found.add(socket.inet_aton(last))
    return found


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


NONLOCAL_BIND = read_text("/proc/sys/net/ipv4/ip_nonlocal_bind").strip() not in ("", "0")


@functools.lru_cache(maxsize=8)
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


# -- small mechanics ---------------------------------------------------------------------


def pidfd_getfd(pidfd: int, fd: int) -> int:
    r: int = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
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


def raw_connect(fd: int, raw: bytes) -> int:
    """connect() to the bytes as they are; 0 or the errno."""
    return 0 if _libc.connect(fd, raw, len(raw)) == 0 else ctypes.get_errno()


_INT = ctypes.c_int


def so_error(fd: int) -> int:
    value, size = _INT(0), ctypes.c_uint32(4)
    _libc.getsockopt(
        fd, socket.SOL_SOCKET, socket.SO_ERROR, ctypes.byref(value), ctypes.byref(size)
    )
    return value.value


def describe(s: socket.socket) -> tuple[bool, bytes]:
    """(a fresh TCP/IPv4 socket: unbound, unconnected; its netns cookie)."""
    cookie = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    fresh = (s.family == socket.AF_INET and s.type == socket.SOCK_STREAM
             and s.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL) == socket.IPPROTO_TCP
             and s.getsockname()[1] == 0)  # fmt: skip
    return fresh, cookie


def ready(fd: int) -> bool:
    """Has a connect in progress finished? (On loopback it usually has, at once.)"""
    p = select.poll()
    p.register(fd, select.POLLOUT)
    return bool(p.poll(0))


def port_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


# -- calls in flight ---------------------------------------------------------------------


@dataclass
class Call:
    """One connect() the agent is answering."""

    nfd: int
    nid: int
    tid: int
    fd: int  # the container's fd number
    raw: bytes
    theirs: int  # our fd of the container's file
    nonblock: bool
    mine: socket.socket | None = None  # swap: the workspace socket, connecting
    target: tuple[str, int] | None = None  # swap: where it connects
    child: tuple[int, int] | None = None  # delegate: (pid, pipe read end)
    deadline: float | None = None  # swap, non-blocking caller: then the normal path

    def watch_fd(self) -> int:
        if self.child:
            return self.child[1]
        return self.mine.fileno() if self.mine else self.theirs


class Agent:
    def __init__(self, listener: socket.socket, allow_host_loopback: bool,
                 log: Callable[[str], None], routes: Callable[[], str]) -> None:  # fmt: skip
        self.listener = listener
        self.allow = allow_host_loopback
        self.routes = routes  # docker-up's namespace's route table, read afresh each time
        self.quiet = QuietLog(log, prefix="accel: ")
        self.poll = select.poll()
        self.notify_fds: set[int] = set()
        self.dockerd_fds: dict[int, bool] = {}  # dockerd's own (watch.py): bypassed yet?
        self.peers: dict[int, tuple[socket.socket, float]] = {}  # runc, sending its fd
        self.calls: dict[int, Call] = {}  # by the fd we watch
        self.per_nfd: dict[int, int] = {}
        self.delegates = 0
        self.bypassed = 0
        self.next_expire = 0.0
        self.ports = port_range()
        cookie = netns_cookie()
        if cookie is None:  # support_problems refuses --net-accel on such a kernel
            raise OSError(errno.ENOPROTOOPT, "no SO_NETNS_COOKIE")
        self.cookie = cookie
        raise_fd_limit()

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.poll.register(self.listener.fileno(), select.POLLIN)
        while True:
            for fd, events in self.poll.poll(1000):
                self.event(fd, events)
            if time.monotonic() >= self.next_expire:
                self.expire()
                self.next_expire = time.monotonic() + 0.5

    def event(self, fd: int, events: int) -> None:
        if fd == self.listener.fileno():
            self.accept()
        elif fd in self.peers:
            self.receive(fd)
        elif fd in self.calls:
            self.progress(self.calls[fd])
        elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            self.drop(fd)  # the container's processes are all gone
        elif events & select.POLLIN:
            self.handle(fd)

    def accept(self) -> None:
        """runc connects and sends the notification fd, with the container's state as the
        message. Read when it arrives: a peer that sends nothing stalls no one."""
        try:
            conn, _ = self.listener.accept()
        except OSError as e:  # EMFILE: the peer waits in the backlog
            self.quiet.say("accept", f"cannot accept runc's connection: {e}")
            return
        conn.setblocking(False)
        self.peers[conn.fileno()] = (conn, time.monotonic() + 5)
        self.poll.register(conn.fileno(), select.POLLIN)

    def receive(self, fd: int) -> None:
        conn, _ = self.peers.pop(fd)
        self.poll.unregister(fd)
        with conn:
            try:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 8)
            except OSError:
                return
        for nfd in fds:
            if msg == b"dockerd":
                self.dockerd_fds[nfd] = False
            self.notify_fds.add(nfd)
            self.poll.register(nfd, select.POLLIN)

    def drop(self, nfd: int) -> None:
        self.poll.unregister(nfd)
        self.notify_fds.discard(nfd)
        self.dockerd_fds.pop(nfd, None)
        for call in [c for c in self.calls.values() if c.nfd == nfd]:
            self.finish(call, None)
        os.close(nfd)

    def expire(self) -> None:
        """Once a second: peers that never sent, non-blocking callers whose workspace
        connection is slow, and calls the caller abandoned (a signal, or it died)."""
        now = time.monotonic()
        for fd, (conn, deadline) in list(self.peers.items()):
            if now > deadline:
                del self.peers[fd]
                self.poll.unregister(fd)
                conn.close()
        for call in list(self.calls.values()):
            if not self.is_valid(call.nfd, call.nid):
                self.finish(call, None)
            elif call.deadline is not None and now > call.deadline:
                self.fall_back(call)
        self.quiet.flush()

    # -- one notification ----------------------------------------------------------------

    def handle(self, nfd: int) -> None:
        buf = bytearray(NOTIF.size)
        try:
            fcntl.ioctl(nfd, IOCTL_RECV, buf)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: abandoned before we read it
                self.drop(nfd)
            return
        nid, tid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
        self.dispatch(nfd, nid, tid, nr, args)

    def dispatch(self, nfd: int, nid: int, tid: int, nr: int, args: list[int]) -> None:
        """One notification, read: whatever happens, the caller gets an answer (or is gone)
        and the agent goes on."""
        if nr != SYS_CONNECT:
            self.respond(nfd, nid, errno.ENOSYS)
            return
        if self.per_nfd.get(nfd, 0) >= PER_CONTAINER or len(self.calls) >= TOTAL:
            self.quiet.say("busy", f"too many connects in flight; pid {tid} gets EAGAIN")
            self.respond(nfd, nid, errno.EAGAIN)
            return
        try:
            self.start(nfd, nid, tid, args[0], args[1], args[2])
        except Gone:
            return
        except OSError as e:
            # EBADF (no such fd), EFAULT (a bad address), EMFILE...: the caller gets it.
            code = e.errno or errno.EAGAIN
            self.quiet.say(f"errno {code}", f"connect of pid {tid} answered {e}")
            self.respond(nfd, nid, code)
        except Exception as e:
            self.quiet.say("bug", f"connect of pid {tid} answered EAGAIN: {e!r}")
            self.respond(nfd, nid, errno.EAGAIN)

    def start(self, nfd: int, nid: int, tid: int, fd: int, ptr: int, length: int) -> None:
        if not 0 <= length <= 128:
            raise OSError(errno.EINVAL, "address length")
        raw = read_memory(tid, ptr, length)  # read once; everything acts on this copy
        theirs = fetch_fd(tid, fd)
        try:
            # Still valid now: the caller was alive and waiting all along, so its TID was
            # never reused, and the memory read and the fd fetched were that caller's.
            self.valid(nfd, nid)
            nonblock = bool(fcntl.fcntl(theirs, fcntl.F_GETFL) & os.O_NONBLOCK)
            call = Call(nfd, nid, tid, fd, raw, theirs, nonblock)
            if not self.begin(call):
                return
        except BaseException:
            os.close(theirs)
            raise
        self.calls[call.watch_fd()] = call
        self.per_nfd[nfd] = self.per_nfd.get(nfd, 0) + 1
        self.poll.register(call.watch_fd(), select.POLLOUT if call.child is None else select.POLLIN)

    def begin(self, call: Call) -> bool:
        """Act on a new call; True if it is now in flight (else it has been answered)."""
        try:
            theirs = socket.socket(fileno=call.theirs)
        except OSError:  # not a socket: the kernel says so
            return self.perform(call)
        try:
            fresh, cookie = describe(theirs)
            d = decide(call.raw, allow_host_loopback=self.allow, swapped=cookie == self.cookie,
                       fresh_tcp=fresh,
                       nets=lambda: connected_networks(self.routes()),
                       local=workspace_address)  # fmt: skip
            if d.verdict is Verdict.swap and d.target:
                return self.swap(call, theirs, d.target, d.source)
        finally:
            theirs.detach()
        if d.verdict is Verdict.refuse:
            own = d.errno == errno.ECONNREFUSED
            what = "to a workspace address" if own else "on a swapped socket"
            self.quiet.say(f"refused {d.errno}", f"pid {call.tid}: connect {what} refused")
            return self.answer(call, d.errno)
        if d.verdict is Verdict.delegate:
            return self.delegate(call)
        return self.perform(call)

    # -- the three ways --------------------------------------------------------------------

    def perform(self, call: Call) -> bool:
        """Connect the container's own socket (it routes in the container's namespace) to
        the copied address, without ever blocking the agent."""
        if call.nonblock:
            err = raw_connect(call.theirs, call.raw)
        else:
            # Started without blocking, then the flag is back at once: the connection goes
            # on in the kernel, and we wait for it in the loop.
            flags = fcntl.fcntl(call.theirs, fcntl.F_GETFL)
            fcntl.fcntl(call.theirs, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            try:
                err = raw_connect(call.theirs, call.raw)
            finally:
                fcntl.fcntl(call.theirs, fcntl.F_SETFL, flags)
        if err == errno.EINPROGRESS and not call.nonblock:
            return True  # in flight: answered when the kernel completes it
        return self.answer(call, err)

    def swap(self, call: Call, theirs: socket.socket, target: tuple[str, int],
             source: str) -> bool:  # fmt: skip
        mine = workspace_socket(theirs, source, self.ports)
        if mine is None:
            self.quiet.say("ports", "no free local port in the workspace; normal path")
            return self.perform(call)
        call.mine, call.target = mine, target
        err = mine.connect_ex(target)
        if err == errno.EINPROGRESS and ready(mine.fileno()):
            err = so_error(mine.fileno())  # loopback: done already, no trip round the loop
        if err == 0:
            return self.install(call)
        if err != errno.EINPROGRESS:
            return self.answer(call, err)
        if call.nonblock:
            call.deadline = time.monotonic() + NONBLOCK_WAIT
        return True

    def delegate(self, call: Call) -> bool:
        if self.delegates >= DELEGATES:
            self.quiet.say("busy", f"too many delegated connects; pid {call.tid} gets EAGAIN")
            return self.answer(call, errno.EAGAIN)
        caller = Caller(call.tid)
        try:
            self.valid(call.nfd, call.nid)  # what we opened of /proc/TID is that caller's
            call.child = connect_as(caller, call.theirs, call.raw)
        finally:
            caller.close()
        self.delegates += 1
        return True

    # -- completion ------------------------------------------------------------------------

    def progress(self, call: Call) -> None:
        if call.child:
            data = b""
            with contextlib.suppress(OSError):
                data = os.read(call.child[1], 4)
            err = struct.unpack("=i", data)[0] if len(data) == 4 else errno.EAGAIN
            if len(data) != 4:
                self.quiet.say("delegate", f"pid {call.tid}: the delegated connect failed")
            self.finish(call, err)
        elif call.mine:
            err = so_error(call.mine.fileno())
            if err:
                self.finish(call, err)
            else:
                self.install(call)
        else:
            self.finish(call, so_error(call.theirs))

    def fall_back(self, call: Call) -> None:
        """A non-blocking caller waited long enough: drop the workspace connection and let
        its own socket connect through the helper (EINPROGRESS, as it expects)."""
        self.unwatch(call)
        if call.mine:
            call.mine.close()
            call.mine = None
        call.deadline = None
        self.perform(call)  # non-blocking: answered at once (EINPROGRESS), never in flight

    def install(self, call: Call) -> bool:
        """The workspace socket is established: it replaces the container's fd."""
        assert call.mine is not None and call.target is not None
        # A connect() that went on without blocking leaves the socket "connecting" to the
        # kernel even once established, and from that state a later send with
        # MSG_FASTOPEN, after the connection died, would reset it (and the next one aim
        # it anywhere). Asked again, the kernel marks it connected, for good.
        if call.mine.connect_ex(call.target) not in (0, errno.EISCONN):
            self.finish(call, errno.ECONNABORTED)
            return False
        call.mine.setblocking(not call.nonblock)
        try:
            cloexec = os.O_CLOEXEC if fd_cloexec(call.tid, call.fd) else 0
            req = ADDFD.pack(call.nid, ADDFD_SETFD, call.mine.fileno(), call.fd, cloexec)
            fcntl.ioctl(call.nfd, IOCTL_ADDFD, req)
        except OSError as e:  # the caller is gone (then nobody hears this), or EMFILE
            self.finish(call, e.errno or errno.EAGAIN)
            return False
        self.bypassed += 1
        if self.dockerd_fds.get(call.nfd) is False:
            self.dockerd_fds[call.nfd] = True
            self.quiet.say("dockerd", "dockerd's own connections leave from the workspace "
                           f"(the first: to {call.target[0]}:{call.target[1]})")  # fmt: skip
        self.finish(call, 0)
        return False

    def answer(self, call: Call, err: int) -> bool:
        self.finish(call, err)
        return False

    def unwatch(self, call: Call) -> None:
        fd = call.watch_fd()
        if self.calls.get(fd) is call:
            del self.calls[fd]
            self.poll.unregister(fd)
            self.per_nfd[call.nfd] -= 1

    def finish(self, call: Call, err: int | None) -> None:
        """Answer (err None: nobody to answer) and release everything the call held."""
        self.unwatch(call)
        if call.child:
            self.end_child(*call.child)
            call.child = None
        if call.mine:
            call.mine.close()
        with contextlib.suppress(OSError):
            os.close(call.theirs)
        if err is not None:
            self.respond(call.nfd, call.nid, err)

    def end_child(self, pid: int, r: int) -> None:
        os.close(r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)  # our own child, by PID; done or abandoned
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.delegates -= 1

    def respond(self, nfd: int, nid: int, err: int) -> None:
        resp = RESP.pack(nid, 0 if err == 0 else -1, -err, 0)
        with contextlib.suppress(OSError):  # ENOENT: the caller is gone meanwhile
            fcntl.ioctl(nfd, IOCTL_SEND, resp)

    def is_valid(self, nfd: int, nid: int) -> bool:
        try:
            fcntl.ioctl(nfd, IOCTL_ID_VALID, struct.pack("=Q", nid))
        except OSError:
            return False
        return True

    def valid(self, nfd: int, nid: int) -> None:
        if not self.is_valid(nfd, nid):
            raise Gone


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
    n = _libc.process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n != length:
        e = ctypes.get_errno() if n < 0 else errno.EFAULT
        if e in (errno.ESRCH, errno.EPERM):
            raise OSError(e, os.strerror(e))
        raise OSError(errno.EFAULT, "bad address")
    return buf.raw[:length]


def workspace_socket(theirs: socket.socket, source: str,
                     ports: tuple[int, int]) -> socket.socket | None:  # fmt: skip
    """A non-blocking TCP/IPv4 socket of the workspace, bound to a port of its own (the
    kernel keeps an explicitly bound port for the socket's life, so the container can never
    bind it elsewhere), with the options that matter copied from the container's."""
    mine = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for level, opt in ((socket.IPPROTO_TCP, socket.TCP_NODELAY),
                       (socket.SOL_SOCKET, socket.SO_KEEPALIVE)):  # fmt: skip
        with contextlib.suppress(OSError):
            if value := theirs.getsockopt(level, opt):
                mine.setsockopt(level, opt, value)
    lo, hi = ports
    for _ in range(16):
        try:
            mine.bind((source, random.randint(lo, hi)))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                mine.close()
                raise
            continue
        mine.setblocking(False)
        return mine
    mine.close()
    return None


def raise_fd_limit() -> None:
    """Each call in flight holds a few fds: take the whole allowance, and meet EMFILE with
    an errno for that one caller, never with the agent's death."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(listen_fd: int, allow_host_loopback: bool, log: Callable[[str], None],
          routes: Callable[[], str]) -> Agent:  # fmt: skip
    """Run the agent in a daemon thread of the keeper; if its loop ever fails, it starts
    again on the same sockets (pending calls wait in the kernel meanwhile)."""
    listener = socket.socket(fileno=listen_fd)
    agent = Agent(listener, allow_host_loopback, log, routes)

    def loop() -> None:
        while True:
            try:
                agent.run()
            except Exception as e:
                log(f"accel: agent loop failed ({e!r}); restarting it")
                agent.poll = select.poll()
                for fd in agent.notify_fds:
                    agent.poll.register(fd, select.POLLIN)
                for fd in (*agent.peers, *agent.calls):
                    agent.poll.register(fd, select.POLLIN | select.POLLOUT)

    threading.Thread(target=loop, name="accel", daemon=True).start()
    return agent
