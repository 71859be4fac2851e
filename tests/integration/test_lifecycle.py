"""Run modes, background runs and supervision, on the real stack."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dockerup.settings.clientenv import export_lines

from .harness import (
    DockerUp,
    Namespace,
    Workspace,
    describe,
    detach,
    nothing_left,
    pid_alive,
    processes_of,
    reach_host_loopback,
    status,
    wait_for,
)


@pytest.fixture
def detached(workspace: Workspace) -> Workspace:
    """A workspace whose background docker-up is stopped (and checked gone) at the end."""
    yield workspace  # type: ignore[misc]
    workspace.docker_up("stop", timeout=90)
    nothing_left(workspace.user.uid, "all of the user's processes")


def test_detach_status_logs_stop(detached: Workspace, busybox_tar: Path) -> None:
    ws = detached
    r = detach(ws)
    assert r.returncode == 0, r.stderr
    host = f"unix://{ws.runtime_dir}/docker-up/docker.sock"
    assert r.stdout.strip() == export_lines(host)
    # It returned only once the daemon answers:
    assert ws.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    doc = status(ws)
    assert doc["running"] is True and doc["answering"] is True
    assert doc["mode"] == "rootless" and "uid" in str(doc["mode_reason"])
    assert doc["net"] == "slirp4netns" and doc["mtu"] == 65520
    assert doc["restarts"] == 0
    assert all(pid_alive(int(doc[k])) for k in ("pid", "dockerd_pid", "net_pid"))  # type: ignore[call-overload]

    # The socket and the state directory are the user's alone.
    run_dir = ws.runtime_dir / "docker-up"
    assert (run_dir.stat().st_mode & 0o777) == 0o700
    assert (run_dir / "docker.sock").stat().st_mode & 0o077 == 0

    logs = ws.docker_up("logs", "-n", "200").stdout
    assert "[docker-up] " in logs and "[dockerd] " in logs
    assert "API listen on" in logs

    r = ws.docker_up("status")
    assert r.returncode == 0 and "rootless" in r.stdout

    assert ws.docker_up("stop", timeout=90).returncode == 0
    # At once: stop returns when all it started has exited (the keeper itself included).
    left = processes_of(ws.user.uid)
    assert not left, describe(left)
    assert not (run_dir / "docker.sock").exists()
    doc = status(ws)
    assert doc["running"] is False
    assert ws.docker_up("status").returncode == 3


def test_detach_failure_returns_nonzero_with_the_log_tail(workspace: Workspace) -> None:
    fake = workspace.root / "fake-dockerd"  # not one path in /tmp: see test_broken_host
    r = workspace.docker_up_on_broken_host(
        f"printf '#!/bin/sh\\necho dockerd-went-boom >&2\\nexit 7\\n' > {fake} && "
        f"chmod 755 {fake} && mount --bind {fake} /usr/sbin/dockerd",
        "--detach",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "dockerd exited with code 7" in r.stderr
    assert "dockerd-went-boom" in r.stderr
    assert "Traceback" not in r.stderr
    nothing_left(workspace.user.uid)


def test_twenty_detached_starts_at_once_make_one_daemon(detached: Workspace) -> None:
    ws = detached
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: detach(ws), range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results]
    host = export_lines(f"unix://{ws.runtime_dir}/docker-up/docker.sock")
    assert all(r.stdout.strip() == host for r in results)
    assert sum("already running" in r.stderr for r in results) == 19
    assert len(processes_of(ws.user.uid, "dockerd")) == 1


def _time_until_answering(ws: Workspace, timeout: float = 60) -> float:
    t0 = time.monotonic()
    wait_for(
        lambda: (
            ws.docker(
                "version", "--format", "{{.Server.Version}}", check=False, timeout=10
            ).returncode
            == 0
        ),
        timeout,
        "the API to answer again",
        step=0.05,
    )
    return time.monotonic() - t0


def containerds(ws: Workspace) -> list[tuple[int, int]]:
    """(parent, pid) of every containerd of the test user (not the shims)."""
    found = []
    for d in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if not d.name.isdigit() or d.stat().st_uid != ws.user.uid:
                continue
            if (d / "comm").read_text().strip() == "containerd":
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found.append((ppid, int(d.name)))
    return found


def containerd_pid(ws: Workspace) -> str:
    return (ws.runtime_dir / "docker-up" / "exec" / "containerd" / "containerd.pid").read_text()


def test_killed_dockerd_is_restarted_with_its_data(detached: Workspace, busybox_tar: Path) -> None:
    ws = detached
    assert detach(ws).returncode == 0
    ws.docker("import", str(busybox_tar), "bb:test")
    ws.docker(
        "run",
        "-d",
        "--name",
        "keeps",
        "--restart",
        "always",
        "bb:test",
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 600 & wait",
    )
    netns = os.readlink(f"/proc/{status(ws)['dockerd_pid']}/ns/net")
    first = int(status(ws)["dockerd_pid"])  # type: ignore[call-overload]
    assert containerds(ws) == [(first, int(containerd_pid(ws)))]
    for i in range(2):
        old = int(status(ws)["dockerd_pid"])  # type: ignore[call-overload]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda old=old: not pid_alive(old), 10, "dockerd to die")
        _time_until_answering(ws)
        # The keeper records the restart once its own ping is answered, which may come
        # after ours: state.json (what status reads) is waited for, not read once.
        doc = wait_for(
            lambda i=i: (d := status(ws))["restarts"] == i + 1 and d,
            30,
            f"restart {i + 1} in docker-up's state",
        )
        assert isinstance(doc, dict) and doc["dockerd_pid"] != old
        # Restarted in the same namespaces: slirp4netns never noticed.
        assert os.readlink(f"/proc/{doc['dockerd_pid']}/ns/net") == netns
        # One containerd, docker-up's, for the new dockerd: the old one ended with its
        # dockerd (nothing is left of the killed one), the new one is the new dockerd's.
        assert containerds(ws) == [(int(doc["dockerd_pid"]), int(containerd_pid(ws)))]
        assert "bb:test" in ws.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        # A container with a restart policy is running again.
        wait_for(
            lambda: (
                ws.docker("inspect", "-f", "{{.State.Running}}", "keeps").stdout.strip() == "true"
            ),
            30,
            "the restart-policy container",
        )
    assert ws.docker("run", "--rm", "bb:test", "echo", "alive").stdout.strip() == "alive"
    assert "restarting it" in ws.docker_up("logs").stdout


def test_killed_network_helper_is_replaced(
    detached: Workspace, busybox_tar: Path, loopback_server: int, net: str
) -> None:
    ws = detached
    assert detach(ws, "--allow-host-loopback", "--no-net-accel").returncode == 0
    ws.docker("import", str(busybox_tar), "bb:test")
    old = int(status(ws)["net_pid"])  # type: ignore[call-overload]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: status(ws).get("net_pid") not in (None, old), 30, f"a new {net}")
    doc = status(ws)
    assert doc["restarts"] == 1 and pid_alive(int(doc["net_pid"]))  # type: ignore[call-overload]
    # The network works again, in a new container.
    assert reach_host_loopback(ws, loopback_server) == "hello"


def test_killed_docker_up_next_start_is_clean(detached: Workspace) -> None:
    ws = detached
    assert detach(ws).returncode == 0
    first = status(ws)
    os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    r = detach(ws)
    assert r.returncode == 0, r.stderr
    second = status(ws)
    assert second["dockerd_pid"] != first["dockerd_pid"]
    for k in ("dockerd_pid", "net_pid"):
        assert not pid_alive(int(first[k]))  # type: ignore[call-overload]
    assert processes_of(ws.user.uid, "dockerd") == [second["dockerd_pid"]]


def test_sigterm_while_starting_leaves_nothing(
    workspace: Workspace, started: list[DockerUp]
) -> None:
    err = workspace.root / "docker-up.err"
    for marker in ("creating namespaces", "starting slirp4netns", "starting dockerd"):
        s = workspace.start()
        started.append(s)
        wait_for(lambda m=marker: m in err.read_text(), 30, marker, step=0.001)
        s.p.send_signal(signal.SIGTERM)
        assert s.p.wait(60) == 130
        s.log.close()  # type: ignore[attr-defined]
        nothing_left(workspace.user.uid)
        assert not (workspace.runtime_dir / "docker-up" / "docker.sock").exists()


# A dockerd whose `--version` (docker-up's engine probe, while it plans: before its lock,
# its namespaces, any of its processes) says so in a file, then hangs there.
PROBE_HANGS = '#!/bin/sh\n[ "$1" = --version ] || exit 7\n: >{mark}\nexec tail -f {mark}\n'


@pytest.mark.parametrize(
    "how,point",
    [("foreground", "probe"), ("detach", "probe"), ("detach", "background start")],
)
def test_a_stop_signal_at_any_moment_of_the_start_says_so_and_leaves_nothing(
    detached: Workspace, how: str, point: str
) -> None:
    """SIGTERM at a known early point of a start (issue 33): planning, which a loaded
    machine stretches past a second, or a detached start's background half-way. Before,
    the start's handler came only with its lock: SIGTERM there killed it (exit -15, no
    message), leaving its probe running, or a detached start's background going on to a
    daemon nobody had asked for any more."""
    ws = detached
    args = ("--detach",) if how == "detach" else ()
    if point == "probe":
        mark = ws.root / "probing"
        fake = ws.root / "fake-dockerd"
        fake.write_text(PROBE_HANGS.format(mark=mark))
        fake.chmod(0o755)
        s = ws.start_on_broken_host(f"mount --bind {fake} /usr/sbin/dockerd", *args)
        wait_for(mark.exists, 60, "docker-up's engine probe", step=0.005)
    else:
        s = ws.start(*args)
        # The background's namespace child runs: the start is half-way, its front waits.
        wait_for(
            lambda: any(b"child.py" in cmdline(p) for p in processes_of(ws.user.uid)),
            60,
            "the background start's namespace child",
            step=0.005,
        )
    code = s.stop(signal.SIGTERM)
    err = s.stderr()
    nothing_left(ws.user.uid, f"nothing left (docker-up exit {code}, said {err[-400:]!r})")
    assert code == 130, err
    assert "stopped (SIGTERM) before dockerd was ready" in err, err
    assert not (ws.runtime_dir / "docker-up" / "docker.sock").exists()
    # And the next start works.
    assert detach(ws).returncode == 0


def cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


def comm(pid: int) -> str:
    """The process's name; "" for one that ended meanwhile (dockerd starts short-lived
    children)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


