"""dockerd's userland proxy, inside the namespace: one per published port.

dockerd runs it with docker-proxy's arguments (through the small shell script that
daemon.json names as userland-proxy-path). It asks the keeper to expose the port in the
workspace; a refusal is reported on fd 3 exactly as docker-proxy reports its own errors, so
`docker run` fails with it. Otherwise it starts the real docker-proxy (so the port answers
inside the namespace too, and it reports readiness on fd 3), and, with the splice forwarder,
serves the connections the keeper hands over: connect to the container, move bytes with
splice(2). It ends when dockerd stops it; the keeper then frees the port.

Stdlib only, started with `python -S`: dockerd waits for it on every `docker run -p`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import NoReturn

# The rest of docker-up's package sits beside this script (stdlib-only modules only).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup.accel.daemonfilter import connect_unwatched
from dockerup.linux import libc as linux
from dockerup.linux.fdwait import readable
from dockerup.logs import QuietLog
from dockerup.wire.messages import PortReply, PortRequest, line
from dockerup.wire.specs import ProxySpec

CHUNK = 1 << 20
F_SETPIPE_SZ = 1031
# Connections one published port serves at once; more are closed at once, with a log line.
MAX_CONNECTIONS = 512
# Asked to stop, the proxy waits this long for the real docker-proxy to end, then kills it.
STOP_WAIT = 2.0
# UDP: a client's flow ends after this long without a datagram either way; at most this
# many flows at once (the oldest idle one makes room).
UDP_IDLE = 60.0
UDP_FLOWS = 1024


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # dockerd's log


QUIET = QuietLog(_stderr, first=1, prefix="docker-up port proxy: ")


def start_real_proxy(argv: list[str], fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """The real docker-proxy, which goes when this proxy goes, however that happens (kill
    -9 included). Left behind, it would hold the port inside the namespace, and the
    container's next start would fail with "address already in use"."""
    proxy = os.getpid()

    def child_setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # blocked here only until main's
        linux.die_with_parent(signal.SIGKILL, proxy)

    return subprocess.Popen(argv, pass_fds=fds, preexec_fn=child_setup)


def report_failure(message: str) -> NoReturn:
    # docker-proxy's protocol with dockerd: "0\n" for ready, "1\n<error>" for failure, on fd 3.
    try:
        os.write(3, b"1\n" + message.encode())
    except OSError:
        print(message, file=sys.stderr)
    sys.exit(1)


