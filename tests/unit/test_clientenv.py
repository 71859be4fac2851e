"""What a user's shell gets from docker-up for the clients: the same values whichever way
it asks (the export line after `up`, the shell-init snippet of each shell)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dockerup import shellinit
from dockerup.settings import clientenv

WANT = {
    "TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1",
    "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
}


def shell_env(shell: str, script: str, tmp_path: Path) -> dict[str, str]:
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    (tmp_path / "run").mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    out = subprocess.run(
        [shell, "-c", f"{script}\nenv"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_the_export_line_sets_docker_host_first_then_the_clients(tmp_path: Path) -> None:
    text = clientenv.export_lines("unix:///run/user/1000/docker-up/docker.sock")
    assert text.splitlines()[0] == "export DOCKER_HOST=unix:///run/user/1000/docker-up/docker.sock"
    got = shell_env("sh", text, tmp_path)
    assert got["DOCKER_HOST"] == "unix:///run/user/1000/docker-up/docker.sock"
    assert {k: got[k] for k in WANT} == WANT


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_each_shell_init_exports_them(shell: str, tmp_path: Path) -> None:
    got = shell_env(
        shell, shellinit.snippet(shell, "/nonexistent/docker-up", start=False), tmp_path
    )
    assert got["DOCKER_HOST"] == f"unix://{tmp_path}/run/docker-up/docker.sock"
    assert {k: got.get(k) for k in WANT} == WANT


def test_not_exported_when_the_runtime_dir_is_not_ours(tmp_path: Path) -> None:
    """The guard that withholds DOCKER_HOST withholds them too: no half of the settings."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "docker-up").symlink_to("/tmp")
    got = shell_env("sh", shellinit.snippet("sh", "/nonexistent/docker-up", start=False), tmp_path)
    assert "DOCKER_HOST" not in got and not set(WANT) & set(got)


def test_the_dev_container_feature_exports_the_same() -> None:
    """The feature's profile.d is written at image build, without docker-up's Python on a
    shell's path: its lines are clientenv's, held here."""
    install = Path(__file__).resolve().parents[2] / "deploy/devcontainer/src/docker-up/install.sh"
    text = install.read_text()
    lines = clientenv.posix_exports()
    assert "export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1" in lines
    for line in lines:
        assert f"\n{line}\n" in text, line