STALE = (
    "docker.sock",
    "state.json",
    "dockerd.pid",
    "docker-up.pid",
    "ports.sock",
    "accel.sock",
    "slirp4netns.sock",
    "lazy.json",
)


def test_start_stop_cycles_leak_nothing(workspace: Workspace, started: list[DockerUp]) -> None:
    # Ten cycles find a leak that grows per start; scripts/soak runs fifty.
    for _ in range(10):
        s = workspace.start()
        started.append(s)
        s.wait_ready()
        assert s.stop() == 0
        started.remove(s)
    nothing_left(workspace.user.uid)
    run_dir = workspace.runtime_dir / "docker-up"
    assert [n for n in STALE if (run_dir / n).exists()] == []


def test_userns_root_mode(workspace: Workspace, started: list[DockerUp], busybox_tar: Path) -> None:
    """What `sudo` is in a Gitpod workspace: root in a user namespace, no CAP_NET_ADMIN over
    the network namespace it sits in."""
    s = workspace.start(prefix=["unshare", "--user", "--map-root-user", "--map-auto"])
    started.append(s)
    s.wait_ready()
    assert s.state["mode"] == "userns-root"
    assert "without CAP_NET_ADMIN" in str(s.state["mode_reason"])
    workspace.docker("import", str(busybox_tar), "bb:test")
    r = workspace.docker("run", "--rm", "bb:test", "sh", "-c", "echo ok; id -u")
    assert r.stdout.split() == ["ok", "0"]
    assert s.stop() == 0
    nothing_left(workspace.user.uid)