def pump(src: socket.socket, dst: socket.socket) -> None:
    r, w = os.pipe()
    try:
        # A bigger pipe moves more per splice, but each user has a pipe budget
        # (fs.pipe-user-pages-soft): past it the kernel refuses (EPERM), and the default
        # pipe still works.
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
        while True:
            n = os.splice(src.fileno(), w, CHUNK, flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
            if n == 0:
                break
            while n:
                # Never SPLICE_F_MORE towards a socket: it is MSG_MORE, and TCP then holds a
                # short reply back for its 200 ms cork timer (every request/response through
                # a published port took 200 ms longer).
                n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Slots:
    """Connections in service on this port, at most MAX_CONNECTIONS."""

    def __init__(self, limit: int = MAX_CONNECTIONS) -> None:
        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def give(self) -> None:
        with self.lock:
            self.used -= 1


IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75  # <linux/in6.h>; not in Python's socket module
# Set once the child routed replies to transparent sockets back to them (ChildSpec).
TRANSPARENT: dict[str, str | None] = {"marker": None}


def from_client(client: tuple[str, int] | None, family: int = socket.AF_INET) -> str | None:
    """The address to connect to the container from (of `family`, the container's): the
    client's own, when it is a remote client of that family and the namespace routes the
    replies back (a loopback client shows as the proxy, as with Docker's own proxy: a
    container cannot answer 127.0.0.1 or ::1)."""
    if client is None:
        return None
    addr = client[0].removeprefix("::ffff:")
    if family_of(addr) != family or addr.startswith("127.") or addr in ("0.0.0.0", "::1", "::"):
        return None
    return addr if str(6 if family == socket.AF_INET6 else 4) in routed_back() else None


def routed_back() -> list[str]:
    """The IP families whose replies the child routed back to transparent sockets ("4",
    "6"); none without the marker (client addresses off, or it failed)."""
    marker = TRANSPARENT["marker"]
    if marker is None:
        return []
    try:
        with open(marker) as f:
            return f.read().split() or ["4"]  # an empty marker: made before IPv6 came
    except OSError:
        return []


def upstream_socket(kind: int, source: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A socket towards the container, bound to the client's address when given (falls
    back to the proxy's own if the kernel refuses). IPv6 containers: dockerd hands the
    "::" binding the container's IPv6 address."""
    sock = socket.socket(family, kind)
    if source is not None:
        level, option = (
            (socket.IPPROTO_IPV6, IPV6_TRANSPARENT)
            if family == socket.AF_INET6
            else (socket.SOL_IP, IP_TRANSPARENT)
        )
        try:
            sock.setsockopt(level, option, 1)
            sock.bind((source, 0))
        except OSError as e:
            QUIET.say("transparent", f"the client's address cannot be used: {e}")
            sock.close()
            sock = socket.socket(family, kind)
    return sock


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def peer_of(sock: socket.socket) -> tuple[str, int] | None:
    try:
        peer = sock.getpeername()
    except OSError:
        return None
    return (str(peer[0]), int(peer[1]))


def serve(client: socket.socket, target: tuple[str, int], slots: Slots) -> None:
    try:
        _serve(client, target)
    finally:
        slots.give()


def _serve(client: socket.socket, target: tuple[str, int]) -> None:
    with client:
        try:
            family = family_of(target[0])
            upstream = upstream_socket(
                socket.SOCK_STREAM, from_client(peer_of(client), family), family
            )
            connect_unwatched(upstream, target, 10)
        except OSError:
            return
        with upstream:
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join()


class FdStream:
    """The keeper's messages: a reply line, then one marker byte per handed-over fd.
    recvmsg may return the reply together with a marker byte and its fd, so data and fds are
    read together, always with room for fds (a plain recv would silently drop them)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.data = b""
        self.fds: list[int] = []

    def _more(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.conn, 65536, 16)
        self.data += data
        self.fds += fds
        return bool(data)

    def readline(self) -> bytes:
        while b"\n" not in self.data:
            if not self._more():
                return b""
        line, self.data = self.data.split(b"\n", 1)
        return line

    def next_fd(self) -> int | None:
        while not self.fds:
            if not self._more():
                return None
        self.data = self.data[1:]  # its marker byte
        return self.fds.pop(0)


class UdpRelay:
    """Datagrams from workspace clients go to the container from one inside socket per
    client (its flow); the container's replies go back to that client. One thread, one poll
    loop: flows idle for UDP_IDLE end, and there are never more than UDP_FLOWS, so many
    senders cost bounded memory and no threads."""

    def __init__(
        self, outside: socket.socket, target: tuple[str, int], stop: socket.socket | None = None
    ) -> None:
        self.outside, self.target = outside, target
        self.flows: dict[tuple[str, int], socket.socket] = {}  # oldest activity first
        self.by_fd: dict[int, tuple[str, int]] = {}
        self.seen: dict[tuple[str, int], float] = {}
        self.poll = select.poll()
        self.poll.register(outside.fileno(), select.POLLIN)
        # Auto ports: the keeper closes its end when the port is released; the relay ends,
        # and so does this process's hold on the workspace's port.
        self.stop = stop
        if stop is not None:
            self.poll.register(stop.fileno(), select.POLLIN)
        self.next_expiry = 0.0

    def run(self) -> None:
        while True:
            for fd, _ in self.poll.poll(int(UDP_IDLE * 1000 / 4)):
                if self.stop is not None and fd == self.stop.fileno():
                    self.close()
                    return
                if fd == self.outside.fileno():
                    self.from_client()
                elif fd in self.by_fd:
                    self.from_container(self.by_fd[fd])
            if time.monotonic() >= self.next_expiry:
                self.expire()
                self.next_expiry = time.monotonic() + 1

    def from_client(self) -> None:
        try:
            data, client = self.outside.recvfrom(65536)
        except OSError:
            return
        sock = self.flows.pop(client, None)
        if sock is None:
            if len(self.flows) >= UDP_FLOWS:
                QUIET.say("udp-flows", f"{UDP_FLOWS} UDP flows at once: the oldest ends")
                self.end(next(iter(self.flows)))
            try:
                family = family_of(self.target[0])
                sock = upstream_socket(socket.SOCK_DGRAM, from_client(client, family), family)
            except OSError as e:  # EMFILE: this datagram is dropped, the relay goes on
                QUIET.say("udp-socket", f"cannot open a UDP flow: {e}")
                return
            try:
                connect_unwatched(sock, self.target, 1)
            except OSError:
                sock.close()
                return
            sock.setblocking(False)
            self.by_fd[sock.fileno()] = client
            self.poll.register(sock.fileno(), select.POLLIN)
        self.flows[client] = sock  # (re)inserted last: the most recently active
        self.seen[client] = time.monotonic()
        with contextlib.suppress(OSError):
            sock.send(data)

    def from_container(self, client: tuple[str, int]) -> None:
        sock = self.flows[client]
        try:
            data = sock.recv(65536)
        except ConnectionRefusedError:
            # An ICMP "port unreachable" for an earlier datagram (the server was not
            # listening yet): not the end of this client's flow.
            return
        except OSError:
            return
        self.seen[client] = time.monotonic()
        with contextlib.suppress(OSError):
            self.outside.sendto(data, client)

    def expire(self) -> None:
        now = time.monotonic()
        for client in [c for c, t in self.seen.items() if now - t > UDP_IDLE]:
            self.end(client)

    def end(self, client: tuple[str, int]) -> None:
        sock = self.flows.pop(client)
        self.seen.pop(client, None)
        self.by_fd.pop(sock.fileno(), None)
        self.poll.unregister(sock.fileno())
        sock.close()

    def close(self) -> None:
        for client in list(self.flows):
            self.end(client)
        self.outside.close()
        if self.stop is not None:
            self.stop.close()


def relay_udp(outside: socket.socket, target: tuple[str, int]) -> None:
    UdpRelay(outside, target).run()


# dockerd stops its proxies with SIGINT (docker-proxy's convention); SIGTERM likewise.
STOPS = {signal.SIGINT, signal.SIGTERM}


def main() -> None:
    # A stop waits for main's handler, which ends the real docker-proxy first: before it, a
    # stop (dockerd's, just after starting the proxy) ended this process at once, in the
    # middle of starting the real one (KeyboardInterrupt), and left that to the parent-death
    # signal, with the lost port the handler exists to prevent (issue 33, seen under load).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    spec_json, *args = sys.argv[1:]
    spec = ProxySpec.from_json(spec_json)
    manager_path, real_proxy = spec.manager, spec.docker_proxy
    TRANSPARENT["marker"] = spec.transparent
    opts = dict(zip(args[::2], args[1::2], strict=False))
    target = (opts.get("-container-ip", ""), int(opts.get("-container-port", "0")))
    request = PortRequest(
        proto=opts.get("-proto", "tcp"),
        host_ip=opts.get("-host-ip", "0.0.0.0"),
        host_port=int(opts.get("-host-port", "0")),
        container_ip=target[0],
        container_port=target[1],
    )
    conn = socket.socket(socket.AF_UNIX)
    try:
        conn.connect(manager_path)
        conn.sendall(line(request))
        stream = FdStream(conn)
        reply = PortReply.from_json(stream.readline())
    except (OSError, ValueError) as e:
        report_failure(f"docker-up could not publish the port in the workspace: {e}")
    if reply.error is not None:
        report_failure(reply.error)
    # dockerd 28+ binds the namespace's socket itself and hands it over as fd 4.
    listen_fd = "-use-listen-fd" in args
    if reply.rewrite_host_ip and not listen_fd:
        # slirp4netns delivers to the tap address: a loopback-only bind inside would miss it
        # (dockerd 28+ binds the tap address itself: the API says the child IP is that).
        args[args.index("-host-ip") + 1] = reply.rewrite_host_ip
    fds = (3, 4) if listen_fd else (3,)
    child = start_real_proxy([real_proxy, *args], fds)
    for passed in fds:
        os.close(passed)

    pidfd = os.pidfd_open(child.pid)  # readable once it has ended, reaped or not
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        # Only once the real docker-proxy has ended, its port inside the namespace closed:
        # dockerd takes this process's end for the port's release and may start the next
        # proxy for it at once (a restarted dockerd drops a stale endpoint, then starts its
        # restart-policy container). Ending first left the real one's death to the parent-
        # death signal, which a loaded machine delivers late: the next real docker-proxy's
        # bind failed "address already in use", and the container was left stopped.
        # Through a pidfd, not Popen.wait: this handler may run inside the main thread's
        # own child.wait(), whose lock it would then wait for forever.
        stopping.set()
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not readable([pidfd], STOP_WAIT):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                readable([pidfd])
        os._exit(0)

    def watch() -> None:  # the real docker-proxy ended on its own: so does this one
        code = child.wait()
        os._exit(0 if stopping.is_set() else code)

    for s in STOPS:
        signal.signal(s, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # one that came meanwhile runs now
    if reply.udp_relay:
        fd = stream.next_fd()
        if fd is None:
            sys.exit(child.wait())
        outside = socket.socket(fileno=fd)
        threading.Thread(target=watch, daemon=True).start()
        relay_udp(outside, target)
    if not reply.hand_over:
        sys.exit(child.wait())
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    slots = Slots()
    while True:
        try:
            fd = stream.next_fd()
        except OSError:
            break
        if fd is None:
            break  # the keeper went away
        client = socket.socket(fileno=fd)
        if not slots.take():
            QUIET.say(
                "busy",
                f"{MAX_CONNECTIONS} connections at once on this port: "
                "closing new ones until some end",
            )
            client.close()
            continue
        threading.Thread(target=serve, args=(client, target, slots), daemon=True).start()
    child.terminate()
    child.wait()


if __name__ == "__main__":
    main()
