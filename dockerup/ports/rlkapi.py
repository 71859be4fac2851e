"""A RootlessKit-compatible API for dockerd 28 and later, served by docker-up itself.

dockerd 28's bridge driver, in rootless mode, asks RootlessKit's REST API
($ROOTLESSKIT_STATE_DIR/api.sock) which network and port drivers run, and tells it about
every published port (POST /v1/ports, DELETE /v1/ports/ID); without the variable it refuses
to start. docker-up is its own RootlessKit: this module answers those calls. The ports
themselves still reach the workspace through docker-up's port proxy (ports/manager.py): the table
kept here tells the keeper which workspace address a port proxy's request stands for, since
dockerd 28 hands the proxy the namespace-side address (127.0.0.1 for 0.0.0.0), not the
workspace's.

The protocol (rootlesskit pkg/api, API 1.1.1): HTTP/1.1 over a unix socket, JSON bodies,
errors as {"message": ...} with a non-2xx status. Every answer closes its connection, so no
idle keep-alive connection outlives the process that answered it (the CLI answers while
dockerd starts, the keeper from then on).

Stdlib only: it runs in the keeper (python -S).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from dockerup.wire.specs import ApiInfo, PortSpec, Spec, SpecError

API_VERSION = "1.1.1"
MAX_HEAD = 16384  # bytes of request line and headers
MAX_BODY = 65536
TIMEOUT = 2.0  # seconds a client may take to send its request: the keeper serves alone
PROTOS_SPLICE = ("tcp", "tcp4", "tcp6", "udp", "udp4", "udp6")
# slirp4netns' own forwarding carries IPv4 to the namespace's tap address only.
PROTOS_SLIRP = ("tcp", "tcp4", "udp", "udp4")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_port(doc: object, protos: Sequence[str]) -> PortSpec:
    """A POST /v1/ports body as a PortSpec, or ApiError 400 saying what is wrong."""
    try:
        spec = PortSpec.from_dict(doc)
    except SpecError as e:
        raise ApiError(400, str(e)) from None
    if spec.proto not in protos:
        raise ApiError(400, f"protocol {spec.proto!r} is not supported (only {', '.join(protos)})")
    for port in (spec.parentPort, spec.childPort):
        if not 1 <= port <= 65535:
            raise ApiError(400, f"port {port!r} is not in 1-65535")
    for ip in (spec.parentIP, spec.childIP):
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ApiError(400, f"{ip!r} is not an IP address") from None
    return spec


# GET /v1/info's answer, as rootlesskit's api.Info spells it (the field names are the wire's).
@dataclass(frozen=True)
class NetworkDriverInfo(Spec):
    driver: str
    dns: list[str]
    childIP: str


@dataclass(frozen=True)
class PortDriverInfo(Spec):
    driver: str
    protos: list[str]
    disallowLoopbackChildIP: bool


@dataclass(frozen=True)
class InfoDocument(Spec):
    apiVersion: str
    version: str
    stateDir: str
    childPID: int
    networkDriver: NetworkDriverInfo
    portDriver: PortDriverInfo


def info_document(info: ApiInfo) -> InfoDocument:
    return InfoDocument(
        API_VERSION,
        info.version,
        info.state_dir,
        info.child_pid,
        NetworkDriverInfo(info.network_driver, [info.dns], info.child_ip),
        PortDriverInfo(info.port_driver, list(info.protos), info.disallow_loopback_child_ip),
    )


class RootlessKitApi:
    """The API's state (the port table) and its answers. Thread-safe: the CLI serves it on a
    thread while dockerd starts, then hands it on to the keeper."""

    def __init__(self, info: ApiInfo, ports: dict[int, PortSpec] | None = None) -> None:
        self.info = info
        self.ports: dict[int, PortSpec] = dict(ports or {})
        self.next_id = max(self.ports, default=0) + 1
        self.lock = threading.Lock()

    # -- the table ------------------------------------------------------------------------

    def add(self, spec: PortSpec) -> int:
        with self.lock:
            for pid, old in self.ports.items():
                if old.overlaps(spec):
                    raise ApiError(
                        409,
                        f"port {spec.parentIP or '*'}:{spec.parentPort}/{spec.kind} conflicts "
                        f"with forward {pid} ({old.parentIP or '*'}:{old.parentPort})",
                    )
            pid = self.next_id
            self.next_id += 1
            self.ports[pid] = spec
            return pid

    def remove(self, pid: int) -> None:
        with self.lock:
            if self.ports.pop(pid, None) is None:
                raise ApiError(404, f"no port forward with id {pid}")

    def restarted(self, child_pid: int) -> None:
        """A new dockerd knows none of the old one's forwards; it adds its own again."""
        with self.lock:
            self.ports.clear()
            self.info = replace(self.info, child_pid=child_pid)

    def parent_of(self, kind: str, child_ip: str, child_port: int) -> str | None:
        """The workspace address that dockerd asked for, for the namespace address it
        gave its port proxy; None: no such forward (dockerd before 28 asks none)."""
        with self.lock:
            for spec in self.ports.values():
                if (
                    spec.kind == kind
                    and spec.childPort == child_port
                    and (_same_ip(spec.childIP, child_ip))
                ):
                    return spec.parentIP or ("::" if ":" in child_ip else "0.0.0.0")
        return None

    @classmethod
    def restore(cls, info: ApiInfo, snapshot: dict[str, PortSpec]) -> RootlessKitApi:
        """The API as the CLI left it (snapshot()), in the keeper."""
        return cls(info, {int(k): v for k, v in snapshot.items()})

    def snapshot(self) -> dict[str, PortSpec]:
        with self.lock:
            return {str(k): v for k, v in self.ports.items()}

    # -- HTTP -----------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        path = path.split("?", 1)[0].rstrip("/")
        if path == "/v1/info" and method == "GET":
            return 200, asdict(info_document(self.info))
        if path == "/v1/ports" and method == "GET":
            with self.lock:
                return 200, [{"id": k, "spec": asdict(v)} for k, v in self.ports.items()]
        if path == "/v1/ports" and method == "POST":
            try:
                doc = json.loads(body or b"null")
            except ValueError:
                raise ApiError(400, "the body is not JSON") from None
            spec = parse_port(doc, self.info.protos)
            return 201, {"id": self.add(spec), "spec": asdict(spec)}
        if path.startswith("/v1/ports/") and method == "DELETE":
            tail = path.removeprefix("/v1/ports/")
            if not tail.isdigit():
                raise ApiError(400, f"{tail!r} is not a port forward id")
            self.remove(int(tail))
            return 200, None
        raise ApiError(404, f"no such endpoint: {method} {path}")

    def serve(self, conn: socket.socket) -> None:
        """One request on an accepted connection, answered, then closed."""
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                method, path, body = read_request(conn)
                status, doc = self.answer(method, path, body)
            except ApiError as e:
                status, doc = e.status, {"message": str(e)}
            except (OSError, ValueError):
                return  # a client that sent no proper request gets nothing
            with contextlib.suppress(OSError):
                conn.sendall(response(status, doc))


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
}


