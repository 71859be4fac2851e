"""Dotfile-driven auto start in real bash, zsh and fish, with a throwaway HOME."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dockerup.settings.clientenv import export_lines

from .harness import VENV, Workspace, processes_of, wait_for


@pytest.fixture
def home(workspace: Workspace) -> Iterator[Workspace]:
    h = workspace.root / "home"
    h.mkdir()
    os.chown(h, workspace.user.uid, workspace.user.gid)
    workspace.extra_env["HOME"] = str(h)
    yield workspace
    workspace.docker_up("stop", timeout=90)
    wait_for(lambda: not processes_of(workspace.user.uid, "dockerd"), 30, "no dockerd")


def in_shell(ws: Workspace, shell: str, command: str) -> tuple[int, str]:
    argv = {
        "bash": ["bash", "-i", "-c", command],
        "zsh": ["zsh", "-i", "-c", command],
        "fish": ["fish", "-c", command],
    }[shell]
    r = ws.run(argv, timeout=120)
    return r.returncode, r.stdout


def sock(ws: Workspace) -> str:
    return f"unix://{ws.runtime_dir}/docker-up/docker.sock"


def test_enable_twice_then_disable_leaves_the_file_byte_identical(home: Workspace) -> None:
    rc = Path(home.extra_env["HOME"]) / ".bashrc"
    original = b"alias ll='ls -l'\nexport EDITOR=vi"  # no final newline: the hard case
    rc.write_bytes(original)
    os.chown(rc, home.user.uid, home.user.gid)
    for _ in range(2):
        assert home.docker_up("autostart", "enable", "--shell", "bash").returncode == 0
    text = rc.read_text()
    assert text.count(">>> docker-up") == 1 and text.startswith(original.decode())
    status = json.loads(home.docker_up("autostart", "status", "--json").stdout)
    assert {s["shell"]: s["installed"] for s in status["shells"]}["bash"] is True
    assert home.docker_up("autostart", "disable").returncode == 0
    assert rc.read_bytes() == original


@pytest.mark.parametrize("sh", ["bash", "fish"])
def test_autostart_installs_shell_completion(home: Workspace, sh: str) -> None:
    """The shell `autostart enable` edits completes docker-up's commands; disable removes
    the completion script again (it is docker-up's own file)."""
    assert home.docker_up("autostart", "enable", "--no-lazy", "--shell", sh).returncode == 0
    if sh == "bash":
        # What bash's completion asks, answered by docker-up itself (Typer's protocol).
        ask = (
            f"PATH={VENV}/bin:$PATH; complete -p docker-up && COMP_WORDS='docker-up st' "
            "COMP_CWORD=1 _DOCKER_UP_COMPLETE=complete_bash docker-up"
        )
    else:
        ask = f"set -x PATH {VENV}/bin $PATH; complete -C 'docker-up st'"
    code, out = in_shell(home, sh, ask)
    assert code == 0 and "status" in out and "stop" in out, out
    data = home.root / "data" / "docker-up"  # XDG_DATA_HOME/docker-up
    assert (data / f"completion.{sh}").exists()
    assert home.docker_up("autostart", "disable").returncode == 0
    assert not (data / f"completion.{sh}").exists()
    # The shell also started docker-up (the block's other half): stop it once it runs.
    wait_for(
        lambda: json.loads(home.docker_up("status", "--json").stdout)["running"],
        60,
        "the daemon the shell started",
    )
    assert home.docker_up("stop").returncode == 0


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_new_shell_gets_docker_host_and_a_daemon(home: Workspace, shell: str) -> None:
    assert home.docker_up("autostart", "enable", "--shell", shell).returncode == 0
    # (What the snippet costs a shell is the bench's: scripts/bench --only shell.)
    code, out = in_shell(home, shell, "echo DH=$DOCKER_HOST")
    assert code == 0 and f"DH={sock(home)}" in out
    wait_for(
        lambda: json.loads(home.docker_up("status", "--json").stdout)["running"],
        60,
        "the daemon the shell started in the background",
    )


@pytest.mark.parametrize("lazy", ["--lazy", "--no-lazy"])
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_first_docker_command_in_a_new_shell_succeeds(
    home: Workspace, shell: str, lazy: str
) -> None:
    assert home.docker_up("autostart", "enable", "--shell", shell, lazy).returncode == 0
    code, out = in_shell(home, shell, "docker info --format 'v={{.ServerVersion}}'")
    assert code == 0 and "v=20.10" in out


@pytest.mark.parametrize("lazy", ["--lazy", "--no-lazy"])
def test_twenty_shells_at_once_start_one_daemon(home: Workspace, lazy: str) -> None:
    assert home.docker_up("autostart", "enable", "--shell", "bash", lazy).returncode == 0
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: in_shell(home, "bash", "true"), range(20)))
    assert [c for c, _ in results] == [0] * 20
    wait_for(
        lambda: json.loads(home.docker_up("status", "--json").stdout)["running"], 60, "the daemon"
    )
    # With socket activation the first client starts dockerd.
    assert home.docker("info", "--format", "{{.ServerVersion}}").stdout.startswith("20.10")
    # Latecomers may still be waiting on the lock: let them finish, then count.
    wait_for(
        lambda: (
            not processes_of(home.user.uid, "docker-up")
            or len(processes_of(home.user.uid, "dockerd")) == 1
        ),
        60,
        "starters to finish",
    )
    assert len(processes_of(home.user.uid, "dockerd")) == 1


