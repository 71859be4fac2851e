"""The workspace user's files are precious: docker-up never replaces, empties or rewrites
what it did not create, and its own logs neither vanish at a restart nor grow without end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import VENV, Workspace, wait_for


def own(ws: Workspace, *paths: Path) -> None:
    for p in paths:
        os.chown(p, ws.user.uid, ws.user.gid, follow_symlinks=False)


@pytest.fixture
def home(workspace: Workspace) -> Iterator[Workspace]:
    h = workspace.root / "home"
    h.mkdir()
    own(workspace, h)
    workspace.extra_env["HOME"] = str(h)
    yield workspace
    workspace.docker_up("stop", timeout=90)


def test_a_symlinked_rc_file_is_written_through(home: Workspace) -> None:
    """Dotfile managers link ~/.bashrc into their repository: the link stays a link, the
    block goes into its target, and disable leaves the target byte-identical."""
    h = Path(home.extra_env["HOME"])
    (h / "dotfiles").mkdir()
    target = h / "dotfiles" / "bashrc"
    original = b"alias ll='ls -l'\n"
    target.write_bytes(original)
    (h / ".bashrc").symlink_to("dotfiles/bashrc")
    own(home, h / "dotfiles", target, h / ".bashrc")
    assert home.docker_up("autostart", "enable", "--shell", "bash").returncode == 0
    assert (h / ".bashrc").is_symlink()
    assert ">>> docker-up" in target.read_text()
    assert home.docker_up("autostart", "disable").returncode == 0
    assert (h / ".bashrc").is_symlink() and target.read_bytes() == original


def test_a_dangling_rc_link_is_left_alone_with_the_reason(home: Workspace) -> None:
    h = Path(home.extra_env["HOME"])
    (h / ".bashrc").symlink_to("dotfiles/missing")
    own(home, h / ".bashrc")
    r = home.docker_up("autostart", "enable", "--shell", "bash")
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert (h / ".bashrc").is_symlink() and not (h / "dotfiles").exists()


def test_a_data_root_docker_up_did_not_create_is_refused(workspace: Workspace) -> None:
    """dockerd empties <data-root>/tmp and chmods the root at every start."""
    mine = workspace.root / "thesis"
    (mine / "tmp").mkdir(parents=True)
    (mine / "tmp" / "draft.txt").write_text("three years of work\n")
    own(workspace, mine, mine / "tmp", mine / "tmp" / "draft.txt")
    os.chmod(mine, 0o755)
    workspace.extra_env["DOCKER_UP_DATA_ROOT"] = str(mine)
    r = workspace.docker_up("-d")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "is not empty, and docker-up did not create it" in r.stderr
    assert "Traceback" not in r.stderr
    assert (mine / "tmp" / "draft.txt").read_text() == "three years of work\n"
    assert mine.stat().st_mode & 0o777 == 0o755
    assert not (workspace.runtime_dir / "docker-up" / "docker.sock").exists()


def test_an_empty_data_root_is_claimed_and_used_again(workspace: Workspace) -> None:
    root = workspace.root / "fresh-root"
    root.mkdir()
    own(workspace, root)
    workspace.extra_env["DOCKER_UP_DATA_ROOT"] = str(root)
    for _ in range(2):  # the second start finds its own marker
        r = workspace.docker_up("-d")
        assert r.returncode == 0, r.stderr
        assert (root / ".docker-up-data-root").exists()
        assert workspace.docker_up("stop", timeout=90).returncode == 0


def test_logs_keep_the_last_run_and_stay_under_their_cap(workspace: Workspace) -> None:
    workspace.extra_env["DOCKER_UP_LOG_MAX"] = "65536"
    logs = workspace.runtime_dir / "docker-up" / "logs"
    assert workspace.docker_up("-d").returncode == 0
    first = (logs / "dockerd.log").read_text()
    assert "API listen" in first
    assert workspace.docker_up("stop", timeout=90).returncode == 0
    assert workspace.docker_up("-d").returncode == 0
    try:
        # The first run's log is kept beside the new one.
        assert (logs / "dockerd.log.1").read_text().startswith(first)
        # As if dockerd had written a lot: the keeper caps the file and keeps the rest.
        with open(logs / "dockerd.log", "a") as f:
            f.write("x" * 200_000 + "\nthe last line before the cap\n")
        wait_for(lambda: (logs / "dockerd.log").stat().st_size < 65536, 30, "the cap")
        assert "the last line before the cap" in (logs / "dockerd.log.1").read_text()
        # Said once the cap is done (the message follows the copy).
        wait_for(
            lambda: "reached 65536 bytes" in (logs / "docker-up.log").read_text(),
            5,
            "the cap's message",
        )
    finally:
        workspace.docker_up("stop", timeout=90)


@pytest.fixture
def squatted(workspace: Workspace) -> Iterator[tuple[Path, socket.socket]]:
    """Another user (root here) makes the workspace user's /tmp fallback first, with a
    socket in it that would receive the user's Docker API traffic."""
    d = Path(f"/tmp/docker-up-{workspace.user.uid}")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    trap = socket.socket(socket.AF_UNIX)
    trap.bind(str(d / "docker.sock"))
    os.chmod(d / "docker.sock", 0o777)
    trap.listen()
    trap.setblocking(False)
    (d / "docker-up.pid").write_text("1")  # "it runs": the snippet would not start its own
    try:
        yield d, trap
    finally:
        trap.close()
        shutil.rmtree(d, ignore_errors=True)


def without_xdg_runtime(ws: Workspace) -> dict[str, str]:
    env = ws.env()
    del env["XDG_RUNTIME_DIR"]
    return env


def test_a_squatted_runtime_fallback_is_never_used(
    workspace: Workspace, squatted: tuple[Path, socket.socket]
) -> None:
    _, trap = squatted
    env = without_xdg_runtime(workspace)
    snippet = workspace.docker_up("shell-init", "sh").stdout
    script = f'{snippet}\necho "DOCKER_HOST=${{DOCKER_HOST:-unset}}"\n'
    for shell in ("sh", "bash", "zsh"):
        r = subprocess.run(
            [shell, "-c", script],
            env=env,
            user=workspace.user.uid,
            group=workspace.user.gid,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "DOCKER_HOST=unset" in r.stdout, (shell, r.stdout, r.stderr)
        assert "is not yours" in r.stderr
    fish = workspace.docker_up("shell-init", "fish").stdout + '\necho "DH=$DOCKER_HOST"\n'
    r = subprocess.run(
        ["fish", "-c", fish],
        env=env,
        user=workspace.user.uid,
        group=workspace.user.gid,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout.strip() == "DH=" and "is not yours" in r.stderr, (r.stdout, r.stderr)
    for args in (("status",), ("logs",), ("stop",), ("exec", "--", "true"), ("-d",)):
        r = subprocess.run(
            [*workspace_cmd(), *args],
            env=env,
            user=workspace.user.uid,
            group=workspace.user.gid,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "not a directory owned by you" in r.stderr, (args, r)
        assert "Traceback" not in r.stderr
    with pytest.raises(BlockingIOError):
        trap.accept()  # nobody ever connected to it


def workspace_cmd() -> list[str]:
    return [f"{VENV}/bin/docker-up"]
