"""Published ports reach the workspace (each forwarder), exec/shell enter the namespaces."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Workspace, listening, wait_for
from .servers import (
    OTHER_ADDR,
    container_listens,
    free_port,
    http_get,
    udp_bound,
    udp_echo,
    web_container,
)

pytestmark = pytest.mark.usefixtures("second_address")  # OTHER_ADDR on the loopback


# Each forwarder with each driver it works with (slirp's forwarder is slirp4netns' API).
@pytest.fixture(
    params=[("splice", "slirp4netns"), ("slirp", "slirp4netns"), ("splice", "pasta")],
    ids=["splice-slirp4netns", "slirp-slirp4netns", "splice-pasta"],
)
def daemon(
    request: pytest.FixtureRequest, workspace: Workspace, busybox_tar: Path
) -> Iterator[Workspace]:
    forwarder, driver = request.param
    r = workspace.docker_up("-d", "--port-forwarder", forwarder, "--net", driver)
    assert r.returncode == 0, r.stderr
    workspace.docker("import", str(busybox_tar), "bb:test")
    yield workspace
    workspace.docker_up("stop", timeout=90)


def test_published_tcp_ports(daemon: Workspace) -> None:
    ws = daemon
    p_all, p_lo = free_port(), free_port()
    web_container(ws, "all", "from-all", "-p", f"{p_all}:80")
    web_container(ws, "lo", "from-lo", "-p", f"127.0.0.1:{p_lo}:80")
    web_container(ws, "rand", "from-rand", "-P", "--expose", "80")
    wait_for(lambda: "from-all" in http_get("127.0.0.1", p_all), 20, "the 0.0.0.0 port")
    assert "from-all" in http_get(OTHER_ADDR, p_all)
    # Each container's httpd starts on its own time: "all" answering says nothing of "lo".
    wait_for(lambda: "from-lo" in http_get("127.0.0.1", p_lo), 20, "the 127.0.0.1 port")
    # Bound to loopback only: another workspace address does not answer.
    assert "from-lo" not in http_get(OTHER_ADDR, p_lo)
    # -P: the port Docker reports is the one that works in the workspace.
    reported = ws.docker("port", "rand", "80/tcp").stdout.split()[0]
    port = int(reported.rsplit(":", 1)[1])
    wait_for(lambda: "from-rand" in http_get("127.0.0.1", port), 20, "the -P port")

    ws.docker("rm", "-f", "all", "lo", "rand")
    for p in (p_all, p_lo, port):
        wait_for(lambda p=p: not listening(p), 20, f"port {p} to be freed")


def test_published_udp_port(daemon: Workspace) -> None:
    port = free_port()
    r = daemon.docker(
        "run",
        "-d",
        "--name",
        "echo",
        "-p",
        f"{port}:5353/udp",
        "bb:test",
        "udpecho",
        "5353",
        check=False,
    )
    assert r.returncode == 0, (
        r.stderr + (daemon.runtime_dir / "docker-up/logs/docker-up.log").read_text()
    )
    wait_for(lambda: udp_bound(daemon, "echo", 5353), 20, "udpecho to bind its port")
    reply = udp_echo(port)
    assert reply == b"ping", daemon.docker_up("logs", "-n", "30").stdout[-3000:]
    daemon.docker("rm", "-f", "echo")


def test_port_in_use_in_the_workspace_fails_docker_run(daemon: Workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = daemon.docker("run", "--rm", "-p", f"{port}:80", "bb:test", "true", check=False)
    assert r.returncode != 0
    assert f"port 0.0.0.0:{port}/tcp is already in use in the workspace" in r.stderr


def test_low_port_is_refused_with_a_way_out(daemon: Workspace) -> None:
    r = daemon.docker("run", "--rm", "-p", "80:80", "bb:test", "true", check=False)
    assert r.returncode != 0
    assert "below 1024" in r.stderr and "ip_unprivileged_port_start" in r.stderr


def test_mtu_of_bridge_networks(workspace: Workspace, busybox_tar: Path) -> None:
    assert workspace.docker_up("-d", "--mtu", "9000").returncode == 0
    try:
        workspace.docker("import", str(busybox_tar), "bb:test")
        mtu = "cat /sys/class/net/eth0/mtu"
        assert workspace.docker("run", "--rm", "bb:test", "sh", "-c", mtu).stdout.strip() == "9000"
        # dockerd 20.10 applies its mtu to docker0 only; a user-defined network takes it as
        # a driver option (compose: driver_opts: com.docker.network.driver.mtu).
        workspace.docker("network", "create", "-o", "com.docker.network.driver.mtu=9000", "n1")
        r = workspace.docker("run", "--rm", "--network", "n1", "bb:test", "sh", "-c", mtu)
        assert r.stdout.strip() == "9000"
    finally:
        workspace.docker_up("stop", timeout=90)


TUN_SCRIPT = r"""
import fcntl, os, socket, struct, subprocess
fd = os.open("/dev/net/tun", os.O_RDWR)
# TUNSETIFF with IFF_TUN | IFF_NO_PI
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))
for cmd in ("ip addr add 10.200.0.1/24 dev tun0", "ip link set tun0 up",
            "ip route add 10.201.0.0/24 dev tun0"):
    subprocess.run(cmd.split(), check=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"through-the-tunnel", ("10.201.0.7", 4242))
