"""User settings, as frozen data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MTU_MIN, MTU_MAX = 1280, 65520


class Storage(StrEnum):
    auto = "auto"
    overlay2 = "overlay2"
    fuse_overlayfs = "fuse-overlayfs"
    vfs = "vfs"


@dataclass(frozen=True)
class Config:
    mtu: int = 65520
    allow_host_loopback: bool = False
    start_timeout: float = 60.0
    storage: Storage = Storage.auto
    stop_timeout: float = 30.0
    mode: str = "auto"
    # privileged mode only: dockerd in the current network namespace, no slirp4netns.
    host_network: bool = False
    # An extra TCP listener for dockerd ("ADDR:PORT"); only ever with TLS client verification.
    tcp: str | None = None
    tls_dir: str | None = None  # holds ca.pem, cert.pem, key.pem
    port_forwarder: str = "splice"  # or "slirp": see dockerup/ports.py
