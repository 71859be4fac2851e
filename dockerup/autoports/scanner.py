"""Automatic ports: a TCP listener anywhere in docker-up's network namespace (a `--network
host` container, a server of `docker-up exec` or `run`) answers on the workspace's loopback
at the same port, without a `-p`. Stdlib only: it runs on a thread of the keeper.

How: every POLL seconds the keeper reads the namespace's /proc/net/tcp and tcp6 (through
the inside helper's /proc/PID/net). A new listening port is decided (rules.py's decide(),
pure), then bound on the workspace's 127.0.0.1 (and ::1 where the workspace has it); each
connection accepted there goes, the fd itself, to the inside helper (autoports/inside.py),
which connects to the listener inside and splices the bytes, as the published ports do.

Rules (decide()): the workspace wins; nothing binds the workspace's other addresses;
docker-up's own listeners and dockerd's published ports are left to the published-port
path; below 1024 only where the workspace lets the user bind; at most `cap` ports;
include/exclude ranges. A listener no process holds waits a poll. A port is released at
the first poll that no longer sees its listener.
"""

from __future__ import annotations

import contextlib
import errno
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

from dockerup.autoports.rules import (
    Listener,
    Owner,
    Verdict,
    decide,
    in_ranges,
    is_v4,
    parse_sockets,
    parse_tcp,
    parse_udp,
    socket_owners,
    wanted,
)
from dockerup.files import atomic_write, read_text
from dockerup.lean import script
from dockerup.linux.fdwait import readable
from dockerup.logs import QuietLog
from dockerup.ports.manager import bind_error
from dockerup.ports.tables import TABLE_VERSION, AutoPort, AutoTable
from dockerup.wire.messages import Connect, OwnersAnswer, OwnersQuery, PortRequest
from dockerup.wire.specs import AutoPortsSpec

if TYPE_CHECKING:
    from dockerup.ports.manager import PortManager

POLL = 0.25  # seconds between looks at the namespace's listeners
OWNERS_TIMEOUT = 2.0  # seconds the inside helper may take to say who holds new sockets
# Refusals that may end without their socket changing, so each poll tries again: the cap,
# and a UDP port the inside helper could not take (it was being restarted).
RETRIED = ("cap of", "the inside helper")


# -- the keeper's side ----------------------------------------------------------------------


Key = tuple[str, int]  # (protocol, port): TCP and UDP ports are apart


@dataclass
class Exposure:
    port: int
    owner: Owner | None
    listeners: dict[int, tuple[socket.socket, str]] = field(default_factory=dict)  # fd ->
    proto: str = "tcp"
    stops: list[socket.socket] = field(default_factory=list)  # UDP: the helper's relays end

    def close(self) -> None:
        for sock, _ in self.listeners.values():
            sock.close()
        for stop in self.stops:
            stop.close()


@dataclass
class Refusal:
    port: int
    reason: str
    owner: Owner | None
    inodes: frozenset[int]
    proto: str = "tcp"


def bind_loopback(
    port: int, routes_: dict[str, str], proto: str = "tcp"
) -> dict[int, tuple[socket.socket, str]]:
    """The workspace's side of one port: a socket per loopback address, or PortError
    (all or nothing: half a port would let `localhost` mean two servers)."""
    out: dict[int, tuple[socket.socket, str]] = {}
    try:
        for ws, target in routes_.items():
            sock = bind_one(ws, port, target, proto)
            if sock is not None:
                out[sock.fileno()] = (sock, target)
    except BaseException:
        for sock, _ in out.values():
            sock.close()
        raise
    return out


