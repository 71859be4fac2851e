"""A compose stack through pytest-docker's docker_services, against docker-up's daemon."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_docker.plugin import Services, get_docker_services

from .harness import User, Workspace

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "compose" / "docker-compose.yml"
PROJECT = "dockerup-compose"


@pytest.fixture(scope="module")
def compose_daemon(user: User, busybox_tar: Path) -> Iterator[Workspace]:
    """docker-up for the test user; pytest-docker's compose talks to it through DOCKER_HOST.
    Module-scoped (pyproject sets --container-scope=module), like pytest-docker's own."""
    ws = Workspace(user, user.mkdtemp("dockerup-compose-"))
    os.chmod(ws.root, 0o755)
    for sub in ("run", "data", "config"):
        (ws.root / sub).mkdir(mode=0o700)
        os.chown(ws.root / sub, user.uid, user.gid)
    assert ws.docker_up("-d").returncode == 0
    ws.docker("import", str(busybox_tar), "bb:test")
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{ws.runtime_dir}/docker-up/docker.sock"
    try:
        yield ws
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old
        ws.docker_up("stop", timeout=90)
        shutil.rmtree(ws.root, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_compose_command() -> str:
    return "docker-compose"  # Debian's compose v1


@pytest.fixture(scope="module")
def docker_compose_file(compose_daemon: Workspace) -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="module")
def docker_compose_project_name() -> str:
    return PROJECT


@pytest.fixture(scope="module")
def docker_setup() -> list[str]:
    return ["up -d"]  # compose v1 has no --wait, and there is nothing to build


@pytest.fixture(scope="module")
def docker_cleanup() -> list[str]:
    return ["down -v"]


def compose(*args: str, project: str = PROJECT) -> str:
    r = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "-p", project, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def http_get(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            return s.recv(65536).decode(errors="replace") + s.recv(65536).decode()
    except OSError:
        return ""


def test_compose_stack(docker_services: Services) -> None:
    port = docker_services.port_for("web", 80)
    docker_services.wait_until_responsive(
        lambda: "hello-from-web" in http_get(port), timeout=30, pause=0.1
    )
    # Service-to-service name resolution on the user-defined network (busybox's nslookup
    # has its own resolver; the static binary's getaddrinfo has no NSS).
    out = compose("exec", "-T", "client", "nslookup", "web")
    # The A answer; an empty AAAA section may come before or after it.
    found = re.search(r"Name:\s*web\S*\s*\nAddress:\s*(\d+\.\d+\.\d+\.\d+)", out)
    assert found, out
    ip = found.group(1)
    page = compose(
        "exec",
        "-T",
        "client",
        "sh",
        "-c",
        f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {ip} 80",
    )
    assert "hello-from-web" in page
    # The user-defined network has the tap device's MTU.
    assert compose("exec", "-T", "client", "cat", "/sys/class/net/eth0/mtu").strip() == "65520"


def test_second_run_finds_the_volume(compose_daemon: Workspace) -> None:
    """Self-contained (whatever ran before): write into the named volume, take the stack
    down keeping volumes, bring it up again and read it back; `down -v` then removes it."""
    project = f"{PROJECT}-volume"
    up = ["up -d"]
    with get_docker_services("docker-compose", str(COMPOSE_FILE), project, up, ["down"]):
        compose("exec", "-T", "client", "sh", "-c", "echo persisted > /data/file", project=project)
    with get_docker_services("docker-compose", str(COMPOSE_FILE), project, up, ["down -v"]):
        got = compose("exec", "-T", "client", "cat", "/data/file", project=project)
        assert got.strip() == "persisted"
    volumes = compose_daemon.docker("volume", "ls", "-q").stdout
    assert f"{project}_data" not in volumes
