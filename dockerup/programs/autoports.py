"""Automatic ports: a TCP listener anywhere in docker-up's network namespace (a
`--network host` container, a server started with `docker-up exec` or `docker-up run`)
answers on the workspace's loopback at the same port, without a `-p`. Stdlib only: it runs
on a thread of the keeper.

How: every POLL seconds the keeper reads the namespace's /proc/net/tcp and tcp6 (through
the inside helper's /proc/PID/net, which shows its network namespace). For a new listening
port it decides (autorules.decide(), pure) and then binds the same port on the workspace's
127.0.0.1 (and ::1 where the workspace has it); each connection accepted there is handed,
the fd itself, to the inside helper (programs/autoinside.py), which connects to the
listener inside and moves the bytes with splice(2): the published ports' forwarder.

Rules: the workspace wins (a port any workspace listener holds is refused, and the
workspace's server goes on answering); nothing is ever bound on the workspace's other
addresses; docker-up's own listeners (dockerd, docker-proxy, the port proxy) and ports
dockerd publishes are left to the published-port path; ports below 1024 bind only where
the workspace lets the user bind them (the published-port rule); at most `cap` ports at
once; include/exclude ranges from the configuration. A port is released at the first poll
that no longer sees its listener.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dockerup.programs import script
from dockerup.programs.autorules import (
    Listener,
    Owner,
    Verdict,
    decide,
    is_v4,
    parse_tcp,
    read_text,
    socket_owners,
    wanted,
)
from dockerup.programs.common import atomic_write
from dockerup.programs.fdwait import readable
from dockerup.programs.logfiles import QuietLog
from dockerup.programs.ports import PortRequest, bind_error
from dockerup.programs.porttables import TABLE_VERSION, AutoPort, AutoTable
from dockerup.programs.specs import AutoPortsSpec

if TYPE_CHECKING:
    from dockerup.programs.ports import PortManager

POLL = 0.25  # seconds between looks at the namespace's listeners


# -- the keeper's side ----------------------------------------------------------------------


@dataclass
class Exposure:
    port: int
    owner: Owner | None
    listeners: dict[int, tuple[socket.socket, str]] = field(default_factory=dict)  # fd ->

    def close(self) -> None:
        for sock, _ in self.listeners.values():
            sock.close()


@dataclass
class Refusal:
    port: int
    reason: str
    owner: Owner | None
    inodes: frozenset[int]


def bind_loopback(port: int, routes_: dict[str, str]) -> dict[int, tuple[socket.socket, str]]:
    """The workspace's side of one port: a listener per loopback address, or PortError
    (all or nothing: half a port would let `localhost` mean two servers)."""
    out: dict[int, tuple[socket.socket, str]] = {}
    try:
        for ws, target in routes_.items():
            sock = bind_one(ws, port, target)
            if sock is not None:
                out[sock.fileno()] = (sock, target)
    except BaseException:
        for sock, _ in out.values():
            sock.close()
        raise
    return out


def bind_one(ws: str, port: int, target: str) -> socket.socket | None:
    family = socket.AF_INET if is_v4(ws) else socket.AF_INET6
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None  # no IPv6 in the workspace
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # SO_REUSEADDR: connections accepted here inherit it, and without it their TIME_WAIT
        # kept a released port from a workspace server (which sets it) for 60 s. Linux
        # still refuses this bind beside any listener. Never SO_REUSEPORT: that shares one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ws, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if family == socket.AF_INET6 and e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return None  # the workspace has no ::1
        raise bind_error(PortRequest("tcp", ws, port, target, port), e) from e
    sock.setblocking(False)
    return sock


def workspace_ports() -> set[int]:
    """Ports a TCP listener holds in the workspace (the keeper's own namespace)."""
    text = read_text("/proc/self/net/tcp") + read_text("/proc/self/net/tcp6")
    return {lst.port for lst in parse_tcp(text)}


def published_ports(pm: PortManager | None) -> set[int]:
    if pm is None:
        return set()
    return {p.req.host_port for p in list(pm.pubs.values()) if p.req.proto == "tcp"}


class AutoPorts:
    def __init__(self, spec: AutoPortsSpec, ns_fds: dict[str, int], log: Callable[[str], None],
                 published: Callable[[], set[int]]) -> None:  # fmt: skip
        self.spec, self.ns_fds, self.log, self.published = spec, ns_fds, log, published
        self.netns = os.fstat(ns_fds["net"]).st_ino
        self.exposed: dict[int, Exposure] = {}  # port ->
        self.by_fd: dict[int, Exposure] = {}  # workspace listener fd ->
        self.refused: dict[int, Refusal] = {}
        self.owners: dict[int, Owner] = {}  # inode -> (cache: looked up once per socket)
        self.quiet = QuietLog(log, first=3)
        self.helper: subprocess.Popen[bytes] | None = None
        self.helper_fd = -1
        self.conn: socket.socket | None = None
        self.next_poll = 0.0
        # Held while a helper starts: stop() must not miss one started meanwhile.
        self.lock = threading.Lock()
        self.stopping = False

    # -- the inside helper --

    def stop(self) -> None:
        """The keeper is stopping: the helper ends now and no other starts (one started
        after the keeper's sweep of its namespace would outlive docker-up)."""
        with self.lock:
            self.stopping = True
            if self.helper is None:
                return
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.helper_fd, signal.SIGKILL)
            readable([self.helper_fd], 5.0)
            self.helper.poll()

    def ensure_helper(self) -> bool:
        with self.lock:
            return False if self.stopping else self._ensure_helper()

    def _ensure_helper(self) -> bool:
        if self.helper is not None and not readable([self.helper_fd], 0):
            return True
        if self.helper is not None:
            self.quiet.say("helper", "auto-ports: the inside helper ended; starting another")
            os.close(self.helper_fd)
            self.helper.poll()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = [theirs.fileno(), self.ns_fds["user"], self.ns_fds["net"]] if "user" in \
            self.ns_fds else [theirs.fileno(), -1, self.ns_fds["net"]]  # fmt: skip
        argv = [sys.executable, "-S", script("autoinside"), *map(str, fds)]
        try:
            self.helper = subprocess.Popen(argv, pass_fds=[f for f in fds if f >= 0],
                                           stdin=subprocess.DEVNULL)  # fmt: skip
        except OSError as e:
            self.quiet.say("helper-start", f"auto-ports: cannot start the inside helper: {e}")
            ours.close()
            theirs.close()
            return False
        finally:
            theirs.close()
        self.helper_fd = os.pidfd_open(self.helper.pid)
        if self.conn is not None:
            self.conn.close()
        self.conn = ours
        ours.setblocking(False)
        return True

    # -- polling --

    def namespace_listeners(self) -> list[Listener] | None:
        assert self.helper is not None
        base = f"/proc/{self.helper.pid}/net/"
        try:
            with open(base + "tcp") as f4:
                text = f4.read()
        except OSError:
            return None  # the helper is gone: next round
        return parse_tcp(text) + parse_tcp(read_text(base + "tcp6"))

    def poll(self) -> None:
        listeners = self.namespace_listeners()
        if listeners is None:
            return
        ports = wanted(listeners)
        inodes: dict[int, frozenset[int]] = {}
        for lst in listeners:
            inodes[lst.port] = inodes.get(lst.port, frozenset()) | {lst.inode}
        changed = self.release([p for p in self.exposed if p not in ports])
        for port in [p for p in self.refused if p not in ports]:
            del self.refused[port]
            changed = True
        new = [p for p in ports if p not in self.exposed and not self.still_refused(p, inodes[p])]
        if new:
            self.lookup_owners({i for p in new for i in inodes[p]})
            published, workspace = self.published(), workspace_ports()
            for port in sorted(new):
                changed |= self.consider(port, ports[port], inodes[port], published, workspace)
        self.owners = {i: o for i, o in self.owners.items()
                       if any(i in s for s in inodes.values())}  # fmt: skip
        if changed:
            self.write_table()

    def still_refused(self, port: int, inodes: frozenset[int]) -> bool:
        """A refusal holds while the same sockets listen; the cap's is tried again."""
        r = self.refused.get(port)
        return r is not None and r.inodes == inodes and "cap" not in r.reason

    def lookup_owners(self, inodes: set[int]) -> None:
        unknown = inodes - set(self.owners)
        if unknown:
            self.owners.update(socket_owners(self.netns, unknown))

    def consider(self, port: int, routes_: dict[str, str], inodes: frozenset[int],
                 published: set[int], workspace: set[int]) -> bool:  # fmt: skip
        owner = next((self.owners[i] for i in sorted(inodes) if i in self.owners), None)
        v = decide(port, owner, self.spec, published=published, workspace=workspace,
                   exposed=len(self.exposed))  # fmt: skip
        if v.action == "expose":
            try:
                socks = bind_loopback(port, routes_)
            except Exception as e:  # PortError: EADDRINUSE, EACCES below 1024, ...
                v = Verdict("refuse", str(e))
            else:
                return self.expose(port, owner, socks)
        if v.action == "refuse":
            return self.refuse(Refusal(port, v.reason, owner, inodes))
        return False

    def expose(self, port: int, owner: Owner | None,
               socks: dict[int, tuple[socket.socket, str]]) -> bool:  # fmt: skip
        exp = Exposure(port, owner, socks)
        self.exposed[port] = exp
        self.by_fd.update(dict.fromkeys(socks, exp))
        self.refused.pop(port, None)
        who = describe(owner)
        where = ", ".join(f"{s.getsockname()[0]}:{port}" for s, _ in socks.values())
        self.log(f"auto-ports: {where or 'nothing'} -> the namespace's port {port} ({who})")
        return True

    def refuse(self, r: Refusal) -> bool:
        old = self.refused.get(r.port)
        self.refused[r.port] = r
        if old is None or old.reason != r.reason:
            self.log(f"auto-ports: port {r.port} not exposed ({describe(r.owner)}): {r.reason}")
            return True
        return False

    def release(self, ports: list[int]) -> bool:
        for port in ports:
            exp = self.exposed.pop(port)
            for fd in exp.listeners:
                self.by_fd.pop(fd, None)
            exp.close()
            self.log(f"auto-ports: released port {port}")
        return bool(ports)

    # -- connections --

    def hand_over(self, exp: Exposure, fd: int) -> None:
        sock, target = exp.listeners[fd]
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            with client:
                if self.conn is None:
                    return
                try:
                    msg = json.dumps([target, exp.port]).encode()
                    socket.send_fds(self.conn, [msg], [client.fileno()])
                except OSError:
                    self.quiet.say("busy", f"auto-ports: port {exp.port}: the inside "
                                   "helper is not keeping up; closing connections")  # fmt: skip

    # -- the table `docker-up ports` shows --

    def table(self) -> AutoTable:
        auto = [row(e.port, e.owner, addresses=sorted(
                    s.getsockname()[0] for s, _ in e.listeners.values()))
                for e in sorted(self.exposed.values(), key=lambda e: e.port)]  # fmt: skip
        refused = [row(r.port, r.owner, reason=r.reason)
                   for r in sorted(self.refused.values(), key=lambda r: r.port)]  # fmt: skip
        return AutoTable(TABLE_VERSION, auto, refused)

    def write_table(self) -> None:
        with contextlib.suppress(OSError):
            atomic_write(self.spec.table, self.table().to_json())

    def run(self) -> None:
        self.write_table()
        while not self.stopping:
            if not self.ensure_helper():
                time.sleep(1)  # nothing to wait on: the helper could not even start
                continue
            wait = max(0.0, self.next_poll - time.monotonic())
            ready = readable([*self.by_fd, self.helper_fd], wait)
            for fd in ready:
                if fd in self.by_fd:
                    self.hand_over(self.by_fd[fd], fd)
            if time.monotonic() >= self.next_poll:
                self.poll()
                self.next_poll = time.monotonic() + POLL


def row(port: int, owner: Owner | None, addresses: list[str] | None = None,
        reason: str = "") -> AutoPort:  # fmt: skip
    return AutoPort(port, "tcp", owner.pid if owner else None, owner.command if owner else "",
                    owner.container if owner else None, addresses or [], reason)  # fmt: skip


def describe(owner: Owner | None) -> str:
    if owner is None:
        return "owner unknown"
    if owner.container:
        return f"container {owner.container[:12]}, {owner.command[:40]}"
    return f"pid {owner.pid}, {owner.command[:40]}"


def start(spec: AutoPortsSpec, ns_fds: dict[str, int], log: Callable[[str], None],
          ports: Callable[[], PortManager | None]) -> AutoPorts:  # fmt: skip
    """On a thread of the keeper, for as long as it runs."""
    auto = AutoPorts(spec, ns_fds, log, lambda: published_ports(ports()))

    def loop() -> None:
        try:
            auto.run()
        except Exception as e:  # never the keeper's end: it still serves dockerd
            log(f"auto-ports stopped: {type(e).__name__}: {e}")

    threading.Thread(target=loop, name="auto-ports", daemon=True).start()
    return auto
