"""Automatic ports: a TCP listener anywhere in docker-up's network namespace (a
`--network host` container, a server started with `docker-up exec` or `docker-up run`)
answers on the workspace's loopback at the same port, without a `-p`. Stdlib only: it runs
on a thread of the keeper.

How: every POLL seconds the keeper reads the namespace's /proc/net/tcp and tcp6 (through
the inside helper's /proc/PID/net, which shows its network namespace). For a new listening
port it decides (decide(), pure) and then binds the same port on the workspace's 127.0.0.1
(and ::1 where the workspace has it); each connection accepted there is handed, the fd
itself, to the inside helper, which connects to the listener inside and moves the bytes
with splice(2): the published ports' forwarder (portproxy.serve), in a process that entered
the user and network namespaces (setns must be the first thing a single-threaded process
does, so it is its own program: `autoports.py inside`).

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
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup.programs.common import atomic_write
from dockerup.programs.fdwait import readable
from dockerup.programs.logfiles import QuietLog
from dockerup.programs.ports import PortRequest, bind_error
from dockerup.programs.specs import AutoPortsSpec

if TYPE_CHECKING:
    from dockerup.programs.ports import PortManager

POLL = 0.25  # seconds between looks at the namespace's listeners
TCP_LISTEN = "0A"  # /proc/net/tcp's st column
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG = 1
# Executables whose listeners are docker-up's own plumbing (their ports take the
# published-port path). A container that names its server so only loses auto-exposure.
OWN_EXES = frozenset({
    "dockerd", "docker-proxy", "containerd", "containerd-shim-runc-v2", "rootlesskit",
    "rootlesskit-docker-proxy", "slirp4netns", "pasta", "passt", "docker-init", "runc",
})  # fmt: skip
OWN_SCRIPTS = "/dockerup/programs/"  # python -S .../dockerup/programs/portproxy.py, ...
WORKSPACE_V4, WORKSPACE_V6 = "127.0.0.1", "::1"


# -- reading /proc/net/tcp (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    address: str  # inet_ntop's text; an IPv4-mapped IPv6 address as plain IPv4
    port: int
    inode: int


def hex_address(text: str) -> str:
    """/proc/net/tcp's address: IPv4 as one little-endian word, IPv6 as four."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = socket.inet_ntop(socket.AF_INET6, words)
    return address.removeprefix("::ffff:") if "." in address else address


def parse_tcp(text: str) -> list[Listener]:
    """The listening sockets of a /proc/net/tcp or tcp6 table."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != TCP_LISTEN:
            continue
        address, port = cols[1].rsplit(":", 1)
        out.append(Listener(hex_address(address), int(port, 16), int(cols[9])))
    return out


def is_v4(address: str) -> bool:
    return ":" not in address


def routes(address: str) -> dict[str, str]:
    """Where a namespace listener on `address` answers in the workspace: {workspace address:
    the address to connect to inside}. Only ever the workspace's loopback; a listener on the
    namespace's 127.0.0.1 (or ::1) on the same family's loopback alone."""
    if address == "0.0.0.0":
        return {WORKSPACE_V4: "127.0.0.1"}
    if address == "::":  # dual stack unless the program said IPV6_V6ONLY
        return {WORKSPACE_V4: "127.0.0.1", WORKSPACE_V6: "::1"}
    if is_v4(address):
        return {WORKSPACE_V4: address}  # 127.0.0.1 (loopback only) or an address of the ns
    return {WORKSPACE_V6: address}


def wanted(listeners: Iterable[Listener]) -> dict[int, dict[str, str]]:
    """port -> {workspace address: target inside}, over all of a port's listeners; a
    wildcard listener's target is kept over a specific one's."""
    out: dict[int, dict[str, str]] = {}
    for lst in sorted(listeners, key=lambda x: x.address not in ("0.0.0.0", "::")):
        for ws, target in routes(lst.address).items():
            out.setdefault(lst.port, {}).setdefault(ws, target)
    return out


def parse_ranges(text: str) -> list[list[int]]:
    """Ranges: "3000-3999,8080" as [[3000, 3999], [8080, 8080]]; ValueError when malformed."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"{part!r} is not a port range (1-65535, first <= last)")
        out.append([lo, hi])
    return out