def test_modes_that_cannot_work_are_refused(workspace: Workspace) -> None:
    r = workspace.docker_up("--mode", "privileged")
    assert r.returncode == 1 and "needs uid 0" in r.stderr
    r = workspace.docker_up("--host-network")
    assert r.returncode == 1 and "needs privileged mode" in r.stderr
    r = workspace.docker_up("--mode", "bogus")  # a choice of the command line (issue 28)
    assert r.returncode == 2 and "'bogus' is not one of" in r.stderr
    r = workspace.docker_up("--tcp", "0.0.0.0:2375")
    assert r.returncode == 1 and "refusing a plain TCP listener" in r.stderr
    assert not (workspace.runtime_dir / "docker-up" / "docker.sock").exists()


def test_stop_ends_what_dockerd_could_not(workspace: Workspace, busybox_tar: Path) -> None:
    """A container whose shim is frozen cannot be stopped by dockerd; docker-up's stop must
    still leave nothing of its user namespace running (it ended up orphaned before)."""
    assert workspace.docker_up("-d").returncode == 0
    workspace.docker("import", str(busybox_tar), "bb:test")
    workspace.docker("run", "-d", "--name", "stuck", "bb:test", "sleep", "3600")
    ns = Namespace(int(status(workspace)["dockerd_pid"]), "user")  # type: ignore[call-overload]
    shims = [p for p in ns.members() if comm(p).startswith("containerd-shim")]
    assert shims
    for p in shims:
        os.kill(p, signal.SIGSTOP)
    try:
        r = workspace.docker_up("stop", timeout=180)
        assert r.returncode == 0, r.stderr
        left = "nothing left in docker-up's user namespace"
        wait_for(lambda: not ns.members(), 30, left)
    finally:
        ns.kill_members()  # what this test started, if the check failed
        ns.close()
