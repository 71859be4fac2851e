"""/proc's route and address tables, parsed (stdlib only, pure): what the host's facts,
the namespace's check and the acceleration agent read of a network namespace."""

from __future__ import annotations


def route_rows(route_table: str) -> list[tuple[int, int, int]]:
    """(destination, gateway, mask) of each IPv4 route in a /proc/PID/net/route table, host
    order. The kernel prints each network-order word as a native integer."""
    import socket

    out = []
    for line in route_table.splitlines()[1:]:
        f = line.split()
        if len(f) > 7:
            dest, gw, mask = (socket.ntohl(int(f[i], 16)) for i in (1, 2, 7))
            out.append((dest, gw, mask))
    return out


def routes(route_table: str) -> list[tuple[int, int]]:
    """(destination, mask) of each IPv4 route, host order."""
    return [(dest, mask) for dest, _, mask in route_rows(route_table)]


def ipv6_default_gateways(ipv6_route: str) -> list[str]:
    """Gateways of the usable IPv6 default routes in a /proc/PID/net/ipv6_route table ("::"
    for one without a gateway), compressed. Reject routes (the kernel's unreachable default
    on lo) do not count."""
    out = []
    for line in ipv6_route.splitlines():
        f = line.split()
        if len(f) < 10 or f[0] != "0" * 32 or f[1] != "00" or f[9] == "lo":
            continue
        if int(f[8], 16) & 0x0200:  # RTF_REJECT
            continue
        out.append(ipv6_text(f[4]))
    return out


def ipv6_text(hex32: str) -> str:
    """An address as /proc prints it (32 hex digits) in compressed text. (Not ipaddress:
    its import costs every start about 3 ms.)"""
    import socket

    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex32))


def ipv6_addresses(if_inet6: str) -> list[tuple[str, int, str]]:
    """(address, prefix length, device) of each row of a /proc/PID/net/if_inet6 table."""
    rows = (line.split() for line in if_inet6.splitlines())
    return [(ipv6_text(f[0]), int(f[2], 16), f[5]) for f in rows if len(f) == 6]


def default_gateways(route_table: str) -> list[str]:
    """Gateways of the IPv4 default routes, dotted."""
    import socket
    import struct

    return [
        socket.inet_ntoa(struct.pack("!I", gw))
        for dest, gw, mask in route_rows(route_table)
        if dest == 0 and mask == 0
    ]
