"""What runs: status, stop, logs, and entering the daemon's namespaces."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dockerup.errors import DockerUpError
from dockerup.keeper import background, instance
from dockerup.keeper.instance import Running
from dockerup.linux.exits import restore_signals
from dockerup.logs import tail
from dockerup.net.kinds import NET_DRIVERS
from dockerup.results import Daemon, Logs, Status, Stopped
from dockerup.settings.paths import Paths
from dockerup.verbs.run import MARKER
from dockerup.wire import ping as wire

LOGS = ("docker-up", "dockerd", *NET_DRIVERS)


def status(paths: Paths, debug: bool = False) -> Status:
    """debug: also the start's timings and the processes' identity records."""
    instance.check_runtime(paths)
    state = instance.read_state(paths)
    locked = instance.is_locked(paths)
    sock, host = str(paths.socket), paths.docker_host
    if locked and state is not None:
        d = daemon_of(state)
        extra = (
            {"timings": state.timings, "procs": {k: asdict(v) for k, v in state.procs.items()}}
            if debug
            else None
        )
        return Status(
            True,
            sock,
            host,
            pid=d.pid,
            answering=wire.ping(paths.socket),
            uptime_s=round(time.time() - d.started_at, 1),
            daemon=d,
            debug=extra,
        )
    if locked and (lazy := background.read_lazy(paths)):
        # Socket activation: nothing runs yet but the holder; the first client starts it.
        return Status(True, sock, host, lazy=True, pid=lazy.pid)
    return Status(False, sock, host)


def daemon_of(state: Running) -> Daemon:
    """The published fields of the running daemon's record (instance.Running)."""
    return Daemon(
        pid=state.pid,
        dockerd_pid=state.dockerd_pid,
        net_pid=state.net_pid,
        mode=state.mode,
        mode_reason=state.mode_reason,
        net=state.net,
        net_options=list(state.net_options),
        mtu=state.mtu,
        # plan.ipv6_reason: "on (...)" or "off ..."
        ipv6=state.ipv6.startswith("on"),
        ipv6_reason=state.ipv6,
        storage=state.storage,
        storage_reason=state.storage_reason,
        data_root=state.data_root,
        iptables=state.iptables,
        iptables_reason=state.iptables_reason,
        engine=state.engine,
        started_at=state.started_at,
        restarts=state.restarts,
        cgroup_driver=state.cgroup_driver,
        cgroup_limits=list(state.cgroup_limits),
        cgroup_reason=state.cgroup_reason,
        cgroup_fix=state.cgroup_fix,
        userns=state.userns,
    )


def stop(paths: Paths, timeout: float = 60.0) -> Stopped:
    return Stopped(background.stop(paths, timeout))


def log_files(paths: Paths) -> dict[str, Path]:
    return {name: paths.log(name) for name in LOGS}


def read_logs(paths: Paths, lines: int) -> Logs:
    """The last lines of each log, each marked with where it came from."""
    instance.check_runtime(paths)
    out: list[tuple[str, str]] = []
    for name, path in log_files(paths).items():
        out += [(name, line) for line in tail(path, lines).splitlines()]
    return Logs(out)


def follow_logs(paths: Paths) -> Iterator[tuple[str, str]]:
    """New lines of every log as they come (`logs -f`), until interrupted."""
    instance.check_runtime(paths)
    files: dict[str, Any] = {}
    for name, path in log_files(paths).items():
        with contextlib.suppress(OSError):
            f = open(path, errors="replace")  # noqa: SIM115 - kept open while following
            f.seek(0, os.SEEK_END)
            files[name] = f
    while True:
        quiet = True
        for name, f in files.items():
            for line in f.readlines():
                quiet = False
                yield name, line.rstrip("\n")
        if quiet:
            time.sleep(0.2)  # a tail -f: nothing to wait on but new lines


def enter_argv(state: Running, command: list[str]) -> list[str]:
    """nsenter into the daemon's namespaces (pure). In rootless mode the user namespace too:
    there the caller is root, with CAP_NET_ADMIN over the network namespace."""
    ns = ["--user", "--mount", "--net"] if state.mode == "rootless" else ["--mount", "--net"]
    if state.net == "host":
        ns.remove("--net")
    return ["nsenter", f"--target={state.dockerd_pid}", *ns, "--", *command]


def enter(paths: Paths, command: list[str]) -> None:
    """Replace this process with `command` inside the namespaces: exit codes, signals and
    the terminal pass straight through."""
    instance.check_runtime(paths)
    state = instance.read_state(paths)
    if not state or not instance.is_locked(paths):
        raise DockerUpError("docker-up is not running", hint="start it: docker-up -d")
    argv = enter_argv(state, command)
    # Marked as `run --root` marks its program: a shell started here that reads the
    # `shell-init --enter` snippet stays (it would enter again, as a user without power).
    env = {**os.environ, MARKER: "root"}
    restore_signals()  # the command's dispositions are the caller's, not Python's
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as e:
        raise DockerUpError(f"cannot run {argv[0]}", hint="apt-get install util-linux") from e
