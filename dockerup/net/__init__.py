"""Network drivers: what wires docker-up's network namespace to the workspace."""

from __future__ import annotations

import socket
from typing import Protocol

# The drivers docker-up knows; the first is the default.
NET_DRIVERS = ("slirp4netns", "pasta")


class NetworkDriver(Protocol):
    """A user-space network helper started by the parent against the child's namespaces."""

    @property
    def name(self) -> str: ...

    @property
    def mtu(self) -> int: ...

    @property
    def options_used(self) -> tuple[str, ...]:
        """Optional features switched on, for the log and status."""
        ...

    def argv(self, target_pid: int | str, ready_fd: int | str, exit_fd: int | str) -> list[str]:
        """The helper's command line; it writes to ready_fd once the namespace is wired,
        and exits when exit_fd is closed (so it never outlives docker-up)."""
        ...


def routes(route_table: str) -> list[tuple[int, int]]:
    """(destination, mask) of each IPv4 route in a /proc/PID/net/route table, host order.
    The kernel prints each network-order word as a native integer. Stdlib only: the
    keeper's acceleration agent uses it too."""
    out = []
    for line in route_table.splitlines()[1:]:
        f = line.split()
        if len(f) > 7:
            out.append((socket.ntohl(int(f[1], 16)), socket.ntohl(int(f[7], 16))))
    return out
