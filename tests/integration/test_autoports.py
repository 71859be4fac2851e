"""Auto ports (issue 26): a listener anywhere in docker-up's namespace answers on the
workspace's loopback by itself, and a hostile container cannot use that against the
workspace. docker-up is started with no options, as the unprivileged test user."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import VENV, Workspace, wait_for
from .servers import (
    OTHER_ADDR,
    SERVER,
    WEB,
    CountingServer,
    answer,
    free_port,
    http_get,
    listener,
    web_container,
)

pytestmark = pytest.mark.usefixtures("second_address")  # OTHER_ADDR on the loopback

# How long a wait for auto ports' reaction may take. Idle, it is one poll (0.25 s) plus a
# process start; beside a workspace's start (CI's load: ~10 runnable tasks on 2 cores) a
# Python start alone has taken seconds, and a 5 s bound failed once before any kill. The
# speed itself is measured in scripts/bench, not here.
REACT = 30


@pytest.fixture
def daemon(workspace: Workspace, busybox_tar: Path) -> Iterator[Workspace]:
    r = workspace.docker_up("-d")
    assert r.returncode == 0, r.stderr
    workspace.docker("import", str(busybox_tar), "bb:test")
    yield workspace
    workspace.docker("rm", "-f", "web", "hostile", check=False)
    workspace.docker_up("stop", timeout=90)


UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[2], int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(100); s.sendto(b"ns-udp:" + data, peer)
"""


