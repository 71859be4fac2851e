"""Stdlib-only helpers shared by the lean processes (keeper, bench) and the CLI."""

from __future__ import annotations

import socket
from pathlib import Path


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
