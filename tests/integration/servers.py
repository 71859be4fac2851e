"""The workspace's side of the network tests: free ports, servers on its loopback and the
clients that ask them, and a web container to publish. Shared by the integration modules
(no test module imports another)."""

from __future__ import annotations

import os
import socket
import threading

from .harness import Workspace

OTHER_ADDR = "10.99.0.1"  # a second workspace address, on the test namespace's own lo

# Ports free_port gave in this process (each xdist worker is one).
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing uses on any address, never the same twice in a run, and below the
    kernel's ephemeral range (32768 up): a parallel test's client connection cannot take it
    between here and the `docker run -p` that publishes it. Each worker has its own range."""
    base = 20000 + 2000 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    for port in range(base, base + 2000):
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port in {base}..{base + 1999}")


def http_get(addr: str, port: int) -> str:
    try:
        with socket.create_connection((addr, port), timeout=5) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError as e:
        return f"error: {e}"
    return data.decode(errors="replace")


def udp_echo(port: int, payload: bytes = b"ping") -> bytes:
    """One datagram, one answer: the caller waited until the server inside is bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65536)
        except TimeoutError:
            return b""


def udp_bound(ws: Workspace, container: str, port: int) -> bool:
    """Is a UDP socket bound to this port inside the container? (A datagram that arrives
    before would be answered by "port unreachable" and lost.)"""
    r = ws.docker("exec", container, "cat", "/proc/net/udp", check=False)
    return f":{port:04X} " in r.stdout


def container_listens(ws: Workspace, container: str, port: int) -> bool:
    """Does a TCP socket listen on this port inside the container? A published port's proxy
    accepts a client at once; if the container's server did not listen yet, the proxy's
    connect into it is refused and the client is left holding a closed connection."""
    out = ws.docker("exec", container, "netstat", "-tln", check=False).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("tcp")]
    return any(len(r) > 3 and r[3].endswith(f":{port}") for r in rows)


WEB = "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"


def web_container(ws: Workspace, name: str, body: str, *publish: str) -> None:
    """A container `name` whose web server on port 80 answers `body`, published as asked
    (-p HOST:80, -P --expose 80, or nothing)."""
    ws.docker("run", "-d", "--name", name, *publish, "bb:test", "sh", "-c", WEB.format(body=body))


# A TCP server for inside the namespace (python3 -c SERVER PORT ADDRESS): answers "ns-server".
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[1]))); s.listen(64)
while True:
    c, _ = s.accept(); c.sendall(b"ns-server\\n"); c.close()
"""


def answer(port: int, address: str = "127.0.0.1") -> str:
    """What a server at address:port says first, or the error."""
    try:
        with socket.create_connection((address, port), timeout=2) as c:
            return c.recv(100).decode()
    except OSError as e:
        return f"error: {e}"


def listener(
    family: int = socket.AF_INET, address: str = "127.0.0.1", backlog: int = 128
) -> socket.socket:
    """A listening TCP socket on a free port of `address`."""
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(backlog)
    return sock


class CountingServer:
    """A TCP server (the workspace's 127.0.0.1 unless given a listening socket) that answers
    `reply` and counts who came: what a container reached, seen from the server's side."""

    def __init__(
        self, reply: bytes = b"secret\n", backlog: int = 128, sock: socket.socket | None = None
    ) -> None:
        self.sock = sock or listener(backlog=backlog)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.reply = reply
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.count += 1
            with c:
                c.sendall(self.reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()
