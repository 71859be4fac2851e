"""Wait until file descriptors are readable (stdlib only: the keeper and lazy use it too).

poll(2), not select(2): select cannot watch an fd numbered 1024 or more (Python raises
ValueError), and a keeper that serves many published-port connections gets there; it
would then exit without its shutdown.
"""

from __future__ import annotations

import select
from collections.abc import Iterable

READABLE = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


def readable(fds: Iterable[int], timeout: float | None = None) -> set[int]:
    """The fds among these that are readable, hung up or in error, waiting at most timeout
    seconds (None: until one is)."""
    p = select.poll()
    for fd in set(fds):
        p.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000))
    return {fd for fd, events in p.poll(ms) if events & READABLE}
