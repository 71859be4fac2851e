"""IPv6 through both network drivers, in a workspace that has it: a network namespace of
the test's own with IPv6 on loopback and a veth with a ULA address (and a default route) to
a peer namespace. docker-up, its servers and its clients all live in that namespace: each
is started from a thread that joined it (a thread's sockets and children stay there)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from pyroute2 import NetNS

from dockerup.linux import libc as linux

from .harness import DockerUp, Workspace, nc_read, wait_for
from .servers import CountingServer, container_listens, listener

# The servers below are their containers' init, which ignores SIGTERM: without this, each
# teardown's stop waited dockerd's 10 s for every one of them.
QUICK_STOP = ("--stop-timeout", "1")

T = TypeVar("T")
IFA_F_NODAD = 0x02


def in_netns(pid: int, fn: Callable[[], T]) -> T:
    """fn's result, run in a thread that joined pid's network namespace."""
    out: dict[str, object] = {}

    def run() -> None:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
            out["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            out["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]


def server6(netns: int, address: str = "::1", reply: bytes = b"workspace-v6\n") -> CountingServer:
    """A counting server on an IPv6 address of a namespace (the workspace's [::1] unless
    told): its socket is made in that namespace."""
    return CountingServer(reply, sock=in_netns(netns, lambda: listener(socket.AF_INET6, address)))


def holder() -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    wait_for(
        lambda: os.readlink(f"/proc/{p.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
        10,
        "a new network namespace",
    )
    return p


def configure(pid: int, ifname: str, v4: str, v6: str, gateways: tuple[str, str] | None) -> None:
    with NetNS(f"/proc/{pid}/ns/net") as ns:
        (idx,) = ns.link_lookup(ifname=ifname)
        ns.addr("add", index=idx, address=v4, prefixlen=24)
        ns.addr("add", index=idx, address=v6, prefixlen=64, flags=IFA_F_NODAD)
        for index in (idx, *ns.link_lookup(ifname="lo")):
            ns.link("set", index=index, state="up")
        if gateways:
            ns.route("add", dst="0.0.0.0/0", gateway=gateways[0])
            ns.route("add", family=socket.AF_INET6, dst="::/0", gateway=gateways[1])


PEERS: dict[int, int] = {}  # the IPv6 workspace's PID -> its peer namespace's


@pytest.fixture
def ws6() -> Iterator[int]:
    """The IPv6 workspace's network namespace (a PID in it): ::1 on lo, fd79::1/64 on a veth
    whose other end (fd79::2, the default route) is in a peer namespace."""
    ws, peer = holder(), holder()
    PEERS[ws.pid] = peer.pid
    try:
        with NetNS(f"/proc/{ws.pid}/ns/net") as ns:
            ns.link(
                "add", ifname="ws6", kind="veth", peer={"ifname": "peer6", "net_ns_pid": peer.pid}
            )
        configure(ws.pid, "ws6", "192.168.97.1", "fd79::1", ("192.168.97.2", "fd79::2"))
        configure(peer.pid, "peer6", "192.168.97.2", "fd79::2", None)
        yield ws.pid
    finally:
        for p in (ws, peer):
            p.kill()
            p.wait()


@pytest.fixture
def workspace6(ws6: int) -> Iterator[CountingServer]:
    s = server6(ws6)
    yield s
    s.close()


@pytest.fixture
def remote6(ws6: int) -> Iterator[CountingServer]:
    """A server out there: on the peer's fd79::2, which the workspace's default route reaches."""
    s = server6(PEERS[ws6], "fd79::2", b"remote-v6\n")
    yield s
    s.close()


def up_in(netns: int, ws: Workspace, started: list[DockerUp], *args: str) -> DockerUp:
    s = in_netns(netns, lambda: ws.start(*args))
    started.append(s)
    return s.wait_ready()


def read_from(netns: int, host: str, port: int) -> str:
    """What a workspace client reads from host:port (inside the IPv6 workspace)."""

    def get() -> str:
        try:
            with socket.create_connection((host, port), timeout=5) as c:
                return c.recv(100).decode().strip()
        except OSError as e:
            return f"error: {e}"

    return in_netns(netns, get)


def test_containers_reach_the_workspaces_ipv6_loopback_only_when_allowed(
    workspace: Workspace,
    started: list[DockerUp],
    busybox_tar: Path,
    net: str,
    ws6: int,
    workspace6: CountingServer,
    remote6: CountingServer,
) -> None:
    script = nc_read("fd00::2", workspace6.port, timeout=5)
    out_there = nc_read("fd79::2", remote6.port, timeout=5)
    for allowed in (True, False):
        flag = "--allow-host-loopback" if allowed else "--no-allow-host-loopback"
        s = up_in(ws6, workspace, started, flag)
        assert str(s.state["ipv6"]).startswith("on (auto)"), s.state
        assert "ipv6" in s.state["net_options"]  # type: ignore[operator]
        workspace.docker("import", str(busybox_tar), "bb:test")
        got = workspace.docker("run", "--rm", "bb:test", "sh", "-c", script, check=False)
        if allowed:
            assert got.stdout.strip() == "workspace-v6", got
            assert workspace6.count == 1
        else:
            assert "workspace-v6" not in got.stdout
            assert workspace6.count == 1, "a container reached the workspace's ::1"
            # Refused at once in docker-up's namespace (an unreachable route), not a timeout.
            assert "unreachable" in got.stdout + got.stderr, got
        # Either way the IPv6 network out there answers (the default route still works).
        there = workspace.docker("run", "--rm", "bb:test", "sh", "-c", out_there, check=False)
        assert there.stdout.strip() == "remote-v6", there
        assert s.stop() == 0
    doctor = in_netns(ws6, lambda: workspace.docker_up("doctor", "--json"))
    ipv6 = {c["id"]: c for c in json.loads(doctor.stdout)["checks"]}["net.ipv6"]
    assert ipv6["status"] == "ok" and "on (auto)" in ipv6["detail"], ipv6


def test_published_ports_answer_on_the_workspaces_ipv6_loopback(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, net: str, ws6: int
) -> None:
    up_in(ws6, workspace, started)
    workspace.docker("import", str(busybox_tar), "bb:test")
    serve = "while true; do echo web-$0 | nc -l -p 80; done"
    workspace.docker(
        "run",
        "-d",
        *QUICK_STOP,
        "--name",
        "any",
        "-p",
        "18080:80",
        "bb:test",
        "sh",
        "-c",
        serve.replace("$0", "any"),
    )
    workspace.docker(
        "run",
        "-d",
        *QUICK_STOP,
        "--name",
        "one",
        "-p",
        "[::1]:18081:80",
        "bb:test",
        "sh",
        "-c",
        serve.replace("$0", "one"),
    )
    address = workspace.docker("inspect", "-f", "{{.NetworkSettings.GlobalIPv6Address}}", "any")
    assert address.stdout.startswith("fd00:d0c::"), "the container has no IPv6 address"
    # (nc serves one connection at a time: a client in between finds the port closed.)
    wait_for(lambda: read_from(ws6, "::1", 18080) == "web-any", 20, "[::1]:18080")
    wait_for(lambda: read_from(ws6, "127.0.0.1", 18080) == "web-any", 20, "127.0.0.1:18080")
    # [::] is every IPv6 address of the workspace: a client on the peer reaches it too.
    wait_for(lambda: read_from(PEERS[ws6], "fd79::1", 18080) == "web-any", 20, "[fd79::1]:18080")
    wait_for(lambda: read_from(ws6, "::1", 18081) == "web-one", 20, "[::1]:18081")
    # Published on [::1] only: the IPv4 loopback has nothing there, nor the veth's address.
    assert read_from(ws6, "127.0.0.1", 18081).startswith("error")
    assert read_from(PEERS[ws6], "fd79::1", 18081).startswith("error")


def test_no_ipv6_gives_containers_none(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, ws6: int
) -> None:
    s = up_in(ws6, workspace, started, "--no-ipv6")
    assert s.state["ipv6"] == "off (--no-ipv6)"
    workspace.docker("import", str(busybox_tar), "bb:test")
    addrs = workspace.docker(
        "run", "--rm", "bb:test", "ip", "-6", "addr", "show", "scope", "global"
    ).stdout
    assert "inet6" not in addrs


def test_a_container_sees_a_remote_ipv6_clients_own_address(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, net: str, ws6: int
) -> None:
    """A client on the peer (fd79::2) connects to the workspace's [fd79::1]:port: the
    container, reached over IPv6, sees fd79::2 (IPV6_TRANSPARENT), not the proxy."""
    s = up_in(ws6, workspace, started)
    assert "client-address" in s.state["net_options"]  # type: ignore[operator]
    workspace.docker("import", str(busybox_tar), "bb:test")
    workspace.docker(
        "run",
        "-d",
        *QUICK_STOP,
        "--name",
        "seen6",
        "-p",
        "18082:80",
        "bb:test",
        "sh",
        "-c",
        "while true; do nc -l -p 80; done",
    )

    def hold() -> socket.socket:
        return socket.create_connection(("fd79::1", 18082), timeout=10)

    def peers() -> list[str]:
        out = workspace.docker("exec", "seen6", "netstat", "-tn", check=False).stdout
        return [
            r.split()[4] for r in out.splitlines() if r.startswith("tcp") and len(r.split()) > 5
        ]

    # The proxy accepts the client at once; if nc did not listen yet, its connect into the
    # container is refused and the client's connection closed: nothing for netstat to show
    # (ci10, once). So the client comes once the container listens.
    wait_for(lambda: container_listens(workspace, "seen6", 80), 20, "the container's nc")
    client = wait_for(lambda: _try(lambda: in_netns(PEERS[ws6], hold)), 20, "a connection")
    try:
        wait_for(
            lambda: any(p.startswith("fd79::2") or p.startswith("[fd79::2]") for p in peers()),
            20,
            "the container to see fd79::2",
        )
    finally:
        client.close()  # type: ignore[attr-defined]


def _try(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except OSError:
        return None
