from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute, NetlinkError, NetNS

from dockerup.host.facts import has_default_route

from .harness import (
    NET_DRIVERS,
    USER,
    VENV,
    DockerUp,
    User,
    Workspace,
    end_strays,
    subid_files,
    wait_for,
)
from .servers import OTHER_ADDR, CountingServer

ROOT = Path(__file__).resolve().parents[2]


# The longest modules, first: parallel workers (scripts/test) then end together instead of
# one of them starting the longest module last.
SLOW_FIRST = [
    "test_engines",
    "test_workspace_image",
    "test_accel_attacks",
    "test_ipv6",
    "test_registry",
    "test_accel",
    "test_lifecycle",
    "test_autoports",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests: marked, and the longest modules first (see SLOW_FIRST)."""
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)

    def rank(item: pytest.Item) -> int:
        stem = Path(str(item.fspath)).stem
        return SLOW_FIRST.index(stem) if stem in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a module stays


def worker() -> int:
    """This pytest-xdist worker's number (0 without xdist)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


@pytest.fixture(scope="session")
def user() -> User:
    """The test user; each parallel worker has its own, with its own subordinate range
    (tests count the user's processes)."""
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (they act as an unprivileged test user)")
    if not (VENV / "bin" / "docker-up").exists():
        pytest.fail(f"{VENV} has no docker-up: run scripts/install first")
    n = worker()
    name, first = (USER, 300000) if n == 0 else (f"{USER}{n}", 1_000_000 + 65536 * n)
    # Two suites at once on one machine (DOCKER_UP_TEST_USER differs) must not share
    # subordinate ids either: DOCKER_UP_TEST_SUBID_BASE moves the whole suite's ranges.
    if "DOCKER_UP_TEST_SUBID_BASE" in os.environ:
        first = int(os.environ["DOCKER_UP_TEST_SUBID_BASE"]) + 65536 * n
    with subid_files(exclusive=True):  # usermod may rewrite /etc/subuid and /etc/subgid
        subprocess.run([str(ROOT / "scripts" / "test-user"), name, str(first)], check=True)
    return User.get(name)


@pytest.fixture(scope="session")
def busybox_tar() -> Iterator[Path]:
    # Not under pytest's own tmp dir: that is root's, mode 0700, and the test user reads this.
    d = Path(tempfile.mkdtemp(prefix="dockerup-img-"))
    os.chmod(d, 0o755)
    out = d / "busybox.tar"
    subprocess.run([str(ROOT / "scripts" / "busybox-rootfs"), str(out)], check=True)
    os.chmod(out, 0o644)
    yield out
    shutil.rmtree(d)


@pytest.fixture
def workspace(user: User) -> Iterator[Workspace]:
    ws = Workspace.create(user)
    root = ws.root
    yield ws
    # A test that failed half-way may have left its docker-up running: it must not outlive
    # the test (it would break the next one and CI).
    end_strays(root)
    # The data-root holds files owned by subordinate ids: only root can remove them.
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=NET_DRIVERS)
def net(request: pytest.FixtureRequest, workspace: Workspace) -> str:
    """The network driver for this test's docker-up (through DOCKER_UP_NET)."""
    driver: str = request.param
    if driver == "pasta" and not has_default_route(Path("/proc/net/route").read_text()):
        pytest.fail("pasta needs a default route: run the tests through scripts/isolated")
    workspace.extra_env["DOCKER_UP_NET"] = driver
    return driver


@pytest.fixture
def started(workspace: Workspace) -> Iterator[list[DockerUp]]:
    """Every docker-up a test starts goes here, and is gone, by PID, when the test ends."""
    stacks: list[DockerUp] = []
    yield stacks
    for s in stacks:
        if s.p.poll() is None:
            s.stop()
        s.kill_all()


@pytest.fixture
def loopback_server() -> Iterator[int]:
    """A TCP server on the workspace's 127.0.0.1 that answers 'hello'."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            with c:
                c.sendall(b"hello\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


@pytest.fixture(scope="module")
def second_address() -> None:
    """OTHER_ADDR on the test namespace's loopback: a second workspace address (modules
    that need it name it in their pytestmark)."""
    subprocess.run(["ip", "addr", "replace", f"{OTHER_ADDR}/32", "dev", "lo"], check=True)


@pytest.fixture
def secret() -> Iterator[CountingServer]:
    """The workspace's own service on its loopback, which a container must not reach."""
    s = CountingServer()
    yield s
    s.close()


PEER_SERVER = """
import socket
s = socket.socket(); s.bind(("0.0.0.0", 7070)); s.listen(128)
while True:
    c, _ = s.accept(); c.sendall(b"peer-ns\\n"); c.close()
"""


def peer_answers(addr: str, port: int = 7070) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1) as c:
            return c.recv(100) == b"peer-ns\n"
    except OSError:
        return False


def veth_to(pid: int, near: str, far: str, net: str) -> None:
    """A veth pair over netlink (pyroute2): `near` here as NET.1/24, `far` in the network
    namespace of `pid` as NET.2/24, both up, and that namespace's loopback up."""
    with IPRoute() as ip:
        ip.link("add", ifname=near, kind="veth", peer={"ifname": far, "net_ns_pid": pid})
        (idx,) = ip.link_lookup(ifname=near)
        ip.addr("add", index=idx, address=f"{net}.1", prefixlen=24)
        ip.link("set", index=idx, state="up")
    with NetNS(f"/proc/{pid}/ns/net") as ns:
        (idx,) = ns.link_lookup(ifname=far)
        ns.addr("add", index=idx, address=f"{net}.2", prefixlen=24)
        for index in (idx, *ns.link_lookup(ifname="lo")):
            ns.link("set", index=index, state="up")


class Peer(str):
    """The peer namespace's address; .pid is a process in that namespace (for nsenter)."""

    pid: int


@pytest.fixture(scope="module")
def peer_namespace() -> Iterator[str]:
    """A server in a network namespace of its own, reached from the workspace through a veth
    pair: an address only docker-up's default route leads to. Root does this (the tests run
    as root in their isolated namespace); each parallel worker has its own link and subnet."""
    n = worker()
    net, near, far = f"192.168.{88 + n}", f"dup{n}a", f"dup{n}b"
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    server = None
    try:
        ns = ["nsenter", "-t", str(holder.pid), "-n"]
        wait_for(
            lambda: os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
            10,
            "the peer namespace",
        )
        veth_to(holder.pid, near, far, net)
        server = subprocess.Popen([*ns, "/usr/bin/python3", "-c", PEER_SERVER])
        wait_for(lambda: peer_answers(f"{net}.2"), 10, "the peer server")
        peer = Peer(f"{net}.2")
        peer.pid = holder.pid
        yield peer
    finally:
        for p in (server, holder):
            if p:
                p.kill()
                p.wait()
        with IPRoute() as ip, contextlib.suppress(IndexError, NetlinkError):
            ip.link("del", index=ip.link_lookup(ifname=near)[0])
