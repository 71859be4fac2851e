"""The acceleration agent: containers' TCP connections to the workspace's loopback (and to
addresses only the helper's default route leads to) become real sockets of the workspace,
so their bytes never cross the network helper.

How: docker-up's runtime (dockerup/accel/ociruntime.py) gives each container a seccomp filter that
notifies on connect(), with this agent's socket as the listener; runc hands the agent the
notification fd. The agent answers every connect() itself; it never lets the kernel re-run
the container's call (SECCOMP_USER_NOTIF_FLAG_CONTINUE), because the kernel would then read
the address and the fd number again from the container, and another thread of the
container could have changed either in between (seccomp_unotify(2)).

For each connect() the agent copies the address once, fetches the very file the fd names
(pidfd_getfd), and decides with one pure function (accel/policy.py's decide()):
- swap: a fresh TCP/IPv4 socket aimed at the workspace's loopback as containers see it
  (10.0.2.2, only with host loopback allowed) or at an address outside every network of
  docker-up's namespace. The agent connects a socket of its own, in the workspace, to the
  address it checked, and only once that connection is established puts it in place of
  the container's fd (SECCOMP_IOCTL_NOTIF_ADDFD) and answers 0;
- perform: anything else of the IP families: the agent connects the container's own
  socket (it routes in the container's namespace, whoever calls) to the copied bytes;
- delegate: other families (AF_UNIX paths depend on the caller's root and credentials):
  a forked child that becomes the caller does it (dockerup/accel/creds.py);
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

Here: the loop (Agent) and its start. Beside it: accel/calls.py (each call in flight, its
three ways and its answer), accel/policy.py (decide(), pure), accel/nets.py (the
namespace's networks, the workspace's own addresses), accel/notify.py (seccomp user
notification and the syscalls on a caller's behalf), accel/creds.py (delegated calls),
accel/support.py (whether this machine can run the agent at all).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import socket
import threading
import time
from collections.abc import Callable

from dockerup.accel import notify as kernel
from dockerup.accel.calls import Calls
from dockerup.accel.notify import Gone
from dockerup.linux import libc as linux

# Bounds: one container cannot hold more of the agent than this, nor all together.
PER_CONTAINER = 64
TOTAL = 512


class Agent(Calls):
    """The loop: runc's connections handing over each container's notification fd, the
    notifications themselves, and the timers; each connect() read is a call in flight
    (accel/calls.py's Calls) until it is answered."""

    def __init__(
        self,
        listener: socket.socket,
        allow_host_loopback: bool,
        log: Callable[[str], None],
        routes: Callable[[], str],
    ) -> None:
        super().__init__(allow_host_loopback, log, routes)
        self.listener = listener
        self.notify_fds: set[int] = set()
        self.peers: dict[int, tuple[socket.socket, float]] = {}  # runc, sending its fd
        self.next_expire = 0.0
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
        """At most every half second, at least every second (the poll's timeout): peers
        that never sent, non-blocking callers whose workspace connection is slow, and
        calls the caller abandoned (a signal, or it died)."""
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
        try:
            nid, tid, nr, args = kernel.receive(nfd)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: abandoned before we read it
                self.drop(nfd)
            return
        self.dispatch(nfd, nid, tid, nr, args)

    def dispatch(self, nfd: int, nid: int, tid: int, nr: int, args: list[int]) -> None:
        """One notification, read: whatever happens, the caller gets an answer (or is gone)
        and the agent goes on."""
        if nr != linux.syscall_number("connect"):
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


def raise_fd_limit() -> None:
    """Each call in flight holds a few fds: take the whole allowance, and meet EMFILE with
    an errno for that one caller, never with the agent's death."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(
    listen_fd: int, allow_host_loopback: bool, log: Callable[[str], None], routes: Callable[[], str]
) -> Agent:
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