while True:
    pkt = os.read(fd, 65536)
    if pkt[0] >> 4 == 4 and pkt[9] == 17:  # IPv4, UDP
        print(socket.inet_ntoa(pkt[16:20]), pkt[28:].decode())
        break
"""


def test_exec_and_a_tun_device_inside(daemon: Workspace) -> None:
    ws = daemon
    r = ws.docker_up("exec", "--", "id", "-u")
    assert r.returncode == 0 and r.stdout.strip() == "0"
    assert ws.docker_up("exec", "--", "sh", "-c", "exit 7").returncode == 7
    # A signal passes through too: the exec'd command was killed, so is docker-up's exit.
    assert ws.docker_up("exec", "--", "sh", "-c", "kill -TERM $$").returncode in (-15, 143)
    # The Tailscale case: a TUN device with an address and a route, really used.
    r = ws.docker_up("exec", "--", "/usr/bin/python3", "-c", TUN_SCRIPT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "10.201.0.7 through-the-tunnel"
    # Containers' bridge addresses are reachable from inside.
    web_container(ws, "web", "bridge")
    ip = ws.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web").stdout.strip()
    get = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc {ip} 80"
    wait_for(
        lambda: "bridge" in ws.docker_up("exec", "--", "sh", "-c", get).stdout,
        20,
        "the container from inside the namespace",
    )
    ws.docker("rm", "-f", "web")


def test_shell_has_a_tty(daemon: Workspace) -> None:
    # script(1) gives docker-up shell a terminal; the shell inside sees it.
    cmd = f"SHELL=/bin/sh {daemon.env()['PATH'].split(':')[0]}/docker-up shell"
    r = daemon.run(["script", "-qec", cmd, "/dev/null"], input="tty; id -u; exit 3\n", timeout=30)
    assert "/dev/pts/" in r.stdout and "\n0" in r.stdout.replace("\r", "")
    assert r.returncode == 3


def container_peers(ws: Workspace, name: str) -> list[str]:
    """The remote addresses of the container's TCP connections, as it sees them (its own
    netstat; nc has closed its side already, so any state)."""
    out = ws.docker("exec", name, "netstat", "-tn", check=False).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("tcp")]
    return [r[4].rsplit(":", 1)[0].removeprefix("::ffff:") for r in rows if len(r) > 5]


def test_a_container_sees_a_remote_clients_own_address(
    daemon: Workspace, peer_namespace: str, request: pytest.FixtureRequest
) -> None:
    """A client in another network namespace (another host, for the workspace) connects
    to a published port: the container sees that client's address, not the proxy's
    (splice, IP_TRANSPARENT). A loopback client shows as the bridge's gateway, as with
    Docker's own proxy."""
    forwarder, _ = request.node.callspec.params["daemon"]
    options = json.loads(daemon.docker_up("status", "--json").stdout)["net_options"]
    if forwarder == "slirp":  # slirp4netns itself makes the connections to the container
        assert "client-address" not in options
        return
    assert "client-address" in options
    port = free_port()
    daemon.docker(
        "run",
        "-d",
        "--name",
        "seen",
        "-p",
        f"{port}:80",
        "bb:test",
        "sh",
        "-c",
        "while true; do nc -l -p 80; done",
    )
    # Before the client comes, else the proxy's connect into the container may be refused
    # and the client hold a closed connection (test_ipv6's twin failed so in ci10).
    wait_for(lambda: container_listens(daemon, "seen", 80), 20, "the container's nc")
    ours = peer_namespace.rsplit(".", 1)[0] + ".1"  # the workspace's end of the veth
    hold = (
        "import socket, sys, time\n"
        f"s = socket.create_connection(('{ours}', {port}), timeout=10)\n"
        "sys.stdout.write('connected\\n'); sys.stdout.flush(); time.sleep(60)\n"
    )
    pid = str(peer_namespace.pid)  # type: ignore[attr-defined]
    argv = ["nsenter", "-t", pid, "-n", "/usr/bin/python3", "-c", hold]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        wait_for(
            lambda: peer_namespace in container_peers(daemon, "seen"),
            20,
            f"the container to see {peer_namespace}",
        )
    finally:
        client.kill()
        client.wait()
    daemon.docker("rm", "-f", "seen")
    # A container of its own (nc serves one connection at a time).
    port = free_port()
    daemon.docker(
        "run", "-d", "--name", "seen-lo", "-p", f"{port}:80", "bb:test", "nc", "-l", "-p", "80"
    )
    # The container's nc, not only the proxy (listening(port)): see above.
    wait_for(lambda: listening(port), 20, "the published port")
    wait_for(lambda: container_listens(daemon, "seen-lo", 80), 20, "the container's nc")
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        wait_for(
            lambda: any(
                p.startswith("172.") and p.endswith(".1")
                for p in container_peers(daemon, "seen-lo")
            ),
            20,
            "the loopback client as the bridge's gateway",
        )
    daemon.docker("rm", "-f", "seen-lo")


