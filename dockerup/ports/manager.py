"""Published ports: make a port that dockerd publishes inside its namespace answer in the
workspace too. Stdlib only: it runs in the keeper and in the proxy that dockerd starts.

How it fits together: daemon.json points dockerd's `userland-proxy-path` at docker-up's port
proxy (ports/proxy.py), which dockerd runs inside the namespace for every published port,
with docker-proxy's arguments. The proxy asks the keeper's PortManager, over a unix socket,
to expose the port in the workspace; a refusal (port in use, port below 1024) becomes
docker run's error, as with docker-proxy. The connection stays open while the proxy runs:
when dockerd stops the proxy (container stopped), the keeper sees EOF and frees the port.

Two forwarders behind the PortForwarder protocol:
- slirp: slirp4netns' own API (add_hostfwd/remove_hostfwd): slirp4netns listens in the
  workspace and sends the traffic through its user-space stack (every byte copied twice).
- splice (default): the keeper listens in the workspace and hands each accepted connection
  (the fd itself, SCM_RIGHTS) to the proxy inside the namespace, which connects to the
  container and moves bytes with splice(2), in the kernel.
UDP, for both: the keeper binds the port in the workspace and hands the socket to the proxy,
which relays datagrams to the container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from dockerup.files import atomic_write
from dockerup.logs import QuietLog
from dockerup.net.addresses import GUEST_ADDR
from dockerup.ports.tables import FORWARDERS, TABLE_VERSION, PublishedPort, PublishedTable
from dockerup.wire.messages import HostFwd, HostFwdId, PortReply, PortRequest, SlirpRefusal, line
from dockerup.wire.specs import Spec, SpecError

if TYPE_CHECKING:
    from dockerup.ports.rlkapi import RootlessKitApi


class PortError(Exception):
    pass


def bind_error(req: PortRequest, e: OSError) -> PortError:
    if e.errno == errno.EADDRINUSE:
        return PortError(f"port {req.label()} is already in use in the workspace")
    if e.errno == errno.EACCES and req.host_port < 1024:
        return PortError(
            f"port {req.host_port} is below 1024, which only root may bind in the workspace; "
            "publish a port of 1024 or above (-p 8080:80), or as root: "
            "sysctl net.ipv4.ip_unprivileged_port_start=0"
        )
    return PortError(f"cannot bind {req.label()} in the workspace: {e.strerror}")


class Exposed(Protocol):
    def close(self) -> None: ...


class PortForwarder(Protocol):
    name: str

    def expose(self, req: PortRequest, proxy: socket.socket) -> Exposed:
        """Make req's port answer in the workspace, or raise PortError. `proxy` is the
        connection to the port proxy inside the namespace."""
        ...


# -- slirp4netns API ------------------------------------------------------------------------------


def slirp_api(path: str, execute: str, arguments: Spec) -> HostFwdId:
    """One call: {"execute", "arguments"} in, {"return": ...} or {"error": {"desc"}} out.
    PortError: slirp4netns refused (its desc); OSError, ValueError: no proper answer."""
    request = {"execute": execute, "arguments": dataclasses.asdict(arguments)}
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)  # slirp4netns reads the request up to EOF
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    reply = json.loads(data or b"{}")
    if not isinstance(reply, dict):
        raise SpecError(f"slirp4netns' API answered {data[:80]!r}")
    if "error" in reply:
        raise PortError(SlirpRefusal.from_dict(reply["error"]).desc)
    return HostFwdId.from_dict(reply.get("return") or {"id": -1})


@dataclass
class SlirpExposed:
    api: str
    id: int

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            slirp_api(self.api, "remove_hostfwd", HostFwdId(self.id))


@dataclass
class SlirpForwarder:
    api: str
    name: str = "slirp"

    def expose(self, req: PortRequest, proxy: socket.socket) -> Exposed:
        if req.proto == "udp":
            return expose_udp(req)
        if is_ipv6(req):
            # slirp4netns forwards IPv4 only (without --enable-ipv6); the "0.0.0.0" twin
            # of this request serves the workspace.
            return NothingExposed()
        # slirp4netns delivers to the namespace's tap address; the proxy listens there.
        fwd = HostFwd(req.proto, req.host_ip, req.host_port, GUEST_ADDR, req.host_port)
        try:
            added = slirp_api(self.api, "add_hostfwd", fwd)
        except PortError as e:
            probe = try_bind(req)  # say why in the user's terms where we can
            raise probe or PortError(f"slirp4netns refused {req.label()}: {e}") from None
        return SlirpExposed(self.api, added.id)


def try_bind(req: PortRequest) -> PortError | None:
    kind = socket.SOCK_STREAM if req.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((req.host_ip, req.host_port))
        except OSError as e:
            return bind_error(req, e)
    return None


# -- splice: listen here, hand connections to the proxy inside --------------------------------


class NothingExposed:
    def close(self) -> None:
        pass


def is_ipv6(req: PortRequest) -> bool:
    return ":" in req.host_ip


@dataclass
class UdpExposed:
    """A UDP socket bound in the workspace, handed to the proxy, which relays datagrams."""

    sock: socket.socket

    def close(self) -> None:
        self.sock.close()


def expose_udp(req: PortRequest) -> Exposed:
    """UDP is relayed by the proxy for every forwarder: slirp4netns' own UDP forwarding
    drops the replies to a loopback client when host loopback is disabled (its default)."""
    family = socket.AF_INET6 if is_ipv6(req) else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return NothingExposed()
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((req.host_ip, req.host_port))
    except OSError as e:
        sock.close()
        if is_ipv6(req) and e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return NothingExposed()
        raise bind_error(req, e) from e
    return UdpExposed(sock)


@dataclass
class SpliceExposed:
    listener: socket.socket

    def close(self) -> None:
        self.listener.close()


class SpliceForwarder:
    name = "splice"

    def expose(self, req: PortRequest, proxy: socket.socket) -> Exposed:
        if req.proto == "udp":
            return expose_udp(req)
        family = socket.AF_INET6 if is_ipv6(req) else socket.AF_INET
        try:
            listener = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            return NothingExposed()  # no IPv6 in the workspace: the IPv4 twin serves
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # dockerd asks for "::" beside "0.0.0.0": each family gets its own socket.
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            listener.bind((req.host_ip, req.host_port))
            listener.listen(128)
        except OSError as e:
            listener.close()
            if is_ipv6(req) and e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return NothingExposed()
            raise bind_error(req, e) from e
        listener.setblocking(False)
        return SpliceExposed(listener)


def send_fd(conn: socket.socket, fd: int) -> None:
    socket.send_fds(conn, [b"c"], [fd])


def forwarder(name: str, slirp_api_path: str) -> PortForwarder:
    if name == "slirp":
        return SlirpForwarder(slirp_api_path)
    if name == "splice":
        return SpliceForwarder()
    raise ValueError(f"unknown port forwarder {name!r}")


# -- the keeper's side ----------------------------------------------------------------------------


@dataclass
class Publication:
    req: PortRequest
    proxy: socket.socket
    exposed: Exposed


@dataclass
class Api:
    """The RootlessKit API: its state, and the socket it is served on."""

    state: RootlessKitApi
    server: socket.socket


class PortManager:
    """Runs in the keeper's select loop: fds() to watch, handle(fd) when one is readable."""

    def __init__(
        self,
        server: socket.socket,
        fwd: PortForwarder,
        log: Any,
        api: Api | None = None,
        table: str | None = None,
    ) -> None:
        self.server = server
        self.table = table  # where `docker-up ports` reads what is published (ports/tables.py)
        self.fwd = fwd
        self.log = log
        self.api = api  # dockerd 28+: its RootlessKit API (rlkapi.py), served here too
        self.pubs: dict[int, Publication] = {}  # proxy connection fd -> publication
        self.listeners: dict[int, Publication] = {}  # splice listener fd -> publication
        self.quiet = QuietLog(log, first=1)

    def fds(self) -> list[int]:
        api = [self.api.server.fileno()] if self.api else []
        return [self.server.fileno(), *api, *self.pubs, *self.listeners]

    def handle(self, fd: int) -> None:
        if self.api and fd == self.api.server.fileno():
            with contextlib.suppress(BlockingIOError):
                self.api.state.serve(self.api.server.accept()[0])
        elif fd == self.server.fileno():
            self.accept_proxy()
        elif fd in self.pubs:
            self.unpublish(fd)  # the proxy closed its end (or sent nothing more): EOF
        elif fd in self.listeners:
            self.hand_over(self.listeners[fd])

    def accept_proxy(self) -> None:
        conn, _ = self.server.accept()
        # The proxy sends its request as soon as it connects; a peer that does not cannot
        # hold the keeper (it serves every port and restarts dockerd) for long.
        conn.settimeout(2)
        try:
            text = conn.makefile().readline()
            req = self.workspace_side(PortRequest.from_json(text))
            self.drop_stale(req)
            exposed = self.fwd.expose(req, conn)
        except PortError as e:
            self.reply(conn, PortReply(error=str(e)))
            conn.close()
            self.log(f"port {text.strip()}: {e}")
            return
        except (OSError, ValueError) as e:
            self.reply(conn, PortReply(error=f"docker-up: bad port request: {e}"))
            conn.close()
            return
        pub = Publication(req, conn, exposed)
        self.pubs[conn.fileno()] = pub
        if isinstance(exposed, SpliceExposed):
            self.listeners[exposed.listener.fileno()] = pub
        self.reply(
            conn,
            PortReply(
                hand_over=isinstance(exposed, SpliceExposed),
                udp_relay=isinstance(exposed, UdpExposed),
                # slirp4netns delivers to the tap address: a loopback-only bind inside would
                # miss it (dockerd 28+ binds the tap address itself: the API says so).
                rewrite_host_ip="0.0.0.0"
                if req.host_ip.startswith("127.")
                and not isinstance(exposed, (SpliceExposed, UdpExposed))
                else None,
            ),
        )
        if isinstance(exposed, UdpExposed):
            send_fd(conn, exposed.sock.fileno())
        # From now on only hand-overs go this way: never wait for a proxy that does not read.
        conn.setblocking(False)
        self.log(
            f"published {req.label()} -> {req.container_ip}:{req.container_port} "
            f"({type(exposed).__name__})"
        )
        self.write_table()

    def drop_stale(self, req: PortRequest) -> None:
        """dockerd binds each host port inside the namespace before it asks for it here,
        so a port asked for again is one dockerd no longer holds: its earlier proxy is on
        its way out (a restarted dockerd clears an old endpoint and starts its container at
        once, and the old proxy's end may arrive after the new one's request)."""
        for fd, pub in list(self.pubs.items()):
            old = pub.req
            if (old.proto, old.host_ip, old.host_port) == (req.proto, req.host_ip, req.host_port):
                self.log(f"{old.label()}: dockerd asks for it again; its earlier proxy is gone")
                self.unpublish(fd)

    def workspace_side(self, req: PortRequest) -> PortRequest:
        """dockerd 28 gives its proxy the namespace's side of a forward (127.0.0.1 for a
        port published on 0.0.0.0); the forward it told the API of names the workspace's."""
        parent = (
            self.api.state.parent_of(req.proto, req.host_ip, req.host_port) if self.api else None
        )
        return replace(req, host_ip=parent) if parent else req

    @staticmethod
    def reply(conn: socket.socket, msg: PortReply) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(line(msg))

    def unpublish(self, fd: int) -> None:
        pub = self.pubs.pop(fd)
        if isinstance(pub.exposed, SpliceExposed):
            self.listeners.pop(pub.exposed.listener.fileno(), None)
        pub.exposed.close()
        pub.proxy.close()
        self.log(f"unpublished {pub.req.label()}")
        self.write_table()

    def write_table(self) -> None:
        """What answers in the workspace now: an address the workspace lacks (::) is left
        out, as its forwarder did."""
        if self.table is None:
            return
        rows = [
            PublishedPort(**dataclasses.asdict(p.req))
            for p in self.pubs.values()
            if not isinstance(p.exposed, NothingExposed)
        ]
        with contextlib.suppress(OSError):
            atomic_write(self.table, PublishedTable(TABLE_VERSION, rows).to_json())

    def hand_over(self, pub: Publication) -> None:
        assert isinstance(pub.exposed, SpliceExposed)
        while True:
            try:
                client, _ = pub.exposed.listener.accept()
            except BlockingIOError:
                return
            with client:
                try:
                    send_fd(pub.proxy, client.fileno())
                except BlockingIOError:
                    # The proxy is not taking connections (its queue is full): this client
                    # is closed rather than the keeper waiting.
                    self.quiet.say(
                        f"busy {pub.req.label()}",
                        f"port {pub.req.label()}: the "
                        "proxy is not keeping up; closing connections it cannot "
                        "take",
                    )
                except OSError:
                    return

    def close(self) -> None:
        for fd in list(self.pubs):
            self.unpublish(fd)
        self.server.close()
        if self.api:
            self.api.server.close()


__all__ = ["FORWARDERS", "PortManager", "forwarder"]
