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
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import NoReturn

CHUNK = 1 << 20
F_SETPIPE_SZ = 1031


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
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
        while True:
            n = os.splice(src.fileno(), w, CHUNK, flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def serve(client: socket.socket, target: tuple[str, int]) -> None:
    with client:
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            return
        upstream.settimeout(None)
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


def relay_udp(outside: socket.socket, target: tuple[str, int]) -> None:
    """Datagrams from workspace clients go to the container from one inside socket per
    client; the container's replies go back to that client."""
    inside: dict[tuple[str, int], socket.socket] = {}

    def back(sock: socket.socket, client: tuple[str, int]) -> None:
        while True:
            try:
                outside.sendto(sock.recv(65536), client)
            except ConnectionRefusedError:
                # An ICMP "port unreachable" for an earlier datagram (the server was not
                # listening yet): not the end of this client's flow.
                continue
            except OSError:
                return

    while True:
        data, client = outside.recvfrom(65536)
        sock = inside.get(client)
        if sock is None:
            sock = inside[client] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(target)
            threading.Thread(target=back, args=(sock, client), daemon=True).start()
        with contextlib.suppress(OSError):
            sock.send(data)


def main() -> None:
    manager_path, real_proxy, *args = sys.argv[1:]
    opts = dict(zip(args[::2], args[1::2], strict=False))
    target = (opts.get("-container-ip", ""), int(opts.get("-container-port", "0")))
    request: dict[str, str | int] = {
        "proto": opts.get("-proto", "tcp"),
        "host_ip": opts.get("-host-ip", "0.0.0.0"),
        "host_port": int(opts.get("-host-port", "0")),
        "container_ip": opts.get("-container-ip", ""),
        "container_port": int(opts.get("-container-port", "0")),
    }
    conn = socket.socket(socket.AF_UNIX)
    try:
        conn.connect(manager_path)
        conn.sendall((json.dumps(request) + "\n").encode())
        stream = FdStream(conn)
        reply = json.loads(stream.readline() or "{}")
    except (OSError, ValueError) as e:
        report_failure(f"docker-up could not publish the port in the workspace: {e}")
    if "error" in reply:
        report_failure(reply["error"])
    if reply.get("rewrite_host_ip"):
        # slirp4netns delivers to the tap address: a loopback-only bind inside would miss it.
        args[args.index("-host-ip") + 1] = reply["rewrite_host_ip"]
    child = subprocess.Popen([real_proxy, *args], pass_fds=(3,))
    os.close(3)

    # dockerd stops its proxies with SIGINT (docker-proxy's convention); SIGTERM likewise.
    def stop(signum: int, frame: object) -> None:
        child.terminate()
        os._exit(0)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)
    if reply.get("udp_relay"):
        fd = stream.next_fd()
        if fd is None:
            sys.exit(child.wait())
        outside = socket.socket(fileno=fd)
        threading.Thread(target=lambda: os._exit(child.wait()), daemon=True).start()
        relay_udp(outside, target)
    if not reply.get("hand_over"):
        sys.exit(child.wait())
    watcher = threading.Thread(target=lambda: os._exit(child.wait()), daemon=True)
    watcher.start()
    while True:
        try:
            fd = stream.next_fd()
        except OSError:
            break
        if fd is None:
            break  # the keeper went away
        client = socket.socket(fileno=fd)
        threading.Thread(target=serve, args=(client, target), daemon=True).start()
    child.terminate()
    child.wait()


if __name__ == "__main__":
    main()
