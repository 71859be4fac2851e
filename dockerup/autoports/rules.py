"""Auto ports' rules (stdlib only): the namespace's TCP listeners read from /proc/net/tcp
and tcp6, where each answers in the workspace, what the configuration's ranges say, the
verdict on a new listener's port (decide(), pure), and which process holds a socket.
autoports/scanner.py acts on them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from dockerup.files import read_text
from dockerup.lean import PROGRAMS
from dockerup.linux import procid
from dockerup.wire.specs import AutoPortsSpec

TCP_LISTEN = "0A"  # /proc/net/tcp's st column
UDP_UNCONNECTED = "07"  # /proc/net/udp's: bound, no peer (a server's socket)
# Executables whose listeners are docker-up's own plumbing (their ports take the
# published-port path). A container that names its server so only loses auto-exposure.
OWN_EXES = frozenset(
    {
        "dockerd",
        "docker-proxy",
        "containerd",
        "containerd-shim-runc-v2",
        "rootlesskit",
        "rootlesskit-docker-proxy",
        "slirp4netns",
        "pasta",
        "passt",
        "docker-init",
        "runc",
    }
)
# python -S .../dockerup/ports/proxy.py, ...: each lean program by its path in the package.
OWN_SCRIPTS = tuple(f"/dockerup/{path}" for path in PROGRAMS.values())
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
    return parse_sockets(text, TCP_LISTEN)


def parse_udp(text: str) -> list[Listener]:
    """The unconnected bound sockets (servers) of a /proc/net/udp or udp6 table."""
    return parse_sockets(text, UDP_UNCONNECTED)


def parse_sockets(text: str, state: str | None) -> list[Listener]:
    """The sockets of a /proc/net/{tcp,udp}{,6} table in `state` (None: in any)."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        # (A header line, "sl local_address ...", is no socket: tables may be joined.)
        if len(cols) < 10 or not cols[0].endswith(":") or state not in (None, cols[3]):
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


def decide(
    port: int,
    owner: Owner | None,
    rules: AutoPortsSpec,
    *,
    published: set[int],
    workspace: set[int],
    exposed: int,
    proto: str = "tcp",
) -> Verdict:
    """What to do with a new namespace listener's port. `published`: ports of `proto` the
    port manager serves (dockerd publishes them); `workspace`: ports of `proto` a workspace
    socket holds; `exposed`: how many ports are auto-exposed now. (A UDP port reaches here
    only when auto-ports-udp names it: that list is its include.)"""
    if owner is not None and owner.own:
        return Verdict("skip", "docker-up's own listener")
    if port in published:
        return Verdict("skip", "published by dockerd")
    if proto == "tcp" and rules.include and not in_ranges(port, rules.include):
        return Verdict("refuse", "not in auto-ports-include")
    if in_ranges(port, rules.exclude):
        return Verdict("refuse", "in auto-ports-exclude")
    if port in workspace:
        return Verdict("refuse", "in use in the workspace (the workspace's listener keeps it)")
    if exposed >= rules.cap:
        return Verdict(
            "refuse", f"the cap of {rules.cap} auto-exposed ports is reached (auto-ports-max)"
        )
    return Verdict("expose")


def own_process(exe: str, cmdline: list[str]) -> bool:
    name = os.path.basename(exe.removesuffix(" (deleted)"))
    return name in OWN_EXES or any(s in arg for arg in cmdline[:3] for s in OWN_SCRIPTS)


def shim_container(cmdline: list[str]) -> str | None:
    """containerd-shim-runc-v2 -namespace moby -id ID -address ...: the container's id."""
    if "-id" in cmdline[:-1]:
        return cmdline[cmdline.index("-id") + 1]
    return None


# -- the processes behind a socket ------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    return [a for a in read_text(f"/proc/{pid}/cmdline").split("\0") if a]


def _ppid(pid: int) -> int:
    stat = read_text(f"/proc/{pid}/stat")
    try:
        return int(procid.fields(stat)[1])
    except (IndexError, ValueError):
        return 0


def container_of(pid: int) -> str | None:
    """The container a process runs in: the id its containerd shim was started with."""
    for _ in range(64):
        pid = _ppid(pid)
        if pid <= 1:
            return None
        if read_text(f"/proc/{pid}/comm").startswith("containerd-shim"):
            return shim_container(_cmdline(pid))
    return None


def owner_of(pid: int) -> Owner:
    cmd = _cmdline(pid)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = cmd[0] if cmd else ""
    return Owner(pid, one_line(cmd), container_of(pid), own_process(exe, cmd))


def one_line(cmd: list[str]) -> str:
    """A command as one short line, whatever its arguments hold (python3 -c's script): it
    goes into the log and the ports table."""
    return " ".join(" ".join(cmd).split())[:120]


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
