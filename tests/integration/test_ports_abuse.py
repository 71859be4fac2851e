"""Published ports against a hostile or careless client in the workspace: idle connections
and many UDP senders cost bounded resources, and normal clients are still served."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Workspace, full_backlog, wait_for
from .servers import free_port, http_get, udp_bound, udp_echo, web_container


@pytest.fixture
def daemon(workspace: Workspace, busybox_tar: Path) -> Iterator[Workspace]:
    r = workspace.docker_up("-d")  # the default: splice forwarder, slirp4netns
    assert r.returncode == 0, r.stderr
    workspace.docker("import", str(busybox_tar), "bb:test")
    yield workspace
    # busybox as PID 1 ignores SIGTERM: removed at once here, not after stop's 10 s wait.
    workspace.docker("rm", "-f", "web", "echo", check=False)
    workspace.docker_up("stop", timeout=90)


def proxy_of(ws: Workspace, port: int) -> int:
    """The port proxy that this workspace's dockerd runs for this published port (found as
    root). The user's alone: every suite on the machine hands out the same port numbers
    (servers.free_port), each in its own network namespace, so another suite's proxy may
    serve this very number, in the one PID namespace."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid != ws.user.uid:
                    continue
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(c.endswith(b"ports/proxy.py") for c in cmd) and str(port).encode() in cmd:
                return int(d.name)
    raise AssertionError(f"no port proxy for {port}")


def status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_idle_connections_do_not_starve_a_published_port(daemon: Workspace) -> None:
    """200 connections held open (each a splice pair in the proxy): the user's pipe budget
    ran out after about 32 before, and every later connection was closed."""
    port = free_port()
    web_container(daemon, "web", "alive", "-p", f"{port}:80")
    wait_for(lambda: "alive" in http_get("127.0.0.1", port), 30, "the web server")
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_for(
            lambda: status_field(proxy_of(daemon, port), "Threads") > 200,
            30,
            "the idle connections to be served",
        )
        assert "alive" in http_get("127.0.0.1", port)
    finally:
        for c in idle:
            c.close()


def test_many_udp_senders_cost_bounded_memory(daemon: Workspace) -> None:
    """10 000 senders, one datagram each: the relay keeps at most a bounded number of flows,
    in one thread, and still answers a normal client."""
    port = free_port()
    daemon.docker(
        "run", "-d", "--name", "echo", "-p", f"{port}:5353/udp", "bb:test", "udpecho", "5353"
    )
    wait_for(lambda: udp_bound(daemon, "echo", 5353), 20, "udpecho to bind its port")
    assert udp_echo(port) == b"ping"
    proxy = proxy_of(daemon, port)
    for _ in range(10_000):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", ("127.0.0.1", port))
    # A full receive buffer drops what comes next (UDP): ask once the relay has read it all.
    wait_for(lambda: udp_queued(port) == 0, 30, "the relay to read the flood")
    assert udp_echo(port) == b"ping"
    threads, rss_kib = status_field(proxy, "Threads"), status_field(proxy, "VmRSS")
    fds = len(os.listdir(f"/proc/{proxy}/fd"))
    print(f"udp relay after 10000 senders: {threads} threads, {rss_kib} KiB, {fds} fds")
    assert threads <= 4 and rss_kib < 64 * 1024 and fds < 1100


def test_the_keeper_serves_with_more_than_1024_fds_open(
    workspace: Workspace, busybox_tar: Path
) -> None:
    """select() cannot watch an fd numbered 1024 or more, and the keeper used to exit on
    one. With --net-accel, each connect() hanging on a full backlog holds two fds in the
    keeper: 9 containers x 60 of them, then a port published after that (its listener's fd
    is above 1023) must still answer, and the keeper must still run."""
    r = workspace.docker_up("-d", "--allow-host-loopback")  # the acceleration agent on
    assert r.returncode == 0, r.stderr
    names: list[str] = []
    with full_backlog() as full_port:
        try:
            _many_stalls_then_a_port(workspace, busybox_tar, names, full_port)
        finally:
            workspace.docker("rm", "-f", *names, check=False)
            workspace.docker_up("stop", timeout=90)


def _many_stalls_then_a_port(
    workspace: Workspace, busybox_tar: Path, names: list[str], full_port: int
) -> None:
    workspace.docker("import", str(busybox_tar), "bb:test")
    keeper = int(json.loads(workspace.docker_up("status", "--json").stdout)["pid"])
    for i in range(9):
        names.append(f"staller{i}")
        workspace.docker(
            "run",
            "-d",
            "--name",
            names[-1],
            "bb:test",
            "accelprobe",
            "stall",
            "10.0.2.2",
            str(full_port),
            "60",
        )
    # 512 calls in flight at most (the agent's bound), two fds each: the next fd the
    # keeper opens is numbered above 1024.
    wait_for(
        lambda: len(os.listdir(f"/proc/{keeper}/fd")) > 1040, 60, "more than 1040 fds in the keeper"
    )
    port = free_port()
    names.append("web")
    web_container(workspace, "web", "high-fd", "-p", f"{port}:80")
    wait_for(lambda: "high-fd" in http_get("127.0.0.1", port), 30, "the port, fd > 1023")
    assert json.loads(workspace.docker_up("status", "--json").stdout)["pid"] == keeper
    assert listener_fd(keeper, port) >= 1024  # what the test is about


def listener_fd(pid: int, port: int) -> int:
    """The fd number under which a process holds its socket listening on this TCP port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            inodes.add(f[9])
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return int(fd)
    raise AssertionError(f"no listener on {port} in {pid}")


def udp_queued(port: int) -> int:
    """Bytes waiting in the receive queue of the workspace's UDP socket on this port."""
    with open("/proc/net/udp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(int(r[4].split(":")[1], 16) for r in rows if r[1].endswith(f":{port:04X}"))
