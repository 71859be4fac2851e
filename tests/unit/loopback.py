"""The keeper's peers, played on this machine's loopback: free ports, an AutoPorts whose
namespace is a list the test writes, and what a port proxy says to the port manager.
Shared by the tests of auto ports, of the port manager and of `docker-up ports`."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

from dockerup.autoports.rules import Listener, Owner
from dockerup.autoports.scanner import AutoPorts
from dockerup.linux.fdwait import readable
from dockerup.ports.manager import PortManager
from dockerup.wire.specs import AutoPortsSpec

PERSON = Owner(10, "python3 -m http.server")


def free_ports(n: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> list[int]:
    """n ports of that kind free on 127.0.0.1 a moment ago."""
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Fake(AutoPorts):
    """AutoPorts whose namespace is a list the test writes."""

    def __init__(self, spec: AutoPortsSpec) -> None:
        self.logged: list[str] = []
        super().__init__(spec, {"net": 0}, self.logged.append, set)
        self.inside: list[Listener] = []
        self.inside_udp: list[Listener] = []

    def namespace_listeners(self, proto: str = "tcp") -> list[Listener]:
        return self.inside if proto == "tcp" else self.inside_udp

    def lookup_owners(self, inodes: set[int]) -> None:
        self.owners.update({i: PERSON for i in inodes})


# The conftest's factories: auto_ports(cap=, udp=) and port_manager(table=).
MakeAutoPorts = Callable[..., Fake]
MakePortManager = Callable[..., tuple[PortManager, str, list[str]]]


def serve_ready(m: PortManager) -> None:
    """What the keeper's loop does: handle every fd that is readable now."""
    for fd in readable(m.fds(), 1.0):
        m.handle(fd)


def request(addr: str, **req: object) -> socket.socket:
    proxy = socket.socket(socket.AF_UNIX)
    proxy.connect(addr)
    doc = {
        "proto": "tcp",
        "host_ip": "127.0.0.1",
        "host_port": 0,
        "container_ip": "172.17.0.2",
        "container_port": 80,
    } | req
    proxy.sendall((json.dumps(doc) + "\n").encode())
    return proxy
