"""Check what the network helper set up in docker-up's namespace, before dockerd starts
(stdlib only: ioctls and /proc, about a millisecond; the earlier pyroute2 check, run beside
a booting dockerd, cost every start about 30 ms, docs/performance.md)."""

from __future__ import annotations

import socket
import struct

from dockerup.linux import libc as linux
from dockerup.linux.routes import default_gateways, ipv6_addresses, ipv6_default_gateways
from dockerup.wire.specs import NetCheck

__all__ = ["default_gateways", "problems"]


def _ipv4(ifreq: bytes) -> str:
    # struct ifreq: the name (16 bytes), then a sockaddr_in: family, port, address.
    return socket.inet_ntoa(ifreq[20:24])


def ipv6_problems(spec: NetCheck, if_inet6: str, ipv6_route: str) -> list[str]:
    if spec.address6 is None:
        return []
    found = []
    have = [f"{a}/{n}" for a, n, dev in ipv6_addresses(if_inet6) if dev == spec.tap]
    if spec.address6 not in have:
        found.append(f"{spec.tap} has IPv6 {have or 'none'}, not {spec.address6}")
    gateways = ipv6_default_gateways(ipv6_route)
    if spec.gateway6 not in gateways:
        found.append(f"IPv6 default route via {gateways or 'none'}, not {spec.gateway6}")
    return found


def problems(
    spec: NetCheck, route_table: str, if_inet6: str = "", ipv6_route: str = ""
) -> list[str]:
    """What differs from what the helper should have set up; [] when all is as planned."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if not linux.if_flags(s, "lo") & linux.IFF_UP:
            found.append("lo is not up")
        try:
            mtu = struct.unpack_from("i", linux.ifreq(s, linux.SIOCGIFMTU, spec.tap), 16)[0]
        except OSError:
            return [*found, f"{spec.tap} does not exist"]
        if mtu != spec.mtu:
            found.append(f"{spec.tap} MTU is {mtu}, not {spec.mtu}")
        try:
            addr = _ipv4(linux.ifreq(s, linux.SIOCGIFADDR, spec.tap))
            mask = _ipv4(linux.ifreq(s, linux.SIOCGIFNETMASK, spec.tap))
        except OSError:
            addr, mask = "no address", "0.0.0.0"
        prefixlen = bin(struct.unpack("!I", socket.inet_aton(mask))[0]).count("1")
        if (addr, prefixlen) != (spec.address, spec.prefixlen):
            found.append(f"{spec.tap} has {addr}/{prefixlen}, not {spec.address}/{spec.prefixlen}")
    gateways = default_gateways(route_table)
    if spec.gateway not in gateways:
        found.append(f"default route via {gateways}, not {spec.gateway}")
    return found + ipv6_problems(spec, if_inet6, ipv6_route)