def in_ranges(port: int, ranges: Iterable[list[int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


# -- the decision (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    pid: int
    command: str
    container: str | None = None  # the container's id, for a container's process
    own: bool = False  # docker-up's plumbing


@dataclass(frozen=True)
class Verdict:
    action: str  # "expose", "skip" (silently: docker-up's own), "refuse"
    reason: str = ""


def decide(port: int, owner: Owner | None, rules: AutoPortsSpec, *, published: set[int],
           workspace: set[int], exposed: int) -> Verdict:  # fmt: skip
    """What to do with a new namespace listener's port. `published`: ports the port manager
    serves (dockerd publishes them); `workspace`: ports a workspace listener holds;
    `exposed`: how many ports are auto-exposed now."""
    if owner is not None and owner.own:
        return Verdict("skip", "docker-up's own listener")
    if port in published:
        return Verdict("skip", "published by dockerd")
    if rules.include and not in_ranges(port, rules.include):
        return Verdict("refuse", "not in auto-ports-include")
    if in_ranges(port, rules.exclude):
        return Verdict("refuse", "in auto-ports-exclude")
    if port in workspace:
        return Verdict("refuse", "in use in the workspace (the workspace's listener keeps it)")
    if exposed >= rules.cap:
        return Verdict("refuse", f"the cap of {rules.cap} auto-exposed ports is reached "
                       "(auto-ports-max)")  # fmt: skip
    return Verdict("expose")


def own_process(exe: str, cmdline: list[str]) -> bool:
    name = os.path.basename(exe.removesuffix(" (deleted)"))
    return name in OWN_EXES or any(OWN_SCRIPTS in arg for arg in cmdline[:3])


def shim_container(cmdline: list[str]) -> str | None:
    """containerd-shim-runc-v2 -namespace moby -id ID -address ...: the container's id."""
    if "-id" in cmdline[:-1]:
        return cmdline[cmdline.index("-id") + 1]
    return None


# -- the processes behind a socket ------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    return [a for a in _read(f"/proc/{pid}/cmdline").split("\0") if a]


def _ppid(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def container_of(pid: int) -> str | None:
    """The container a process runs in: the id its containerd shim was started with."""
    for _ in range(64):
        pid = _ppid(pid)
        if pid <= 1:
            return None
        if _read(f"/proc/{pid}/comm").startswith("containerd-shim"):
            return shim_container(_cmdline(pid))
    return None


def owner_of(pid: int) -> Owner:
    cmd = _cmdline(pid)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = cmd[0] if cmd else ""
    return Owner(pid, " ".join(cmd)[:120], container_of(pid), own_process(exe, cmd))


def socket_owners(netns: int, inodes: set[int]) -> dict[int, Owner]:
    """inode -> the first process in network namespace `netns` (its inode) holding it."""
    found: dict[int, Owner] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or len(found) == len(inodes):
            continue
        try:
            if os.stat(f"/proc/{name}/ns/net").st_ino != netns:
                continue
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and (inode := int(link[8:-1])) in inodes:
                found.setdefault(inode, owner_of(int(name)))
    return found


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
        # No SO_REUSEADDR/SO_REUSEPORT: a port someone holds must fail here, not be shared.
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
    text = _read("/proc/self/net/tcp") + _read("/proc/self/net/tcp6")
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
        argv = [sys.executable, "-S", os.path.abspath(__file__), "inside", *map(str, fds)]
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
        return parse_tcp(text) + parse_tcp(_read(base + "tcp6"))

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

    def table(self) -> dict[str, object]:
        return {
            "version": 1,
            "auto": [row(e.port, e.owner) | {"addresses": sorted(
                s.getsockname()[0] for s, _ in e.listeners.values())}
                for e in sorted(self.exposed.values(), key=lambda e: e.port)],
            "refused": [row(r.port, r.owner) | {"reason": r.reason}
                        for r in sorted(self.refused.values(), key=lambda r: r.port)],
        }  # fmt: skip

    def write_table(self) -> None:
        with contextlib.suppress(OSError):
            atomic_write(self.spec.table, json.dumps(self.table(), indent=1))

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


def row(port: int, owner: Owner | None) -> dict[str, object]:
    return {"port": port, "proto": "tcp", "pid": owner.pid if owner else None,
            "command": owner.command if owner else "",
            "container": owner.container if owner else None}  # fmt: skip


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


# -- the inside helper: its own process, in the user and network namespaces ------------------


def inside(conn_fd: int, user_fd: int, net_fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, 9)
    for fd, kind in ((user_fd, CLONE_NEWUSER), (net_fd, CLONE_NEWNET)):
        if fd >= 0 and libc.setns(fd, kind) != 0:
            sys.exit(f"docker-up auto-ports: setns: {os.strerror(ctypes.get_errno())}")
        if fd >= 0:
            os.close(fd)
    from dockerup.programs.portproxy import Slots, serve

    conn = socket.socket(fileno=conn_fd)
    slots = Slots()
    while True:
        msg, fds, _, _ = socket.recv_fds(conn, 512, 1)
        if not msg:
            return  # the keeper went away
        for fd in fds[1:]:
            os.close(fd)
        if not fds:
            continue
        client = socket.socket(fileno=fds[0])
        target, port = json.loads(msg)
        if not slots.take():
            client.close()
            continue
        threading.Thread(target=serve, args=(client, (target, port), slots), daemon=True).start()


if __name__ == "__main__" and sys.argv[1:2] == ["inside"]:
    inside(*(int(a) for a in sys.argv[2:5]))
