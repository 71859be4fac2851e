"""The core path on each Docker Engine a user runs: the system's, and those scripts/engines
fetched (Debian 13's 26.1, unstable's 28.5 with containerd 2.1), each first on the test
user's PATH as a user who installed it would have it. scripts/test names them in
DOCKER_UP_TEST_ENGINES ("NAME=BIN-DIR ..."); the system engine always runs.

Per engine: docker-up starts it, it reports its own version, runs a container, answers on a
published port from the workspace, builds an image with a RUN step, is restarted after a
kill -9 with its published port working again, and stops leaving nothing running.
The fetched engines also run userns = "keep-id" (tests/integration/test_keepid.py holds it
on the system's): one start, each of its README's claims checked on it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from .harness import (
    Workspace,
    detach,
    pid_alive,
    processes_naming,
    processes_of,
    status,
    wait_for,
)
from .servers import free_port


def engine_dir(name: str, workspace: Workspace) -> Path | None:
    """The engine's bin dir, first on the user's PATH (None: the system's). An engine that
    scripts/test did not fetch (DOCKER_UP_TEST_ENGINES=none) is skipped, by name."""
    if name == "system":
        return None
    named = dict(e.split("=", 1) for e in os.environ.get("DOCKER_UP_TEST_ENGINES", "").split())
    if name not in named:
        pytest.skip(f"engine {name} not fetched (scripts/engines; DOCKER_UP_TEST_ENGINES)")
    d = Path(named[name])
    assert (d / "dockerd").exists(), f"{d}: no dockerd (run scripts/engines)"
    workspace.extra_env["PATH"] = f"{d}:{workspace.env()['PATH']}"
    return d


def expected_version(engine: Path | None) -> str:
    dockerd = str(engine / "dockerd") if engine else "/usr/sbin/dockerd"
    out = subprocess.run([dockerd, "--version"], capture_output=True, text=True).stdout
    return out.split("version ", 1)[1].split(",", 1)[0]


def answer(port: int) -> str:
    """What the published port says to a client in the workspace (one HTTP GET)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip()


def answers(port: int, expected: str) -> bool:
    try:
        return answer(port) == expected
    except OSError:
        return False


# A class per engine: scripts/test's workers (pytest-xdist, --dist loadscope) take a class
# as one unit and a module as another, so the three engines, a minute each, run side by side.
class TestSystem:
    def test_core_path(self, workspace: Workspace, busybox_tar: Path) -> None:
        core_path(workspace, engine_dir("system", workspace), busybox_tar)


class TestTrixie:
    """Debian 13's docker.io 26.1 with containerd 1.7."""

    def test_core_path(self, workspace: Workspace, busybox_tar: Path) -> None:
        core_path(workspace, engine_dir("trixie", workspace), busybox_tar)

    def test_keep_id(self, workspace: Workspace, busybox_tar: Path) -> None:
        keep_id_path(workspace, engine_dir("trixie", workspace), busybox_tar)


class TestSid:
    """Debian unstable's docker.io 28.5 with containerd 2.1 (the RootlessKit API)."""

    def test_core_path(self, workspace: Workspace, busybox_tar: Path) -> None:
        core_path(workspace, engine_dir("sid", workspace), busybox_tar)

    def test_keep_id(self, workspace: Workspace, busybox_tar: Path) -> None:
        keep_id_path(workspace, engine_dir("sid", workspace), busybox_tar)


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return str(e)


def core_path(ws: Workspace, engine: Path | None, busybox_tar: Path) -> None:
    try:
        r = detach(ws)
        assert r.returncode == 0, r.stderr
        version = ws.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        assert version == expected_version(engine)

        ws.docker("import", str(busybox_tar), "bb:test")
        assert ws.docker("run", "--rm", "bb:test", "echo", "hi").stdout.strip() == "hi"

        port = free_port()
        # --stop-timeout: httpd, the container's init, ignores SIGTERM (10 s a stop otherwise).
        cid = ws.docker(
            "run",
            "-d",
            "--restart",
            "always",
            "--stop-timeout",
            "2",
            "-p",
            f"{port}:80",
            "bb:test",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ).stdout.strip()
        hostname = cid[:12]
        wait_for(lambda: answers(port, hostname), 15, "the published port from the workspace")

        ctx = ws.root / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM bb:test\nRUN echo built > /b\nCMD cat /b\n")
        os.chmod(ctx, 0o755)
        ws.docker("build", "-q", "-t", "bb:built", str(ctx))
        assert ws.docker("run", "--rm", "bb:built").stdout.strip() == "built"

        doc = status(ws)
        assert doc["running"] is True and doc["answering"] is True
        # doctor names the engine and what docker-up does for it.
        checks = json.loads(ws.docker_up("doctor", "--json").stdout)["checks"]
        engine_check = next(c for c in checks if c["id"] == "docker.dockerd")
        short = ".".join(version.split("+")[0].split(".")[:3])
        assert engine_check["detail"].startswith(f"dockerd {short}, containerd "), engine_check

        old = int(doc["dockerd_pid"])  # type: ignore[call-overload]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not pid_alive(old), 10, "dockerd to die")
        wait_for(
            lambda: status(ws).get("restarts") == 1 and status(ws).get("answering"),
            60,
            "the restarted dockerd",
        )
        # A new container publishes a port through the new dockerd (on 28+: the API's table
        # starts anew, and the workspace port of the dead dockerd's forward is free again).
        port2 = free_port()
        cid2 = ws.docker(
            "run", "-d", "-p", f"{port2}:80", "bb:test", "httpd", "-f", "-p", "80", "-h", "/etc"
        ).stdout.strip()
        wait_for(lambda: answers(port2, cid2[:12]), 15, "a port published after the restart")
        # The restart-policy container runs again, with its port: the keeper ended the dead
        # dockerd's shims first (containerd 2.1 would otherwise keep the old bundle and
        # refuse to start it again, moby#50040).
        try:
            wait_for(lambda: answers(port, hostname), 30, "the port after dockerd's restart")
        except AssertionError as e:  # a CI run under load once timed out here: say why
            logs = ws.runtime_dir / "docker-up" / "logs"
            said = [ws.docker("ps", "-a", check=False).stdout]
            said += [f"--- {n}:\n" + tail(logs / n, 30) for n in ("docker-up.log", "dockerd.log")]
            raise AssertionError("\n".join([str(e), *said])) from None
    finally:
        ws.docker_up("stop", timeout=90)
    wait_for(lambda: not processes_of(ws.user.uid), 30, "all of the user's processes")
    assert not (ws.runtime_dir / "docker-up" / "docker.sock").exists()
    # Nothing was left for stop to end by force: dockerd stopped its own.
    log = (ws.runtime_dir / "docker-up" / "logs" / "docker-up.log").read_text()
    assert "left running" not in log.split("stopping")[-1], log[-2000:]
    # The workspace can listen on the port again (as a server would: SO_REUSEADDR, for the
    # test's own connections in TIME_WAIT).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def web(ws: Workspace, port: int, *args: str) -> str:
    """A busybox httpd published on the workspace's loopback port; its container id."""
    # --stop-timeout: httpd, the container's init, ignores SIGTERM (10 s a stop otherwise).
    run = ["run", "-d", "--stop-timeout", "2", *args, "-p", f"127.0.0.1:{port}:80", "bb:test"]
    return ws.docker(*run, "httpd", "-f", "-p", "80", "-h", "/etc").stdout.strip()


def keep_id_path(ws: Workspace, engine: Path | None, busybox_tar: Path) -> None:
    """userns = "keep-id" on this engine (README: dev containers with a non-root user): a
    published port answers on the workspace's loopback, a root container's bind-mount write
    is the first subordinate id's, one with the user's uid writes as the user, a killed
    dockerd comes back (root inside again) with its ports, and stop leaves nothing."""
    ws.extra_env["DOCKER_UP_USERNS"] = "keep-id"
    root_outside = ws.user.subordinate_start
    try:
        r = detach(ws)
        assert r.returncode == 0, r.stderr
        doc = status(ws)
        assert str(doc["userns"]).startswith("keep-id"), doc
        version = ws.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        assert version == expected_version(engine)
        dockerd = int(doc["dockerd_pid"])  # type: ignore[call-overload]
        assert os.stat(f"/proc/{dockerd}").st_uid == root_outside

        ws.docker("import", str(busybox_tar), "bb:test")
        port = free_port()
        cid = web(ws, port, "--restart", "always")
        wait_for(lambda: answers(port, cid[:12]), 15, "the published port from the workspace")

        folder = ws.root / "src"
        folder.mkdir()
        os.chown(folder, ws.user.uid, ws.user.gid)
        me = f"{ws.user.uid}:{ws.user.gid}"
        write = "echo x > /src/$0"
        ws.docker("run", "--rm", "-v", f"{folder}:/src", "bb:test", "sh", "-c", write, "root")
        ws.docker(
            "run",
            "--rm",
            "--user",
            me,
            "-v",
            f"{folder}:/src",
            "bb:test",
            "sh",
            "-c",
            write,
            "mine",
        )
        assert (folder / "root").stat().st_uid == root_outside
        assert (folder / "mine").stat().st_uid == ws.user.uid
        assert ws.run(["sh", "-c", f"echo more >> {folder / 'mine'}"]).returncode == 0
        assert ws.run(["sh", "-c", f"echo more >> {folder / 'root'}"]).returncode != 0

        os.kill(dockerd, signal.SIGKILL)
        wait_for(lambda: not pid_alive(dockerd), 10, "dockerd to die")
        wait_for(
            lambda: status(ws).get("restarts") == 1 and status(ws).get("answering"),
            60,
            "the restarted dockerd",
        )
        again = int(status(ws)["dockerd_pid"])  # type: ignore[call-overload]
        assert os.stat(f"/proc/{again}").st_uid == root_outside
        port2 = free_port()
        cid2 = web(ws, port2, "--rm")
        wait_for(lambda: answers(port2, cid2[:12]), 15, "a port published after the restart")
        wait_for(lambda: answers(port, cid[:12]), 30, "the port after dockerd's restart")
    finally:
        ws.docker_up("stop", timeout=90)
    wait_for(lambda: not processes_naming(ws.root), 30, "nothing of the workspace left")
    wait_for(lambda: not processes_of(ws.user.uid), 30, "all of the user's processes")
    assert not (ws.runtime_dir / "docker-up" / "docker.sock").exists()
    log = (ws.runtime_dir / "docker-up" / "logs" / "docker-up.log").read_text()
    assert "left running" not in log.split("stopping")[-1], log[-2000:]