def bind_one(ws: str, port: int, target: str, proto: str = "tcp") -> socket.socket | None:
    family = socket.AF_INET if is_v4(ws) else socket.AF_INET6
    try:
        sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    except OSError:
        return None  # no IPv6 in the workspace
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if proto == "tcp":
            # SO_REUSEADDR: connections accepted here inherit it, and without it their
            # TIME_WAIT kept a released port from a workspace server (which sets it) for
            # 60 s. Linux still refuses this bind beside any listener. Never SO_REUSEPORT:
            # that shares one. (For UDP, SO_REUSEADDR would share a bound port: never.)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ws, port))
        if proto == "tcp":
            sock.listen(128)
    except OSError as e:
        sock.close()
        if family == socket.AF_INET6 and e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return None  # the workspace has no ::1
        raise bind_error(PortRequest(proto, ws, port, target, port), e) from e
    sock.setblocking(False)
    return sock


def workspace_ports(udp: bool = False) -> set[Key]:
    """Ports a TCP listener (or any UDP socket) holds in the workspace (the keeper's netns)."""
    text = read_text("/proc/self/net/tcp") + read_text("/proc/self/net/tcp6")
    ports = {("tcp", lst.port) for lst in parse_tcp(text)}
    if udp:
        text = read_text("/proc/self/net/udp") + read_text("/proc/self/net/udp6")
        ports |= {("udp", lst.port) for lst in parse_sockets(text, None)}
    return ports


def published_ports(pm: PortManager | None) -> set[Key]:
    if pm is None:
        return set()
    return {(p.req.proto, p.req.host_port) for p in list(pm.pubs.values())}


