"""--net-accel on the real stack: containers' TCP connections to the workspace's loopback
become workspace sockets (seccomp user notification), everything else keeps its path."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Workspace, nc_read, reach_host_loopback, status, wait_for
from .servers import container_listens, free_port


@pytest.fixture
def accel(workspace: Workspace, busybox_tar: Path, net: str) -> Iterator[Workspace]:
    r = workspace.docker_up("-d", "--net-accel", "--allow-host-loopback")
    assert r.returncode == 0, r.stderr
    workspace.docker("import", str(busybox_tar), "bb:test")
    yield workspace
    workspace.docker_up("stop", timeout=90)


def helper_pid(ws: Workspace) -> int:
    return int(status(ws)["net_pid"])  # type: ignore[call-overload]


def test_connections_to_workspace_loopback_skip_the_helper(
    accel: Workspace, loopback_server: int
) -> None:
    """With the network helper frozen, nothing can cross it: a connection that still works
    went through the agent's workspace socket."""
    helper = helper_pid(accel)
    os.kill(helper, signal.SIGSTOP)
    try:
        assert reach_host_loopback(accel, loopback_server) == "hello"
        # Without the seccomp filter (unconfined) the container takes the normal path, which
        # the frozen helper does not serve.
        r = accel.docker(
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            "bb:test",
            "sh",
            "-c",
            f"timeout 3 nc 10.0.2.2 {loopback_server} </dev/null; echo container-ran",
            check=False,
        )
        # Nothing came back, from a container that ran (one that did not prints "" too).
        assert r.stdout.split() == ["container-ran"], r.stdout + r.stderr
    finally:
        os.kill(helper, signal.SIGCONT)
    # And the normal path still works once the helper runs again.
    r = accel.docker(
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "bb:test",
        "sh",
        "-c",
        nc_read("10.0.2.2", loopback_server),
    )
    assert r.stdout.strip() == "hello"


def test_connections_leaving_the_namespace_skip_the_helper(
    accel: Workspace, peer_namespace: str
) -> None:
    """An address only the default route leads to (a server in another namespace of this
    machine): the container's socket is swapped for a workspace socket and the kernel
    connects it from the workspace, so it works with the helper frozen."""
    helper = helper_pid(accel)
    os.kill(helper, signal.SIGSTOP)
    try:
        nc = nc_read(peer_namespace, 7070)
        r = accel.docker("run", "--rm", "bb:test", "sh", "-c", nc, check=False)
        assert r.stdout.strip() == "peer-ns", r.stdout + r.stderr
    finally:
        os.kill(helper, signal.SIGCONT)


def test_refused_connection_is_refused_in_the_container(accel: Workspace) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = accel.docker(
        "run",
        "--rm",
        "bb:test",
        "sh",
        "-c",
        f"nc 10.0.2.2 {port} </dev/null; echo rc=$?",
        check=False,
    )
    assert "rc=1" in r.stdout, r.stdout + r.stderr


def test_other_traffic_keeps_its_path(accel: Workspace) -> None:
    """Container to container by name on a user-defined network (DNS through the daemon),
    a published port, and UDP to the workspace's loopback: all as without the agent."""
    ws = accel
    ws.docker("network", "create", "-o", "com.docker.network.driver.mtu=65520", "accelnet")
    try:
        web = "mkdir /www && echo peer > /www/index.html && exec httpd -f -p 80 -h /www"
        port = free_port()
        ws.docker(
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "accelnet",
            "-p",
            f"{port}:80",
            "bb:test",
            "sh",
            "-c",
            web,
        )
        # One try below: httpd must listen first (it starts on its own time after `run -d`).
        wait_for(lambda: container_listens(ws, "srv", 80), 20, "srv's httpd")
        r = ws.docker(
            "run",
            "--rm",
            "--network",
            "accelnet",
            "bb:test",
            "sh",
            "-c",
            "echo 'GET / HTTP/1.0' | timeout 10 nc srv 80",
        )
        assert r.stdout.strip().endswith("peer"), r.stdout + r.stderr
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert b"peer" in c.makefile("rb").read()
    finally:
        ws.docker("rm", "-f", "srv", check=False)
        ws.docker("network", "rm", "accelnet", check=False)
    # UDP to the workspace's loopback (a connected UDP socket: connect() is notified too)
    # goes through the helper, as before.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        stop = threading.Event()

        def echo() -> None:
            u.settimeout(0.2)
            while not stop.is_set():
                try:
                    data, peer = u.recvfrom(100)
                except TimeoutError:
                    continue
                u.sendto(data.upper(), peer)

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        try:
            r = ws.docker(
                "run", "--rm", "bb:test", "udpecho", "10.0.2.2", str(port), "udp", check=False
            )
        finally:
            stop.set()
            t.join()
    assert r.stdout.strip() == "UDP", r.stdout + r.stderr


def test_accel_is_on_by_default_host_loopback_or_not(
    workspace: Workspace, loopback_server: int
) -> None:
    r = workspace.docker_up("-d", "--allow-host-loopback")
    assert r.returncode == 0, r.stderr
    try:
        doc = status(workspace)
        assert "net-accel" in doc["net_options"]  # type: ignore[operator]
    finally:
        workspace.docker_up("stop", timeout=90)
    r = workspace.docker_up("-d")
    assert r.returncode == 0, r.stderr
    try:
        doc = status(workspace)
        assert "net-accel" in doc["net_options"]  # type: ignore[operator]  # issue 27
    finally:
        workspace.docker_up("stop", timeout=90)
    r = workspace.docker_up("-d", "--no-net-accel")
    assert r.returncode == 0, r.stderr
    try:
        doc = status(workspace)
        assert "net-accel" not in doc["net_options"]  # type: ignore[operator]
    finally:
        workspace.docker_up("stop", timeout=90)


def test_loopback_rule_holds_with_the_bypass_on(
    workspace: Workspace, busybox_tar: Path, loopback_server: int, net: str
) -> None:
    """No options (the agent on, host loopback closed): the agent sees the connect() to
    10.0.2.2 and leaves it to the helper, which refuses it, as without the agent."""
    r = workspace.docker_up("-d")
    assert r.returncode == 0, r.stderr
    try:
        workspace.docker("import", str(busybox_tar), "bb:test")
        assert reach_host_loopback(workspace, loopback_server) == ""
    finally:
        workspace.docker_up("stop", timeout=90)
