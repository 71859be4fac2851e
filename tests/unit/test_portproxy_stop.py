"""The port proxy, stopped by dockerd, ends only after the real docker-proxy has (issue 33).

dockerd takes the proxy's end for the release of the port inside the namespace and may
start the next proxy for that port at once: a restarted dockerd drops a stale endpoint,
then starts its restart-policy container. The proxy used to end at once and leave its real
docker-proxy to the parent-death signal, which a loaded machine delivers late; the next
real docker-proxy's bind then failed ("address already in use") and the container stayed
stopped (test_engines, on 20.10 and 26.1, under CI's load). The stand-in for the real
docker-proxy here takes a moment to let its port go after SIGTERM, as a loaded machine
would make it: the proxy must not end before it has."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from dockerup import lean
from dockerup.wire.messages import PortReply, PortRequest, line
from dockerup.wire.specs import ProxySpec

REAL = """#!/bin/sh
trap 'sleep 1; echo released > {mark}; exit 0' TERM
echo up > {up}
while :; do sleep 0.05; done
"""


def keeper_answers(server: socket.socket) -> None:
    """The keeper's port manager, for one request: published, nothing to hand over."""
    conn, _ = server.accept()
    with conn:
        PortRequest.from_json(conn.makefile().readline())
        conn.sendall(line(PortReply()))
        conn.recv(1)  # until the proxy's end


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name} in {timeout} s"
        time.sleep(0.01)


def test_a_stopped_proxy_ends_after_its_real_docker_proxy(tmp_path: Path) -> None:
    real = tmp_path / "docker-proxy"
    up, mark = tmp_path / "up", tmp_path / "released"
    real.write_text(REAL.format(mark=mark, up=up))
    real.chmod(0o755)
    sock = str(tmp_path / "ports.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock)
    server.listen()
    threading.Thread(target=keeper_answers, args=(server,), daemon=True).start()
    proxy = start_proxy(sock, real)
    try:
        wait_for(up, 20)
        proxy.send_signal(signal.SIGINT)  # dockerd's way to stop a proxy
        assert proxy.wait(20) == 0
        assert mark.exists(), "the proxy ended while its real docker-proxy still held the port"
    finally:
        proxy.kill()
        proxy.wait()
        server.close()


def start_proxy(sock: str, real: Path) -> subprocess.Popen[bytes]:
    spec = ProxySpec(manager=sock, docker_proxy=str(real)).to_json()
    # The proxy as dockerd runs it (python -S), but with all the time in the world for the
    # real one's end: the stand-in's second of grace must never race the proxy's own
    # deadline on a loaded machine; only the order of the two ends is under test.
    root = Path(lean.ROOT)
    run = (
        f"import sys; sys.path.insert(0, {str(root)!r}); sys.argv[0] = 'portproxy'; "
        "from dockerup.ports import proxy as portproxy; portproxy.STOP_WAIT = 600.0; "
        "portproxy.main()"
    )
    args = "-proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80"
    # fd 3: docker-proxy's report channel to dockerd, which the proxy passes on.
    return subprocess.Popen(
        [
            "sh",
            "-c",
            'exec "$@" 3>/dev/null',
            "sh",
            sys.executable,
            "-S",
            "-c",
            run,
            spec,
            *args.split(),
        ]
    )


def test_a_proxy_stopped_before_its_handler_still_ends_in_order(tmp_path: Path) -> None:
    """dockerd may stop a proxy it has just started: here while the proxy waits for the
    keeper's answer, before it has its handler (a known point: the keeper holds the answer).
    It used to die there by KeyboardInterrupt (or, a moment later, inside Popen with its real
    docker-proxy started: seen under load); it ends through its handler, exit 0, the real
    docker-proxy it then started ended before it."""
    real = tmp_path / "docker-proxy"
    real.write_text("#!/bin/sh\nwhile :; do sleep 0.05; done\n")
    real.chmod(0o755)
    sock = str(tmp_path / "ports.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock)
    server.listen()
    proxy = start_proxy(sock, real)
    try:
        conn, _ = server.accept()
        with conn:
            PortRequest.from_json(conn.makefile().readline())  # it waits for the answer now
            proxy.send_signal(signal.SIGINT)
            conn.sendall(line(PortReply()))
            assert proxy.wait(20) == 0
        assert not [p for p in Path("/proc").glob("[0-9]*") if str(real).encode() in cmd(p)]
    finally:
        proxy.kill()
        proxy.wait()
        server.close()


def cmd(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