class AutoPorts:
    def __init__(
        self,
        spec: AutoPortsSpec,
        ns_fds: dict[str, int],
        log: Callable[[str], None],
        published: Callable[[], set[Key]],
    ) -> None:
        self.spec, self.ns_fds, self.log, self.published = spec, ns_fds, log, published
        self.netns = os.fstat(ns_fds["net"]).st_ino
        self.exposed: dict[Key, Exposure] = {}
        self.by_fd: dict[int, Exposure] = {}  # workspace TCP listener fd ->
        self.refused: dict[Key, Refusal] = {}
        self.owners: dict[int, Owner] = {}  # inode -> (cache: looked up once per socket)
        self.unowned: dict[Key, frozenset[int]] = {}  # held back a poll: no owner seen
        self.quiet = QuietLog(log, first=3)
        self.helper: subprocess.Popen[bytes] | None = None
        self.helper_fd = -1
        self.conn: socket.socket | None = None
        self.queries = 0  # OwnersQuery ids
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
            # Its UDP relays ended with it: exposed anew, to the next helper, at the next poll.
            self.release([k for k in self.exposed if k[0] == "udp"])
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = (
            [theirs.fileno(), self.ns_fds["user"], self.ns_fds["net"]]
            if "user" in self.ns_fds
            else [theirs.fileno(), -1, self.ns_fds["net"]]
        )
        argv = [sys.executable, "-S", script("autoinside"), *map(str, fds), str(os.getpid())]
        try:
            self.helper = subprocess.Popen(
                argv, pass_fds=[f for f in fds if f >= 0], stdin=subprocess.DEVNULL
            )
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

    def namespace_listeners(self, proto: str = "tcp") -> list[Listener] | None:
        """The namespace's TCP listeners or UDP servers; None: the helper is gone (next round)."""
        assert self.helper is not None
        base = f"/proc/{self.helper.pid}/net/{proto}"
        try:
            # Until its setns, a new helper's tables are the workspace's own: every workspace
            # listener would look like the namespace's (and be refused as in use there).
            if os.stat(f"/proc/{self.helper.pid}/ns/net").st_ino != self.netns:
                return None
            with open(base) as f4:
                text = f4.read()
        except OSError:
            return None
        parse = parse_tcp if proto == "tcp" else parse_udp
        return parse(text) + parse(read_text(base + "6"))

    def poll(self) -> None:
        ports: dict[Key, dict[str, str]] = {}
        inodes: dict[Key, frozenset[int]] = {}
        for proto in ("tcp", "udp") if self.spec.udp else ("tcp",):
            listeners = self.namespace_listeners(proto)
            if listeners is None:
                return
            if proto == "udp":  # a blanket UDP forward would catch every client's socket
                listeners = [lst for lst in listeners if in_ranges(lst.port, self.spec.udp)]
            ports |= {(proto, port): r for port, r in wanted(listeners).items()}
            for lst in listeners:
                key = (proto, lst.port)
                inodes[key] = inodes.get(key, frozenset()) | {lst.inode}
        changed = self.release([p for p in self.exposed if p not in ports])
        for port in [p for p in self.refused if p not in ports]:
            del self.refused[port]
            changed = True
        self.unowned = {k: v for k, v in self.unowned.items() if inodes.get(k) == v}
        new = [p for p in ports if p not in self.exposed and not self.still_refused(p, inodes[p])]
        if new:
            self.lookup_owners({i for p in new for i in inodes[p]})
            published, workspace = self.published(), workspace_ports(bool(self.spec.udp))
            for port in sorted(new):
                changed |= self.consider(port, ports[port], inodes[port], published, workspace)
        self.owners = {i: o for i, o in self.owners.items() if any(i in s for s in inodes.values())}
        if changed:
            self.write_table()

    def still_refused(self, port: Key, inodes: frozenset[int]) -> bool:
        """A refusal holds while the same sockets listen; RETRIED ones are tried again."""
        r = self.refused.get(port)
        return r is not None and r.inodes == inodes and not any(w in r.reason for w in RETRIED)

    def lookup_owners(self, inodes: set[int]) -> None:
        unknown = inodes - set(self.owners)
        if unknown:
            asked = self.ask_owners(unknown)
            self.owners.update(socket_owners(self.netns, unknown) if asked is None else asked)

    def ask_owners(self, inodes: set[int]) -> dict[int, Owner] | None:
        """The inside helper looks: under keep-id, dockerd's port proxies and containers'
        root are a subordinate id, whose /proc/PID/fd the keeper (the user) may not list
        (dockerd 28's own listener of a port it is about to publish, unknown, was exposed
        and the publish refused). None: no answer (the keeper looks)."""
        if self.conn is None:
            return None
        self.queries += 1
        try:
            self.conn.send(OwnersQuery(self.queries, sorted(inodes)).to_json().encode())
            deadline = time.monotonic() + OWNERS_TIMEOUT
            while readable([self.conn.fileno()], max(0.0, deadline - time.monotonic())):
                answer = OwnersAnswer.from_json(self.conn.recv(1 << 20))
                if answer.id == self.queries:
                    return {
                        o.inode: Owner(o.pid, o.command, o.container, o.own) for o in answer.owners
                    }
        except (OSError, ValueError):
            pass
        return None

    def consider(
        self,
        key: Key,
        routes_: dict[str, str],
        inodes: frozenset[int],
        published: set[Key],
        workspace: set[Key],
    ) -> bool:
        proto, port = key
        owner = next((self.owners[i] for i in sorted(inodes) if i in self.owners), None)
        v = decide(
            port,
            owner,
            self.spec,
            published={p for k, p in published if k == proto},
            workspace={p for k, p in workspace if k == proto},
            exposed=len(self.exposed),
            proto=proto,
        )
        if v.action == "expose" and owner is None and self.unowned.get(key) != inodes:
            # No process holds it: most likely one ending, as a docker-proxy whose port
            # dockerd unpublishes and publishes again at its restart (exposed, the workspace
            # port is taken from that publish). Still there at the next poll: a port.
            self.unowned[key] = inodes
            return False
        if v.action == "expose":
            exp = Exposure(port, owner, proto=proto)
            try:
                exp.listeners = bind_loopback(port, routes_, proto)
                if proto == "udp":
                    self.relay(exp)
            except Exception as e:  # PortError: EADDRINUSE, EACCES below 1024, ...
                exp.close()
                v = Verdict("refuse", str(e))
            else:
                return self.expose(exp)
        if v.action == "refuse":
            return self.refuse(Refusal(port, v.reason, owner, inodes, proto))
        return False

    def relay(self, exp: Exposure) -> None:
        """UDP: each bound workspace socket goes to the inside helper, which relays its
        datagrams until the stop socket kept here closes (OSError: it cannot take it)."""
        if self.conn is None:
            raise OSError("the inside helper is not running")
        try:
            for sock, target in exp.listeners.values():
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                exp.stops.append(ours)
                with theirs:
                    msg = Connect("udp", target, exp.port).to_json().encode()
                    socket.send_fds(self.conn, [msg], [sock.fileno(), theirs.fileno()])
        except OSError as e:  # it ended (EPIPE) or is full (EAGAIN): the next poll tries again
            raise OSError(f"the inside helper cannot take it: {e}") from e

    def expose(self, exp: Exposure) -> bool:
        port, key = exp.port, (exp.proto, exp.port)
        self.exposed[key] = exp
        if exp.proto == "tcp":
            self.by_fd.update(dict.fromkeys(exp.listeners, exp))
        self.refused.pop(key, None)
        where = ", ".join(f"{s.getsockname()[0]}:{port}" for s, _ in exp.listeners.values())
        self.log(
            f"auto-ports: {where or 'nothing'} -> the namespace's port {label(key)} "
            f"({describe(exp.owner)})"
        )
        return True

    def refuse(self, r: Refusal) -> bool:
        key = (r.proto, r.port)
        old = self.refused.get(key)
        self.refused[key] = r
        if old is None or old.reason != r.reason:
            self.log(f"auto-ports: port {label(key)} not exposed ({describe(r.owner)}): {r.reason}")
            return True
        return False

    def release(self, keys: list[Key]) -> bool:
        for key in keys:
            exp = self.exposed.pop(key)
            for fd in exp.listeners:
                self.by_fd.pop(fd, None)
            exp.close()
            self.log(f"auto-ports: released port {label(key)}")
        return bool(keys)

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
                    msg = Connect("tcp", target, exp.port).to_json().encode()
                    socket.send_fds(self.conn, [msg], [client.fileno()])
                except OSError:
                    self.quiet.say(
                        "busy",
                        f"auto-ports: port {exp.port}: the inside "
                        "helper is not keeping up; closing connections",
                    )

    # -- the table `docker-up ports` shows --

    def table(self) -> AutoTable:
        auto = [
            row(
                e.port,
                e.proto,
                e.owner,
                addresses=sorted(s.getsockname()[0] for s, _ in e.listeners.values()),
            )
            for e in sorted(self.exposed.values(), key=lambda e: (e.port, e.proto))
        ]
        refused = [
            row(r.port, r.proto, r.owner, reason=r.reason)
            for r in sorted(self.refused.values(), key=lambda r: (r.port, r.proto))
        ]
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


