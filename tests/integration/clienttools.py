"""The real clients' side of the clients tests (test_clients, test_keepid): where
scripts/clients put them, the docker CLI with BuildKit, the Dev Containers round trip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .harness import DOCKER_CLI, User, Workspace, end_strays

TESTS = Path(__file__).resolve().parents[1]


def clients_dir() -> Path:
    d = os.environ.get("DOCKER_UP_TEST_CLIENTS")
    if not d or not (Path(d) / "cli-plugins" / "docker-compose").exists():
        pytest.fail("the clients are not fetched: run scripts/clients (scripts/test does)")
    return Path(d)


def docker(ws: Workspace, *args: str, timeout: float = 180) -> str:
    """The docker CLI as the user, BuildKit on (the harness's ws.docker turns it off)."""
    return ws.run([DOCKER_CLI, *args], timeout=timeout, check=True).stdout


def copy_tree(ws: Workspace, src: Path, name: str) -> Path:
    dest = ws.root / name
    shutil.copytree(src, dest)
    for d, _, files in os.walk(dest):
        os.chown(d, ws.user.uid, ws.user.gid)
        for f in files:
            os.chown(Path(d) / f, ws.user.uid, ws.user.gid)
    return dest


def http_get(host: str, port: int) -> str:
    import socket

    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError as e:
        return f"failed: {e}"


class WriteRefused(AssertionError):
    """The dev container's user may not write the workspace folder (README: dev containers
    with a non-root user)."""


def devcontainer_round_trip(ws: Workspace, folder: Path) -> None:
    """`devcontainer up` (the Dev Containers CLI, all defaults) on a folder whose image adds
    user dev (uid 1000) with "remoteUser": "dev": dev writes the workspace folder, and the
    workspace user edits and deletes what it wrote. WriteRefused: dev could not write."""
    cli = str(clients_dir() / "devcontainers" / "node_modules" / ".bin" / "devcontainer")
    up = ws.run([cli, "up", "--workspace-folder", str(folder)], timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    result = json.loads(up.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "success" and result["remoteUser"] == "dev", result
    inside = f"{result['remoteWorkspaceFolder']}/from-dev"
    try:

        def in_dev(script: str) -> subprocess.CompletedProcess[str]:
            argv = [cli, "exec", "--workspace-folder", str(folder), "sh", "-c", script]
            return ws.run(argv, timeout=120)

        # updateRemoteUserUID gave dev the workspace user's uid, and dev reads the folder.
        ids = in_dev("id -u; id -un; cat .devcontainer/devcontainer.json >/dev/null && echo READ")
        assert ids.stdout.split() == [str(ws.user.uid), "dev", "READ"], ids
        wrote = in_dev(f"echo from-dev > {inside}")
        if wrote.returncode != 0:
            raise WriteRefused(wrote.stderr)
        made = folder / "from-dev"
        # The workspace user edits it and deletes it.
        ws.run(["sh", "-c", f"echo edited >> {made}"], check=True)
        assert made.read_text() == "from-dev\nedited\n"
        ws.run(["rm", str(made)], check=True)
        assert not made.exists()
    finally:
        label = f"label=devcontainer.local_folder={folder}"
        ids_left = docker(ws, "ps", "-aq", "--filter", label).split()
        if ids_left:
            docker(ws, "rm", "-f", *ids_left)


@contextmanager
def started_with_plugins(
    user: User, busybox_tar: Path, prefix: str, plugins: tuple[str, ...], **env: str
) -> Iterator[Workspace]:
    """docker-up -d for the test user (env: its settings), the given clients as the user's
    CLI plugins (in the DOCKER_CONFIG this workspace has, as ~/.docker would be), busybox
    imported as bb:test; stopped and removed after."""
    ws = Workspace.create(user, prefix, **env)
    config = ws.root / "docker-config"
    (config / "cli-plugins").mkdir(parents=True)
    for p in plugins:
        shutil.copy(clients_dir() / "cli-plugins" / p, config / "cli-plugins" / p)
    for d, _, files in os.walk(config):
        os.chown(d, user.uid, user.gid)
        for f in files:
            os.chown(Path(d) / f, user.uid, user.gid)
    ws.extra_env["DOCKER_CONFIG"] = str(config)
    try:
        r = ws.docker_up("-d")
        assert r.returncode == 0, r.stderr
        ws.docker("import", str(busybox_tar), "bb:test")
        ws.extra_env["DOCKER_HOST"] = f"unix://{ws.runtime_dir}/docker-up/docker.sock"
        yield ws
    finally:
        ws.docker_up("stop", timeout=90)
        end_strays(ws.root)
        shutil.rmtree(ws.root, ignore_errors=True)