def test_a_container_sees_a_remote_udp_clients_own_address(
    daemon: Workspace, peer_namespace: str, request: pytest.FixtureRequest
) -> None:
    """The same for a UDP flow: the relay sends from the client's address (udpecho prints
    the sender it sees), and the echo finds its way back to that client."""
    forwarder, _ = request.node.callspec.params["daemon"]
    if forwarder == "slirp":
        return  # no client addresses there (checked above)
    port = free_port()
    daemon.docker(
        "run", "-d", "--name", "seen-udp", "-p", f"{port}:5353/udp", "bb:test", "udpecho", "5353"
    )
    wait_for(lambda: udp_bound(daemon, "seen-udp", 5353), 20, "udpecho to bind its port")
    ours = peer_namespace.rsplit(".", 1)[0] + ".1"
    ask = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n"
        f"s.sendto(b'ping', ('{ours}', {port})); print(s.recv(100).decode())\n"
    )
    pid = str(peer_namespace.pid)  # type: ignore[attr-defined]
    r = subprocess.run(
        ["nsenter", "-t", pid, "-n", "/usr/bin/python3", "-c", ask],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout.strip() == "ping", r.stderr  # the echo came back to the peer
    # udpecho prints the sender before it answers, but its output reaches `docker logs`
    # through the shim and dockerd's log copier, on their own time.
    wait_for(
        lambda: f"from {peer_namespace}" in daemon.docker("logs", "seen-udp").stdout,
        20,
        "udpecho's line in the container's log",
    )
    daemon.docker("rm", "-f", "seen-udp")
