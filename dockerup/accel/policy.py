"""What the acceleration agent (accel.py) does with one connect(): one pure function,
decide(), of the agent's copy of the address and what it knows of the socket. Stdlib only;
no I/O here: what the namespace's networks are and which addresses are the workspace's own
(accel/nets.py) are asked through callables, only when they matter."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dockerup.net.addresses import GATEWAY as GATEWAY_ADDR

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


def decide(
    raw: bytes,
    *,
    allow_host_loopback: bool,
    swapped: bool,
    fresh_tcp: bool,
    nets: Callable[[], list[tuple[int, int]]],
    local: Callable[[bytes], bool] = lambda _: False,
) -> Decision:
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


def outside(addr: bytes, nets: list[tuple[int, int]]) -> bool:
    """Does an IPv4 address lie outside the namespace's own networks (reached only through
    the default route, the helper), and outside the container's own loopback? Without a
    route table (it always has the helper's 10.0.2.0/24) nothing counts as outside."""
    if not nets:
        return False
    ip = struct.unpack("!I", addr)[0]
    return not any(ip & mask == net & mask for net, mask in (*NEVER, *nets))
