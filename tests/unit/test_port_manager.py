"""The keeper's port manager with the splice forwarder, on this machine's loopback: a
proxy's request, the workspace listener, the hand-over of each client's fd, refusals, and
the port freed when the proxy goes. (The real stack: tests/integration/test_ports.py.)"""

from __future__ import annotations

import json
import socket

import pytest

from dockerup.ports.manager import PortManager
from dockerup.ports.proxy import FdStream
from dockerup.wire.messages import PortReply

from .loopback import MakePortManager, request, serve_ready


@pytest.fixture
def manager(port_manager: MakePortManager) -> tuple[PortManager, str, list[str]]:
    return port_manager()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_published_port_hands_each_client_to_the_proxy(
    manager: tuple[PortManager, str, list[str]],
) -> None:
    m, addr, logged = manager
    port = free_port()
    proxy = request(addr, host_port=port)
    serve_ready(m)
    stream = FdStream(proxy)
    assert PortReply.from_json(stream.readline()) == PortReply(hand_over=True)
    client = socket.create_connection(("127.0.0.1", port), timeout=2)
    serve_ready(m)  # the listener is readable: the client goes to the proxy
    fd = stream.next_fd()
    assert fd is not None
    with socket.socket(fileno=fd) as handed, client:
        client.sendall(b"ping")
        assert handed.recv(4) == b"ping"  # the very connection the client made
    assert any("published 127.0.0.1:" in line for line in logged)
    # The proxy goes (container stopped): the port is free again, in the workspace.
    proxy.close()
    serve_ready(m)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert any("unpublished" in line for line in logged)


def test_a_port_in_use_and_a_bad_request_are_refused_with_words(
    manager: tuple[PortManager, str, list[str]],
) -> None:
    m, addr, _ = manager
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy = request(addr, host_port=taken.getsockname()[1])
        serve_ready(m)
        reply = json.loads(FdStream(proxy).readline())
        assert "already in use in the workspace" in reply["error"]
    bad = socket.socket(socket.AF_UNIX)
    bad.connect(addr)
    bad.sendall(b'{"proto": "tcp"}\n')
    serve_ready(m)
    assert "bad port request" in json.loads(FdStream(bad).readline())["error"]
    assert m.fds() == [m.server.fileno()]  # nothing kept for either


def test_the_proxys_pump_never_asks_tcp_to_hold_a_reply_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPLICE_F_MORE into a socket is MSG_MORE: TCP then keeps a short reply for its 200 ms
    cork timer, and every request/response through a published port took 200 ms longer."""
    import os

    from dockerup.ports import proxy as portproxy

    into_sockets: list[int] = []
    real = os.splice

    def splice(src: int, dst: int, count: int, *args: int, flags: int = 0) -> int:
        if dst in (b.fileno(), a2.fileno()):
            into_sockets.append(flags)
        return real(src, dst, count, *args, flags=flags)

    a1, a2 = socket.socketpair()
    b, b2 = socket.socketpair()
    monkeypatch.setattr(portproxy.os, "splice", splice)
    a1.sendall(b"GET / HTTP/1.0\r\n\r\n")
    a1.shutdown(socket.SHUT_WR)
    portproxy.pump(a2, b)  # client -> container, until the client's EOF
    assert b2.recv(100) == b"GET / HTTP/1.0\r\n\r\n"
    assert into_sockets and not any(f & os.SPLICE_F_MORE for f in into_sockets)
    for s in (a1, a2, b, b2):
        s.close()


@pytest.mark.parametrize(
    ("families", "client", "family", "source"),
    [
        ("4 6", ("192.168.88.2", 1), socket.AF_INET, "192.168.88.2"),
        ("4 6", ("fd79::2", 1), socket.AF_INET6, "fd79::2"),
        ("4", ("fd79::2", 1), socket.AF_INET6, None),  # IPv6 replies not routed back
        ("4 6", ("fd79::2", 1), socket.AF_INET, None),  # an IPv4 container: the proxy's
        ("4 6", ("::ffff:192.168.88.2", 1), socket.AF_INET, "192.168.88.2"),
        ("4 6", ("127.0.0.1", 1), socket.AF_INET, None),  # a container cannot answer these
        ("4 6", ("::1", 1), socket.AF_INET6, None),
        ("", ("192.168.88.2", 1), socket.AF_INET, "192.168.88.2"),  # a marker of before
    ],
)
def test_which_client_addresses_the_proxy_connects_from(
    tmp_path: object, families: str, client: tuple[str, int], family: int, source: str | None
) -> None:
    from pathlib import Path

    from dockerup.ports import proxy as portproxy

    marker = Path(str(tmp_path)) / "client-address"
    marker.write_text(families)
    portproxy.TRANSPARENT["marker"] = str(marker)
    try:
        assert portproxy.from_client(client, family) == source
        marker.unlink()  # no marker: client addresses are off, or setting them up failed
        assert portproxy.from_client(client, family) is None
    finally:
        portproxy.TRANSPARENT["marker"] = None
