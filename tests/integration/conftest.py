from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockerup.facts import has_default_route

from .harness import VENV, DockerUp, User, Workspace

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def user() -> User:
    if os.geteuid() != 0:
        pytest.skip("integration tests run as root (they act as an unprivileged test user)")
    if not (VENV / "bin" / "docker-up").exists():
        pytest.fail(f"{VENV} has no docker-up: run scripts/install first")
    subprocess.run([str(ROOT / "scripts" / "test-user")], check=True)
    return User.get()


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
    root = user.mkdtemp("dockerup-ws-")
    os.chmod(root, 0o755)
    for sub in ("run", "data", "config"):
        (root / sub).mkdir(mode=0o700)
        os.chown(root / sub, user.uid, user.gid)
    ws = Workspace(user, root)
    yield ws
    # The data-root holds files owned by subordinate ids: only root can remove them.
    shutil.rmtree(root, ignore_errors=True)


# The driver suite: tests that take `net` run once per network driver.
NET_DRIVERS = ("slirp4netns", "pasta")


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
