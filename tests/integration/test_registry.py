"""Pulls and pushes through a real registry (Debian's docker-registry, distribution 2.8)
that the workspace user runs on the workspace's 127.0.0.1, as a developer would: by hand,
as a mirror, and what dockerd's own connections may and may not reach."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import DockerUp, Workspace, up, wait_for
from .servers import free_port

REGISTRY = "/usr/bin/docker-registry"


class Registry:
    """docker-registry serving a directory of the test user's, on 127.0.0.1:port."""

    def __init__(self, ws: Workspace, port: int) -> None:
        self.port = port
        self.dir = ws.root / "registry"
        self.dir.mkdir()
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        os.chown(self.dir, ws.user.uid, ws.user.gid)
        self.log = open(self.dir / "log", "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={ws.user.uid}",
                f"--regid={ws.user.gid}",
                "--clear-groups",
                REGISTRY,
                "serve",
                str(config),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self.answers, 20, "the registry")
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}; its log:\n{(self.dir / 'log').read_text()[-2000:]}") from e

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def repositories(self) -> list[str]:
        url = f"http://127.0.0.1:{self.port}/v2/_catalog"
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.load(r)["repositories"])

    def requests(self) -> int:
        """How many HTTP requests it served (its access log)."""
        text = (self.dir / "log").read_text()
        return sum(1 for line in text.splitlines() if '"GET /v2/' in line or '"HEAD /v2/' in line)

    def stop(self) -> None:
        self.p.kill()
        self.p.wait()
        self.log.close()


@pytest.fixture
def registry(workspace: Workspace) -> Iterator[Registry]:
    if not Path(REGISTRY).exists():
        pytest.fail("docker-registry is not installed: run scripts/install")
    r = Registry(workspace, free_port())
    yield r
    r.stop()


def docker_up_log(ws: Workspace) -> str:
    logs = ws.runtime_dir / "docker-up" / "logs"
    return "".join(p.read_text() for p in sorted(logs.glob("docker-up.log*")))


@pytest.mark.parametrize("accel", ["--daemon-net-accel", "--no-daemon-net-accel"])
def test_push_and_pull_through_the_workspaces_registry(
    workspace: Workspace,
    started: list[DockerUp],
    busybox_tar: Path,
    registry: Registry,
    net: str,
    accel: str,
) -> None:
    s = up(workspace, started, "--allow-host-loopback", accel)
    on = accel == "--daemon-net-accel"
    assert ("daemon-net-accel" in s.state["net_options"]) is on  # type: ignore[operator]
    image = f"10.0.2.2:{registry.port}/team/bb:1"
    workspace.docker("import", str(busybox_tar), image)
    # 10.0.2.2 is the workspace's loopback: trusted over plain HTTP, as localhost would be.
    workspace.docker("push", image)
    assert registry.repositories() == ["team/bb"]
    workspace.docker("rmi", image)
    workspace.docker("pull", image)
    assert workspace.docker("run", "--rm", image, "echo", "pulled").stdout.strip() == "pulled"
    said = "dockerd's own connections leave from the workspace"
    if on:
        wait_for(lambda: said in docker_up_log(workspace), 10, "the agent's word")
    else:
        assert said not in docker_up_log(workspace)


def test_pull_through_a_registry_mirror(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, registry: Registry
) -> None:
    mirror = f"http://10.0.2.2:{registry.port}"
    up(workspace, started, "--allow-host-loopback", f"--dockerd-arg=--registry-mirror={mirror}")
    # What the mirror holds for Docker Hub's library/mirrored:1.
    workspace.docker("import", str(busybox_tar), f"10.0.2.2:{registry.port}/library/mirrored:1")
    workspace.docker("push", f"10.0.2.2:{registry.port}/library/mirrored:1")
    # A short name is Docker Hub's; nothing but the mirror is reachable.
    workspace.docker("pull", "mirrored:1")
    out = workspace.docker("run", "--rm", "mirrored:1", "echo", "via-mirror").stdout
    assert out.strip() == "via-mirror"


def test_dockerd_reaches_the_workspaces_loopback_only_when_allowed(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, registry: Registry, net: str
) -> None:
    # Host loopback not allowed (the default), dockerd's connections still accelerated: a
    # pull from 10.0.2.2 is refused, and its own localhost is not the workspace's.
    s = up(workspace, started)
    assert "daemon-net-accel" in s.state["net_options"]  # type: ignore[operator]
    before = registry.requests()
    for where in (
        f"10.0.2.2:{registry.port}",
        f"127.0.0.1:{registry.port}",
        f"localhost:{registry.port}",
    ):
        r = workspace.docker("pull", f"{where}/team/bb:1", check=False, timeout=60)
        assert r.returncode != 0, r
    assert registry.requests() == before, "dockerd reached the workspace's loopback"


def test_a_restarted_dockerd_still_pulls_from_the_workspace(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, registry: Registry
) -> None:
    s = up(workspace, started, "--allow-host-loopback")
    image = f"10.0.2.2:{registry.port}/team/bb:1"
    workspace.docker("import", str(busybox_tar), image)
    workspace.docker("push", image)
    state_file = workspace.runtime_dir / "docker-up" / "state.json"
    old = int(s.state["dockerd_pid"])  # type: ignore[call-overload]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        doc = json.loads(state_file.read_text())
        return bool(doc["restarts"] == 1 and doc["dockerd_pid"] != old)

    wait_for(restarted, 60, "the keeper to restart dockerd")
    wait_for(lambda: workspace.docker("version", check=False).returncode == 0, 60, "the API")
    workspace.docker("rmi", image)
    workspace.docker("pull", image)
    said = "dockerd's own connections leave from the workspace"
    # One line per dockerd: the new one's connections went to the agent too.
    wait_for(lambda: docker_up_log(workspace).count(said) == 2, 10, "the agent's word, twice")