@contextlib.contextmanager
def exec_server(
    ws: Workspace, port: int, address: str = "0.0.0.0", script: str = SERVER
) -> Iterator[subprocess.Popen[str]]:
    """A server the user started in the namespace with `docker-up exec`."""
    p = subprocess.Popen(
        [f"{VENV}/bin/docker-up", "exec", "--", "python3", "-c", script, str(port), address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **ws._as_user(),
    )  # type: ignore[call-overload]
    try:
        yield p
    finally:
        p.kill()
        p.wait(10)


def bindable(port: int) -> bool:
    """Can a workspace server take this port again (with SO_REUSEADDR, as servers do)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def table(ws: Workspace) -> dict[str, list[dict[str, object]]]:
    path = ws.runtime_dir / "docker-up" / "auto-ports.json"
    try:
        doc: dict[str, list[dict[str, object]]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"auto": [], "refused": []}
    return doc


def refusal(ws: Workspace, port: int) -> str:
    return next((str(r["reason"]) for r in table(ws)["refused"] if r["port"] == port), "")


def workspace_listeners(port: int) -> list[str]:
    """The addresses the workspace listens on at this port (the kernel's tables, as root)."""
    from dockerup.autoports.rules import parse_tcp

    text = Path("/proc/net/tcp").read_text(), Path("/proc/net/tcp6").read_text()
    return sorted(lst.address for t in text for lst in parse_tcp(t) if lst.port == port)


def host_net_web(ws: Workspace, port: int, name: str = "web", bind: str = "") -> None:
    """A `--network host` container's web server on `port` (busybox httpd)."""
    serve = WEB.format(body=name).replace("-p 80", f"-p {bind}{port}")
    ws.docker("run", "-d", "--name", name, "--network", "host", "bb:test", "sh", "-c", serve)


def test_done_when(daemon: Workspace) -> None:
    """Issue 26's check: a --network host container's server and a server started with
    `docker-up exec` both answer on the workspace's 127.0.0.1 at their own port within 5 s;
    once they are gone, the workspace can bind those ports again (within 1 s)."""
    web_port, exec_port = free_port(), free_port()
    host_net_web(daemon, web_port)
    with exec_server(daemon, exec_port) as p:
        start = time.monotonic()
        wait_for(lambda: "web" in http_get("127.0.0.1", web_port), REACT, "the container's server")
        wait_for(lambda: answer(exec_port) == "ns-server\n", REACT, "the exec'd server")
        print(f"both answered {time.monotonic() - start:.2f} s after the servers started")
        assert not bindable(web_port)
        daemon.docker("rm", "-f", "web")
        gone = time.monotonic()
        wait_for(lambda: bindable(web_port), 1, "the container's port, free again")
        print(f"container's port free {time.monotonic() - gone:.2f} s after rm -f returned")
        p.kill()
        p.wait(10)
        gone = time.monotonic()
        wait_for(lambda: bindable(exec_port), 1, "the exec'd server's port, free again")
        print(f"exec'd server's port free {time.monotonic() - gone:.2f} s after it died")


def test_a_workspace_server_keeps_its_port(daemon: Workspace) -> None:
    """The workspace wins: a namespace listener on a port a workspace server holds does not
    take it; connections still reach the workspace's server, and the refusal is said."""
    ours = CountingServer(b"workspace\n")
    try:
        with exec_server(daemon, ours.port):
            wait_for(
                lambda: "in use in the workspace" in refusal(daemon, ours.port),
                REACT,
                "the refusal",
            )
            for _ in range(3):
                assert answer(ours.port) == "workspace\n"
            assert ours.count == 3
    finally:
        ours.close()
    log = (daemon.runtime_dir / "docker-up" / "logs" / "docker-up.log").read_text()
    assert log.count(f"port {ours.port} not exposed") == 1


def test_a_namespace_loopback_listener_is_exposed_on_loopback_only(daemon: Workspace) -> None:
    port = free_port()
    with exec_server(daemon, port, "127.0.0.1"):
        wait_for(lambda: answer(port) == "ns-server\n", REACT, "the loopback-only server")
        assert workspace_listeners(port) == ["127.0.0.1"]


# -- a hostile container ----------------------------------------------------------------------


def test_hostile_container_cannot_take_a_workspace_port(daemon: Workspace) -> None:
    """Not on the address the workspace's server holds, and not beside it on the other
    loopback either (`localhost` would then be two servers)."""
    for address, family in (("127.0.0.1", socket.AF_INET), (OTHER_ADDR, socket.AF_INET)):
        sock = listener(family, address)
        ours = CountingServer(b"workspace\n", sock=sock)
        try:
            port = ours.port
            host_net_web(daemon, port, name="hostile")
            wait_for(
                lambda p=port: "in use in the workspace" in refusal(daemon, p), REACT, "the refusal"
            )
            assert workspace_listeners(ours.port) == [address]
            if address == "127.0.0.1":
                assert answer(ours.port) == "workspace\n"
        finally:
            daemon.docker("rm", "-f", "hostile")
            ours.close()


def test_hostile_container_cannot_listen_on_workspace_addresses(daemon: Workspace) -> None:
    """A container listening on every address inside gets the workspace's loopback only."""
    port = free_port()
    host_net_web(daemon, port, name="hostile")
    wait_for(lambda: "hostile" in http_get("127.0.0.1", port), REACT, "the exposure")
    assert set(workspace_listeners(port)) <= {"127.0.0.1", "::1"}
    assert "refused" in http_get(OTHER_ADDR, port)


def test_hostile_container_cannot_exhaust_ports_past_the_cap(
    workspace: Workspace, busybox_tar: Path
) -> None:
    """With auto-ports-max 3, six listeners get three ports; the others are refused with
    the cap as the reason, stay free in the workspace, and get in once one goes."""
    workspace.extra_env["DOCKER_UP_AUTO_PORTS_MAX"] = "3"
    r = workspace.docker_up("-d")
    assert r.returncode == 0, r.stderr
    try:
        workspace.docker("import", str(busybox_tar), "bb:test")
        ports = sorted(free_port() for _ in range(6))
        many = (
            "mkdir -p /www; echo x > /www/index.html; "
            + "; ".join(f"httpd -p {p} -h /www" for p in ports)
            + "; exec sleep 1000"
        )
        workspace.docker(
            "run", "-d", "--name", "hostile", "--network", "host", "bb:test", "sh", "-c", many
        )
        wait_for(lambda: len(table(workspace)["refused"]) == 3, REACT, "three refusals")
        exposed = sorted(int(str(e["port"])) for e in table(workspace)["auto"])
        assert len(exposed) == 3
        refused = [r for r in table(workspace)["refused"]]
        assert all("cap of 3" in str(r["reason"]) for r in refused)
        for r in refused:
            assert bindable(int(str(r["port"])))
    finally:
        workspace.docker("rm", "-f", "hostile", check=False)
        workspace.docker_up("stop", timeout=90)


def test_ports_below_1024_follow_the_published_port_rule(daemon: Workspace) -> None:
    probe = 'import socket; socket.socket().bind(("127.0.0.1", 81))'
    if daemon.run(["python3", "-c", probe]).returncode == 0:
        pytest.skip("the test user may bind port 81 here")
    host_net_web(daemon, 81, name="hostile")
    wait_for(lambda: "below 1024" in refusal(daemon, 81), REACT, "the refusal")


def test_published_ports_are_not_doubled(daemon: Workspace) -> None:
    port = free_port()
    web_container(daemon, "web", "published", "-p", f"{port}:80")
    wait_for(lambda: "published" in http_get("127.0.0.1", port), 30, "the published port")
    other = free_port()
    with exec_server(daemon, other):  # one poll later than the published port's proxy
        wait_for(lambda: answer(other) == "ns-server\n", REACT, "a later auto port")
    t = table(daemon)
    assert port not in [e["port"] for e in t["auto"]]
    assert port not in [e["port"] for e in t["refused"]]


# -- docker-up ports ------------------------------------------------------------------------


def ports_rows(ws: Workspace) -> dict[int, dict[str, object]]:
    r = ws.docker_up("ports", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["version"], doc["kind"], doc["schema"]) == (1, "ports", "docker-up.ports/1")
    return {int(row["port"]): row for row in doc["ports"]}


def test_the_ports_command(daemon: Workspace) -> None:
    """One row per port, as the user sees it: a -p port (published, the container's name), a
    --network host container's listener and an exec'd server (auto: the container's name,
    the command), and one refused because a workspace server holds its port (the reason)."""
    pub, web, mine = free_port(), free_port(), free_port()
    ours = CountingServer(b"workspace\n")
    try:
        web_container(daemon, "pub", "published", "-p", f"{pub}:80")
        host_net_web(daemon, web)
        host_net_web(daemon, ours.port, name="hostile")
        with exec_server(daemon, mine):
            wait_for(lambda: "published" in http_get("127.0.0.1", pub), 30, "the -p port")
            wait_for(lambda: "web" in http_get("127.0.0.1", web), REACT, "the host-net server")
            wait_for(lambda: answer(mine) == "ns-server\n", REACT, "the exec'd server")
            wait_for(lambda: refusal(daemon, ours.port), REACT, "the refusal")
            rows = ports_rows(daemon)
            text = daemon.docker_up("ports")
    finally:
        daemon.docker("rm", "-f", "pub", check=False)
        ours.close()
    print(text.stdout)
    assert (rows[pub]["how"], rows[pub]["owner"], rows[pub]["container"]) == (
        "published",
        "pub",
        "pub",
    )
    assert "0.0.0.0" in rows[pub]["addresses"]  # type: ignore[operator]
    assert str(rows[pub]["target"]).endswith(":80")
    assert (rows[web]["how"], rows[web]["owner"], rows[web]["reason"]) == ("auto", "web", None)
    assert "127.0.0.1" in rows[web]["addresses"]  # type: ignore[operator]
    assert rows[mine]["how"] == "auto" and rows[mine]["container"] is None
    assert str(rows[mine]["owner"]).startswith("python3 -c")
    hostile = rows[ours.port]
    assert (hostile["how"], hostile["owner"], hostile["addresses"]) == ("auto", "hostile", [])
    assert "in use in the workspace" in str(hostile["reason"])
    assert text.returncode == 0 and "refused" in text.stdout and "hostile" in text.stdout


def test_ports_when_docker_up_is_not_running(workspace: Workspace) -> None:
    r = workspace.docker_up("ports")
    assert r.returncode != 0
    assert "not running" in r.stderr and "docker-up -d" in r.stderr
    assert "Traceback" not in r.stderr


# -- UDP, on the ports auto-ports-udp names -------------------------------------------------


def udp_ask(port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(b"hi", ("127.0.0.1", port))
        try:
            return s.recv(100)
        except OSError:
            return b""


def udp_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_udp_on_a_named_port_only(workspace: Workspace) -> None:
    """With auto-ports-udp naming one port, a UDP server started with `docker-up exec` on it
    answers on the workspace's 127.0.0.1 (and `docker-up ports` lists it), one on another
    port does not; the named port is free again within 1 s after its server ends."""
    named, other = free_port(), free_port()
    workspace.extra_env["DOCKER_UP_AUTO_PORTS_UDP"] = str(named)
    r = workspace.docker_up("-d")
    assert r.returncode == 0, r.stderr
    try:
        with (
            exec_server(workspace, named, script=UDP_SERVER) as p,
            exec_server(workspace, other, script=UDP_SERVER),
        ):
            wait_for(lambda: udp_ask(named) == b"ns-udp:hi", REACT, "the named UDP port")
            rows = ports_rows(workspace)
            assert (rows[named]["proto"], rows[named]["how"]) == ("udp", "auto")
            assert str(rows[named]["owner"]).startswith("python3 -c")
            assert other not in rows and udp_bindable(other)
            assert udp_ask(other) == b""
            p.kill()
            p.wait(10)
            gone = time.monotonic()
            wait_for(lambda: udp_bindable(named), 1, "the UDP port, free again")
            print(f"UDP port free {time.monotonic() - gone:.2f} s after its server died")
    finally:
        workspace.docker_up("stop", timeout=90)


def inside_helper(ws: Workspace) -> int:
    """The PID of auto-ports' inside helper: the keeper's child running autoinside.py (0:
    none right now)."""
    keeper = json.loads((ws.runtime_dir / "docker-up" / "state.json").read_text())["pid"]
    for task in Path(f"/proc/{keeper}/task").iterdir():
        # A thread or a child that ends while it is read is no helper (this is polled).
        with contextlib.suppress(OSError):
            for pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if "autoports/inside.py" in Path(f"/proc/{pid}/cmdline").read_text():
                        return int(pid)
    return 0


def test_a_new_inside_helper_carries_the_ports_on(workspace: Workspace) -> None:
    """The inside helper killed: the keeper starts another, and both a TCP and a named UDP
    port answer again through it."""
    tcp, udp = free_port(), free_port()
    workspace.extra_env["DOCKER_UP_AUTO_PORTS_UDP"] = str(udp)
    r = workspace.docker_up("-d")
    assert r.returncode == 0, r.stderr
    try:
        with exec_server(workspace, tcp), exec_server(workspace, udp, script=UDP_SERVER):
            wait_for(lambda: answer(tcp) == "ns-server\n", REACT, "the TCP port")
            wait_for(lambda: udp_ask(udp) == b"ns-udp:hi", REACT, "the UDP port")
            old = inside_helper(workspace)
            assert old
            os.kill(old, signal.SIGKILL)  # a process of this test's own docker-up
            killed = time.monotonic()
            wait_for(lambda: inside_helper(workspace) not in (0, old), REACT, "a new inside helper")
            wait_for(lambda: answer(tcp) == "ns-server\n", REACT, "the TCP port again")
            wait_for(lambda: udp_ask(udp) == b"ns-udp:hi", REACT, "the UDP port again")
            print(f"both answered again {time.monotonic() - killed:.2f} s after the kill")
    finally:
        workspace.docker_up("stop", timeout=90)


def test_workspace_listeners_are_never_taken_for_the_namespaces(workspace: Workspace) -> None:
    """A new inside helper shows the workspace's own tables until it has joined the
    namespace: read then, every workspace listener looked like a namespace listener, and was
    refused and logged as "in use in the workspace" at each start."""
    ours = CountingServer(b"workspace\n")
    try:
        assert workspace.docker_up("-d").returncode == 0
        try:
            wait_for(lambda: table(workspace)["auto"] is not None, REACT, "the first table")
            port = free_port()
            with exec_server(workspace, port):  # a later poll than the helper's start
                wait_for(lambda: answer(port) == "ns-server\n", REACT, "the exec'd server")
            assert ours.port not in [r["port"] for r in table(workspace)["refused"]]
            log = (workspace.runtime_dir / "docker-up" / "logs" / "docker-up.log").read_text()
            assert f"port {ours.port} not exposed" not in log, log
        finally:
            workspace.docker_up("stop", timeout=90)
    finally:
        ours.close()