def test_docker_context(home: Workspace) -> None:
    assert home.docker_up("-d").returncode == 0
    env_host = home.extra_env.pop("DOCKER_HOST", None)
    r = home.run(["docker", "--context", "docker-up", "version", "--format", "{{.Server.Version}}"])
    assert r.returncode == 0 and r.stdout.startswith("20.10"), r.stderr
    assert home.docker_up("autostart", "disable").returncode == 0
    r = home.run(["docker", "--context", "docker-up", "version"])
    assert r.returncode != 0
    if env_host:
        home.extra_env["DOCKER_HOST"] = env_host


def test_config_file_env_and_cli(workspace: Workspace, started: list) -> None:  # type: ignore[type-arg]
    cfg = workspace.root / "config" / "docker-up"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text('mtu = 9000\nport-forwarder = "slirp"\n')
    os.chown(cfg, workspace.user.uid, workspace.user.gid)
    workspace.extra_env["DOCKER_UP_PORT_FORWARDER"] = "splice"
    doc = json.loads(workspace.docker_up("config", "show", "--json").stdout)
    assert doc["settings"]["mtu"] == {"value": 9000, "source": "file"}
    assert doc["settings"]["port-forwarder"] == {"value": "splice", "source": "env"}
    # The command line wins, and the daemon really gets it.
    s = workspace.start("--mtu", "4000")
    started.append(s)
    s.wait_ready()
    assert s.state["mtu"] == 4000
    assert s.stop() == 0
    # A broken file: one clean line naming the file, the key and what is allowed.
    (cfg / "config.toml").write_text("mtu = 99999\n")
    r = workspace.docker_up()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{cfg / 'config.toml'}: mtu: must be between 1280 and 65520" in r.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "sh"])
def test_snippet_starts_docker_up_only_when_not_running(home: Workspace, shell: str) -> None:
    """A stand-in docker-up records each call: none while dockerd runs, one when it does not
    (every new shell would otherwise pay for a Python start)."""
    from dockerup import shellinit

    rec = home.root / "calls"
    fake = home.root / "fake-docker-up"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {rec}\n')
    fake.chmod(0o755)
    h = Path(home.extra_env["HOME"])
    rc = shellinit.rc_file(shell, h, home.env()["XDG_CONFIG_HOME"])
    rc.parent.mkdir(parents=True, exist_ok=True)
    rc.write_text(shellinit.snippet(shell, str(fake)))
    run = {
        "bash": ["bash", "-i", "-c", "true"],
        "zsh": ["zsh", "-i", "-c", "true"],
        "fish": ["fish", "-c", "true"],
        "sh": ["sh", "-c", f". {rc}"],
    }[shell]
    os.chmod(home.root, 0o777)  # the fake writes its record here
    assert home.docker_up("-d").returncode == 0
    assert home.run(run).returncode == 0
    assert not rec.exists(), rec.read_text()
    assert home.docker_up("stop").returncode == 0
    assert home.run(run).returncode == 0
    wait_for(lambda: rec.exists() and "--detach" in rec.read_text(), 10, "the background start")


def test_lazy_start_holds_the_socket_until_the_first_client(home: Workspace) -> None:
    r = home.docker_up("up", "--lazy")
    assert r.returncode == 0 and r.stdout.strip() == export_lines(sock(home))
    doc = json.loads(home.docker_up("status", "--json").stdout)
    assert doc["running"] is True and doc["lazy"] is True
    holder = doc["pid"]
    assert not processes_of(home.user.uid, "dockerd")
    # The first client simply waits for the daemon, and is served.
    assert home.docker("info", "--format", "v={{.ServerVersion}}").stdout.startswith("v=20.10")
    doc = json.loads(home.docker_up("status", "--json").stdout)
    # The holder became docker-up, then the keeper: one process all along.
    assert doc["answering"] is True and doc["pid"] == holder
    assert len(processes_of(home.user.uid, "dockerd")) == 1
    # Killed dockerd comes back on the same (activated) socket, at the first try: the dead
    # one's containerd is reaped first (a zombie of it used to make the new dockerd dial a
    # dead socket for 15 s, and fail).
    os.kill(int(doc["dockerd_pid"]), 9)
    wait_for(
        lambda: home.docker("info", check=False, timeout=20).returncode == 0,
        60,
        "dockerd restarted on the activated socket",
    )
    # The keeper logs it once its own ping is answered, which may come after the client's.
    log_file = home.runtime_dir / "docker-up" / "logs" / "docker-up.log"
    wait_for(lambda: "dockerd is back" in log_file.read_text(), 30, "the keeper's word")
    log = log_file.read_text()
    assert "restart failed" not in log, log[-1500:]
    assert home.docker_up("stop").returncode == 0
    assert not Path(sock(home).removeprefix("unix://")).exists()


def test_lazy_holder_stopped_before_any_client_leaves_nothing(home: Workspace) -> None:
    assert home.docker_up("up", "--lazy").returncode == 0
    assert home.docker_up("stop").returncode == 0
    run_dir = home.runtime_dir / "docker-up"
    assert not (run_dir / "docker.sock").exists() and not (run_dir / "docker-up.pid").exists()
    assert not processes_of(home.user.uid, "python3")
