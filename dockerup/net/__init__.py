"""Network drivers: what wires docker-up's network namespace to the workspace."""

from __future__ import annotations

from typing import Protocol


class NetworkDriver(Protocol):
    """A user-space network helper started by the parent against the child's namespaces."""

    name: str
    mtu: int
    options_used: tuple[str, ...]  # optional features switched on, for the log and status

    def argv(
        self,
        target_pid: int | str,
        ready_fd: int | str,
        exit_fd: int | str,
        netns_path: str | None = None,
        userns_path: str | None = None,
    ) -> list[str]:
        """The helper's command line; it writes to ready_fd once the namespace is wired,
        and exits when exit_fd is closed (so it never outlives docker-up)."""
        ...
