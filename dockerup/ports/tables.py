"""What the keeper tells `docker-up ports` (stdlib only): the ports it publishes for dockerd
(ports/manager.py) and the ones it auto-exposes or refuses (autoports/scanner.py), as
typed documents beside each other in the runtime directory, each written atomically by the
one thread that owns it. Read back with from_json, which refuses fields it does not know: a
keeper and a CLI of different versions fail by name, not by a missing key later."""

from __future__ import annotations

import dataclasses

from dockerup.wire.specs import Spec

# The port forwarders docker-up knows; the first is the default (ports/manager.py). Here,
# beside the tables, so that the settings can name them without loading the manager.
FORWARDERS = ("splice", "slirp")

TABLE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PublishedPort(Spec):
    """One port dockerd publishes (docker run -p) and the keeper serves in the workspace."""

    proto: str  # "tcp" or "udp"
    host_ip: str  # the workspace's address: 0.0.0.0, ::, 127.0.0.1, ...
    host_port: int
    container_ip: str
    container_port: int


@dataclasses.dataclass(frozen=True)
class PublishedTable(Spec):
    version: int
    ports: list[PublishedPort]


@dataclasses.dataclass(frozen=True)
class AutoPort(Spec):
    """A namespace listener's port: exposed (addresses) or refused (reason)."""

    port: int
    proto: str
    pid: int | None  # the process holding the listener (None: not found)
    command: str
    container: str | None  # the container's id, for a container's process
    addresses: list[str] = dataclasses.field(default_factory=list)  # where it answers
    reason: str = ""  # why it was refused


@dataclasses.dataclass(frozen=True)
class AutoTable(Spec):
    version: int
    auto: list[AutoPort]
    refused: list[AutoPort]
