"""What every network driver is to its callers: NetworkDriver, and the argv template that
namespace/netstart.py fills in at each start."""

from __future__ import annotations

from typing import Protocol


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

    @property
    def ipv6(self) -> bool:
        """The helper carries IPv6 too (GUEST_ADDR6 routed via GATEWAY6)."""
        ...

    @property
    def ready_fifo(self) -> bool:
        """The helper closes every fd it inherits (today's pasta): it reports readiness on
        a named pipe whose path argv() gets as ready_fd, not on an inherited pipe."""
        ...

    def argv(self, target_pid: int | str, ready_fd: int | str, exit_fd: int | str) -> list[str]:
        """The helper's command line; it writes to ready_fd once the namespace is wired,
        and exits when exit_fd is closed (so it never outlives docker-up)."""
        ...

    def ipv6_commands(self, ip: str) -> list[list[str]]:
        """What the namespace itself must run (with iproute2's `ip`) once the helper is
        ready, for the IPv6 address and route the helper does not set."""
        ...


def argv_template(net: NetworkDriver) -> list[str]:
    """The helper's command line with {target}, {ready_fd} and {exit_fd} left to fill in:
    what namespace/netstart.py starts, at first and after every restart."""
    return net.argv("{target}", "{ready_fd}", "{exit_fd}")