def response(status: int, doc: object) -> bytes:
    body = b"" if doc is None else json.dumps(doc).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def read_request(conn: socket.socket) -> tuple[str, str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ValueError("the client closed before its request ended")
        data += chunk
        if len(data) > MAX_HEAD + MAX_BODY:
            raise ApiError(400, "request too large")
    head, _, body = data.partition(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ApiError(400, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("not an HTTP request line")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ApiError(400, "chunked bodies are not supported")
    length = int(headers.get("content-length", "0") or "0")
    if not 0 <= length <= MAX_BODY:
        raise ApiError(400, "body too large")
    while len(body) < length:
        chunk = conn.recv(min(65536, length - len(body)))
        if not chunk:
            raise ValueError("the client closed before its body ended")
        body += chunk
    return parts[0], parts[1], body[:length]


class ApiThread:
    """Answers on a thread while the CLI waits for dockerd (dockerd 28 asks for the info
    before its API answers, so the keeper, which starts after, cannot). stop() returns once
    no request is half-answered: what comes later waits in the listener's backlog for the
    keeper."""

    def __init__(self, api: RootlessKitApi, server: socket.socket) -> None:
        self.api = api
        self.server = server
        self.stopping = threading.Event()
        self.r, self.w = socket.socketpair()
        self.thread = threading.Thread(target=self.run, name="rootlesskit-api", daemon=True)

    def __enter__(self) -> ApiThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        import select

        while not self.stopping.is_set():
            ready, _, _ = select.select([self.server, self.r], [], [])
            if self.r in ready:
                return
            try:
                conn, _ = self.server.accept()
            except (BlockingIOError, OSError):
                continue
            self.api.serve(conn)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.stopping.set()
        self.w.send(b"x")
        self.thread.join()
        self.r.close()
        self.w.close()
