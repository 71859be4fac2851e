"""docker-up signals only the processes it recorded: pid, start time and executable, checked
through a pidfd. Containers run as the user's uid, and PIDs are reused."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from .harness import VENV, Workspace, pid_alive, wait_for


def state_file(ws: Workspace) -> Path:
    return ws.runtime_dir / "docker-up" / "state.json"


def test_a_process_that_looks_like_ours_is_never_signalled(workspace: Workspace) -> None:
    """A stale state.json names a PID that now belongs to another process of the user's,
    one whose command line even says dockerd and keeper.py (a container's process could):
    the next start must leave it alone."""
    assert workspace.docker_up("-d").returncode == 0
    state = json.loads(state_file(workspace).read_text())
    assert workspace.docker_up("stop", timeout=90).returncode == 0
    decoy = subprocess.Popen(
        [
            "python3",
            "-c",
            "import time; time.sleep(120)",
            "dockerd",
            "keeper/resident.py",
            "slirp4netns",
        ],
        user=workspace.user.uid,
        group=workspace.user.gid,
    )
    try:
        stale = dict(state, pid=decoy.pid, dockerd_pid=decoy.pid, net_pid=decoy.pid)
        # As recorded for an earlier process that had this PID: another start time.
        for rec in stale.get("procs", {}).values():
            rec["pid"] = decoy.pid
        state_file(workspace).write_text(json.dumps(stale))
        os.chown(state_file(workspace), workspace.user.uid, workspace.user.gid)
        r = workspace.docker_up("-d")
        assert r.returncode == 0, r.stderr
        assert decoy.poll() is None, "docker-up signalled a process it did not start"
        assert "orphaned" not in r.stderr
        assert {"keeper", "dockerd", "net"} <= set(state["procs"])
    finally:
        workspace.docker_up("stop", timeout=90)
        decoy.kill()
        decoy.wait()


def test_lazy_start_after_a_killed_keeper_can_be_stopped(workspace: Workspace) -> None:
    """kill -9 of the keeper leaves its state.json; `up --lazy` clears it, so `stop` finds
    the lazy holder instead of answering that it cannot tell which process to stop."""
    assert workspace.docker_up("-d").returncode == 0
    state = json.loads(state_file(workspace).read_text())
    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(state["dockerd_pid"]), 60, "dockerd to follow its keeper")
    r = workspace.docker_up("up", "--lazy")
    assert r.returncode == 0, r.stderr
    r = workspace.docker_up("stop", timeout=90)
    assert r.returncode == 0, r.stderr
    assert json.loads(workspace.docker_up("status", "--json").stdout)["running"] is False


def test_every_verb_sees_the_mode_and_paths_up_would() -> None:
    """As root with DOCKER_UP_MODE=userns-root, `up --dry-run` planned /tmp/docker-up-0 while
    `status` looked in /run/docker-up: each verb resolved the mode without the settings."""
    env = {
        "PATH": f"{VENV}/bin:/usr/bin:/bin",
        "HOME": "/root",
        "NO_COLOR": "1",
        "DOCKER_UP_MODE": "userns-root",
    }

    def socket_of(*args: str) -> str:
        r = subprocess.run(
            [f"{VENV}/bin/docker-up", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        found = re.search(r'"socket": "([^"]+)"', r.stdout)
        assert found, (args, r.stdout, r.stderr)
        return found.group(1)

    planned = socket_of("up", "--dry-run")
    assert planned == "/tmp/docker-up-0/docker.sock"
    assert socket_of("status", "--json") == planned
