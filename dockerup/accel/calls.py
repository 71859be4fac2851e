"""The connect() calls the acceleration agent is answering, stdlib only: each one from its
notification to its answer, in one of three ways (perform, swap, delegate; accel/policy.py
decides which), without ever blocking the agent. The loop that feeds them (runc's
handovers, the notification fds, the timers) is the Agent in accel.py."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockerup.accel import notify as kernel
from dockerup.accel.creds import Caller, connect_as
from dockerup.accel.nets import connected_networks, workspace_address
from dockerup.accel.notify import (
    Gone,
    describe,
    fd_cloexec,
    fetch_fd,
    raw_connect,
    read_memory,
    ready,
    so_error,
)
from dockerup.accel.policy import Verdict, decide
from dockerup.logs import QuietLog

DELEGATES = 16  # forked children at once
# A non-blocking caller waits this long for its workspace connection, then takes the
# normal path (EINPROGRESS through the helper) instead.
NONBLOCK_WAIT = 2.0


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
    child: tuple[int, int] | None = None  # delegate: (pidfd, pipe read end)
    deadline: float | None = None  # swap, non-blocking caller: then the normal path

    def watch_fd(self) -> int:
        if self.child:
            return self.child[1]
        return self.mine.fileno() if self.mine else self.theirs


class Calls:
    """The calls in flight, by the fd the poll loop watches for each, and how each is
    begun, carried on and answered."""

    def __init__(
        self, allow_host_loopback: bool, log: Callable[[str], None], routes: Callable[[], str]
    ) -> None:
        self.allow = allow_host_loopback
        self.routes = routes  # docker-up's namespace's route table, read afresh each time
        self.quiet = QuietLog(log, prefix="accel: ")
        self.poll = select.poll()
        # dockerd's own (daemonfilter.py): bypassed yet?
        self.dockerd_fds: dict[int, bool] = {}
        self.calls: dict[int, Call] = {}  # by the fd we watch
        self.per_nfd: dict[int, int] = {}
        self.delegates = 0
        self.bypassed = 0
        self.ports = port_range()
        cookie = kernel.netns_cookie()
        if cookie is None:  # support_problems refuses --net-accel on such a kernel
            raise OSError(errno.ENOPROTOOPT, "no SO_NETNS_COOKIE")
        self.cookie = cookie

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
            d = decide(
                call.raw,
                allow_host_loopback=self.allow,
                swapped=cookie == self.cookie,
                fresh_tcp=fresh,
                nets=lambda: connected_networks(self.routes()),
                local=workspace_address,
            )
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

    def swap(self, call: Call, theirs: socket.socket, target: tuple[str, int], source: str) -> bool:
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
            kernel.add_fd(call.nfd, call.nid, call.mine.fileno(), call.fd, cloexec)
        except OSError as e:  # the caller is gone (then nobody hears this), or EMFILE
            self.finish(call, e.errno or errno.EAGAIN)
            return False
        self.bypassed += 1
        if self.dockerd_fds.get(call.nfd) is False:
            self.dockerd_fds[call.nfd] = True
            self.quiet.say(
                "dockerd",
                "dockerd's own connections leave from the workspace "
                f"(the first: to {call.target[0]}:{call.target[1]})",
            )
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

    def end_child(self, pidfd: int, r: int) -> None:
        os.close(r)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # our own child; done or abandoned
        with contextlib.suppress(ChildProcessError):  # the keeper's reaper may have been first
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        os.close(pidfd)
        self.delegates -= 1

    # Methods, so that a test can stand in for the kernel's side.
    def respond(self, nfd: int, nid: int, err: int) -> None:
        kernel.respond(nfd, nid, err)

    def is_valid(self, nfd: int, nid: int) -> bool:
        return kernel.id_valid(nfd, nid)

    def valid(self, nfd: int, nid: int) -> None:
        if not self.is_valid(nfd, nid):
            raise Gone


def workspace_socket(
    theirs: socket.socket, source: str, ports: tuple[int, int]
) -> socket.socket | None:
    """A non-blocking TCP/IPv4 socket of the workspace, bound to a port of its own (the
    kernel keeps an explicitly bound port for the socket's life, so the container can never
    bind it elsewhere), with the options that matter copied from the container's."""
    mine = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for level, opt in (
        (socket.IPPROTO_TCP, socket.TCP_NODELAY),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    ):
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


def port_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999