def row(
    port: int, proto: str, owner: Owner | None, addresses: list[str] | None = None, reason: str = ""
) -> AutoPort:
    return AutoPort(
        port,
        proto,
        owner.pid if owner else None,
        owner.command if owner else "",
        owner.container if owner else None,
        addresses or [],
        reason,
    )


def label(key: Key) -> str:
    """A port as the log says it: TCP's bare (as it always was), UDP's with /udp."""
    return str(key[1]) if key[0] == "tcp" else f"{key[1]}/udp"


def describe(owner: Owner | None) -> str:
    if owner is None:
        return "owner unknown"
    if owner.container:
        return f"container {owner.container[:12]}, {owner.command[:40]}"
    return f"pid {owner.pid}, {owner.command[:40]}"


def start(
    spec: AutoPortsSpec,
    ns_fds: dict[str, int],
    log: Callable[[str], None],
    ports: Callable[[], PortManager | None],
) -> AutoPorts:
    """On a thread of the keeper, for as long as it runs."""
    auto = AutoPorts(spec, ns_fds, log, lambda: published_ports(ports()))

    def loop() -> None:
        try:
            auto.run()
        except Exception as e:  # never the keeper's end: it still serves dockerd
            log(f"auto-ports stopped: {type(e).__name__}: {e}")

    threading.Thread(target=loop, name="auto-ports", daemon=True).start()
    return auto
