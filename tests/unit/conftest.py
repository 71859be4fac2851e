"""Fixtures the unit test modules share: the keeper's port bookkeeping on this machine's
loopback, made by the test and undone when it ends (ports released, sockets closed)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockerup.ports.manager import PortManager, SpliceForwarder
from dockerup.wire.specs import AutoPortsSpec

from .loopback import Fake, MakeAutoPorts, MakePortManager


@pytest.fixture
def auto_ports(tmp_path: Path) -> Iterator[MakeAutoPorts]:
    """Makes Fake AutoPorts (at most `cap` ports, UDP only on the `udp` ports), its table in
    tmp_path; whatever they still expose is released at the end."""
    made: list[Fake] = []

    def make(cap: int = 2, udp: tuple[int, ...] | list[int] = ()) -> Fake:
        table = str(tmp_path / f"auto-{len(made)}.json")
        spec = AutoPortsSpec(
            include=[], exclude=[], cap=cap, table=table, udp=[[p, p] for p in udp]
        )
        made.append(Fake(spec))
        return made[-1]

    yield make
    for a in made:
        a.release(list(a.exposed))


@pytest.fixture
def port_manager() -> Iterator[MakePortManager]:
    """Makes a port manager with the splice forwarder, its log kept in a list, and gives
    (manager, its address, the log); closed at the end. The address is abstract (nothing on
    disk) and this process's own: another suite on this machine binds its own."""
    made: list[PortManager] = []

    def make(table: str | None = None) -> tuple[PortManager, str, list[str]]:
        address = f"\0docker-up-test-ports-{os.getpid()}-{len(made)}"
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen()
        logged: list[str] = []
        made.append(PortManager(server, SpliceForwarder(), logged.append, table=table))
        return made[-1], address, logged

    yield make
    for m in made:
        m.close()
