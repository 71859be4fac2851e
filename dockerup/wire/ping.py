"""Stdlib-only helpers shared by the lean processes (keeper, bench) and the CLI."""

from __future__ import annotations

import socket
from pathlib import Path


def ping_request(sock: str | Path) -> socket.socket | None:
    """A /_ping sent, its answer still to come (None: nothing listens yet). For a caller
    that must go on serving others while a booting dockerd takes its time to answer."""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    except OSError:
        s.close()
        return None
    return s


def ping_answered(s: socket.socket) -> bool:
    """Once the socket of ping_request is readable: was the answer 200?"""
    try:
        return s.recv(32).split(b" ")[1:2] == [b"200"]
    except (OSError, IndexError):
        return False


def ping(sock: str | Path, timeout: float = 2.0) -> bool:
    """Does a Docker Engine answer /_ping on this unix socket? A raw request: the lean
    processes must not import the docker SDK for it."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(32).split(b" ")[1:2] == [b"200"]
    except (OSError, IndexError):
        return False
