"""What the acceleration agent's policy (accel/policy.py's decide) asks of the machine, stdlib
only: the networks of docker-up's namespace (its route table, parsed) and whether an
address is one of the workspace's own (asked of the kernel at the moment of the
decision)."""

from __future__ import annotations

import contextlib
import errno
import functools
import socket

from dockerup.files import read_text
from dockerup.linux.routes import routes


@functools.lru_cache(maxsize=8)
def connected_networks(route_table: str) -> list[tuple[int, int]]:
    """(network, mask) of every route but the default one, from /proc/PID/net/route of
    docker-up's namespace: docker's bridges and the helper's 10.0.2.0/24. Host order.
    Cached by the table's text: read afresh for each decision, parsed only when it changed."""
    return [(dest, mask) for dest, mask in routes(route_table) if mask != 0]


NONLOCAL_BIND = read_text("/proc/sys/net/ipv4/ip_nonlocal_bind").strip() not in ("", "0")


def workspace_address(addr: bytes) -> bool:
    """Is this IPv4 address one of the workspace's own, now? The kernel binds only its own
    addresses (EADDRNOTAVAIL for any other), asked at the moment of the decision, so an
    address added a moment ago counts. Where non-local binds are allowed the answer would
    be yes for everything; the local routing table (fib_trie) answers instead. Any other
    error counts as "ours": the agent then refuses rather than reach the workspace."""
    if NONLOCAL_BIND:
        return addr in local_addresses(read_text("/proc/net/fib_trie"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((socket.inet_ntoa(addr), 0))
        except OSError as e:
            return e.errno != errno.EADDRNOTAVAIL
    return True


def local_addresses(fib_trie: str) -> set[bytes]:
    """The addresses of /proc/net/fib_trie's local table ("/32 host LOCAL" leaves)."""
    found, last = set(), ""
    for line in fib_trie.splitlines():
        word = line.strip()
        if word.startswith("|--"):
            last = word[3:].strip()
        elif word.startswith("+--"):
            last = ""
        elif word.startswith("/32 host LOCAL") and last:
            with contextlib.suppress(OSError):
                found.add(socket.inet_aton(last))
    return found
