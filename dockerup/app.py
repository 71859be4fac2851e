"""The core's entry points, called by the CLI: probe, plan, execute; status, stop, logs.
They return data; the CLI renders it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockerup import facts as host
from dockerup import proc, procid, supervise, wire
from dockerup.config import Config
from dockerup.errors import DockerUpError
from dockerup.modes import Mode, resolve_mode
from dockerup.net import NET_DRIVERS
from dockerup.paths import Paths
from dockerup.plan import Plan, build_plan, paths_for, resolve_mode_of

LOGS = ("docker-up", "dockerd", *NET_DRIVERS)


@dataclass(frozen=True)
class Loaded:
    config: Config
    sources: dict[str, str]
    file: Path
    facts: host.HostFacts


def load_config(cli: dict[str, Any]) -> Loaded:
    """Settings from the config file, DOCKER_UP_* variables and the command line. Where the
    file is depends on the mode, so only the command line and the environment choose it."""
    from dockerup.config import resolve

    f = host.probe()
    asked = cli.get("mode") or f.env.get("DOCKER_UP_MODE")
    mode, _ = resolve_mode(f.uid, f.initial_userns, f.net_admin, asked)
    path = paths_for(mode, f).config_file
    try:
        text: str | None = path.read_text()
    except FileNotFoundError:
        text = None
    except OSError as e:
        raise DockerUpError(f"cannot read {path}: {e.strerror}") from e
    config, sources = resolve(cli, f.env, text, str(path))
    return Loaded(config, sources, path, f)


def make_plan(config: Config, f: host.HostFacts | None = None) -> Plan:
    """Probe, run doctor's cheap fatal checks on what was probed, and plan."""
    from dockerup import doctor

    f = f or host.probe()
    if config.net == "pasta":
        f = host.with_pasta(f)
    if config.net_accel or (config.net_accel is None and config.allow_host_loopback):
        f = host.with_accel(f)
    if not config.host_network:
        mode, _ = resolve_mode_of(config, f)
        failures = doctor.fatal_failures(f, paths_for(mode, f, config), config.net)
        if failures:
            check, result = failures[0]
            raise DockerUpError(
                result.detail,
                hint=f"{result.hint}\n(check {check.id} failed; `docker-up doctor` checks "
                "everything)",
            )
    return build_plan(config, f)


def config_show(loaded: Loaded) -> dict[str, Any]:
    from dockerup.config import SETTINGS

    c = loaded.config
    return {
        "version": 1,
        "file": str(loaded.file),
        "settings": {
            s.key: {"value": _plain(getattr(c, s.field)), "source": loaded.sources[s.key]}
            for s in SETTINGS
        },
    }


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else str(v) if hasattr(v, "value") else v


@dataclass(frozen=True)
class Context:
    """What every command resolves once and the same way `up` does: the settings (and their
    sources), the host's facts, the mode (and why), the paths."""

    loaded: Loaded
    mode: Mode
    mode_reason: str
    paths: Paths


def context(cli: dict[str, Any] | None = None) -> Context:
    loaded = load_config(cli or {})
    mode, reason = resolve_mode_of(loaded.config, loaded.facts)
    return Context(loaded, mode, reason, paths_for(mode, loaded.facts, loaded.config))


def current_paths() -> Paths:
    """Where a running docker-up of this user keeps its state: the mode and paths `up`
    would resolve, from the same configuration (status, stop, logs, exec, shell)."""
    return context().paths


def plan_summary(plan: Plan) -> dict[str, Any]:
    return {
        "mode": str(plan.mode),
        "mode_reason": plan.mode_reason,
        "socket": str(plan.paths.socket),
        "network": plan.net.argv("PID", "READY_FD", "EXIT_FD") if plan.net else None,
        "uidmap": plan.uidmap.argv(0) if plan.uidmap else None,
        "gidmap": plan.gidmap.argv(0) if plan.gidmap else None,
        "dockerd": list(plan.dockerd_argv),
        "dockerd_env": plan.dockerd_env,
        "daemon_json": json.loads(plan.daemon_json("<probed>")),
        "child": plan.child_spec,
    }


@dataclass(frozen=True)
class UpResult:
    docker_host: str
    already_running: bool
    running: supervise.Running | None = None


def up(
    loaded: Loaded,
    progress: supervise.Progress,
    on_ready: Callable[[supervise.Running], None],
) -> UpResult:
    """Foreground: returns only when stopped (the process becomes the keeper)."""
    plan = make_plan(loaded.config, loaded.facts)
    try:
        code = supervise.run(plan, progress, on_ready, foreground=True)
    except supervise.AlreadyRunning:
        return already_running(plan)
    raise SystemExit(code)


def already_running(plan: Plan) -> UpResult:
    if not supervise.wait_until_answering(plan.paths, plan.config.start_timeout):
        raise DockerUpError(
            "another docker-up holds the lock but its daemon does not answer",
            hint="see `docker-up status` and `docker-up logs`",
        )
    return UpResult(plan.paths.docker_host, already_running=True)


def up_detached(loaded: Loaded) -> UpResult:
    """Start in the background; return once the daemon answers, or raise with the log tail.
    A forked process does the start and becomes the keeper; it reports over a pipe."""
    plan = make_plan(loaded.config, loaded.facts)
    supervise.prepare_runtime(plan.paths)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the background docker-up
        os.close(r)
        _daemonize(plan.paths)
        _report_and_run(plan, w)
    os.close(w)
    with os.fdopen(r) as f:
        line = f.readline()
    # The intermediate child exits once it has forked the real background process.
    os.waitpid(pid, 0)
    if not line:
        raise DockerUpError(
            "the background docker-up died while starting",
            hint=f"see {plan.paths.log_dir / 'docker-up.log'}",
            detail=proc.tail(plan.paths.log_dir / "dockerd.log"),
        )
    msg = json.loads(line)
    if "error" in msg:
        raise DockerUpError(msg["error"], hint=msg.get("hint"), detail=msg.get("detail"))
    if msg.get("already"):
        return already_running(plan)
    return UpResult(msg["docker_host"], already_running=False)


def _daemonize(paths: Paths) -> None:
    # Double fork: the background process is nobody's child and has no terminal.
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    paths.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = os.open(paths.log_dir / "docker-up.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)


def _report_and_run(plan: Plan, w: int) -> None:
    def send(**msg: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(w, (json.dumps(msg) + "\n").encode())

    code = 1
    try:
        # on_ready reports before the exec into the keeper; w is close-on-exec.
        code = supervise.run(
            plan, lambda _msg: None, lambda r: send(docker_host=r.docker_host), foreground=False
        )
    except supervise.AlreadyRunning:
        send(already=True)
        code = 0
    except DockerUpError as e:
        send(error=e.message, hint=e.hint, detail=e.detail)
    except BaseException as e:
        send(error=f"internal error: {type(e).__name__}: {e}")
    finally:
        os._exit(code)


# -- status, stop, logs ------------------------------------------------------------------------


def status(paths: Paths) -> dict[str, Any]:
    supervise.check_runtime(paths)
    state = supervise.read_state(paths)
    running = supervise.is_locked(paths) and state is not None
    doc: dict[str, Any] = {
        "running": running,
        "socket": str(paths.socket),
        "docker_host": paths.docker_host,
    }
    if running and state:
        doc.update(state)
        doc["uptime_s"] = round(time.time() - state["started_at"], 1)
        doc["answering"] = wire.ping(paths.socket)
    elif supervise.is_locked(paths) and (lazy := _read_json(lazy_file(paths))):
        # Socket activation: nothing runs yet but the holder; the first client starts it.
        doc.update(running=True, lazy=True, pid=lazy.get("pid"))
    return doc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def stop(paths: Paths, timeout: float = 60.0) -> bool:
    """Ask the keeper to stop and wait until the lock is free. False: nothing was running."""
    supervise.check_runtime(paths)
    if not supervise.is_locked(paths):
        return False
    # The lazy holder (until its first client) or the keeper: whichever the records name
    # and still runs as recorded.
    state = supervise.read_state(paths) or {}
    candidates = [_read_json(lazy_file(paths)).get("id"), (state.get("procs") or {}).get("keeper")]
    idents = [i for c in candidates if (i := procid.ProcId.from_json(c))]
    ident = next((i for i in idents if procid.send(i, signal.SIGTERM)), None)
    if ident is None:
        raise DockerUpError(
            "docker-up is starting or its state is unreadable; cannot tell which process to stop",
            hint="try again in a moment",
        )
    pid = ident.pid
    deadline = time.monotonic() + timeout
    while supervise.is_locked(paths):
        if time.monotonic() > deadline:
            raise DockerUpError(f"docker-up (pid {pid}) did not stop in {timeout:.0f} s")
        time.sleep(0.05)
    return True


def log_files(paths: Paths) -> dict[str, Path]:
    return {name: paths.log_dir / f"{name}.log" for name in LOGS}


def read_logs(paths: Paths, lines: int) -> list[tuple[str, str]]:
    """The last lines of each log, each marked with where it came from."""
    supervise.check_runtime(paths)
    out: list[tuple[str, str]] = []
    for name, path in log_files(paths).items():
        out += [(name, line) for line in proc.tail(path, lines).splitlines()]
    return out


def follow_logs(paths: Paths) -> Iterator[tuple[str, str]]:
    """New lines of every log as they come (`logs -f`), until interrupted."""
    supervise.check_runtime(paths)
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
            time.sleep(0.2)


# -- doctor -----------------------------------------------------------------------------------


def doctor_report() -> Any:
    from dockerup import doctor

    try:
        loaded = load_config({})
    except DockerUpError:
        # A broken config file is reported by `up` and `config show`; doctor still checks
        # the machine, for the default settings.
        return doctor.run_checks(doctor.probe_doctor())
    return doctor.run_checks(doctor.probe_doctor(loaded.config, loaded.facts))


def doctor_fixes(user: str | None) -> list[Any]:
    """The fixes for this machine (and, as root, for `user`), planned from what is found."""
    import pwd

    from dockerup import doctor

    try:
        tun_mode: int | None = os.stat("/dev/net/tun").st_mode & 0o777
    except FileNotFoundError:
        tun_mode = None
    target = None
    if user:
        try:
            target = (user, pwd.getpwnam(user).pw_uid)
        except KeyError as e:
            raise DockerUpError(f"no such user: {user}") from e
    return doctor.plan_fixes(
        tun_mode,
        target,
        host.read_text("/etc/subuid"),
        host.read_text("/etc/subgid"),
        missing_packages(),
    )


def apply_fixes(fixes: list[Any]) -> None:
    for fix in fixes:
        proc.run(fix.argv, fix.what or " ".join(fix.argv), timeout=600)


# -- entering the namespaces ----------------------------------------------------------------------


def enter_argv(state: dict[str, Any], command: list[str]) -> list[str]:
    """nsenter into the daemon's namespaces (pure). In rootless mode the user namespace too:
    there the caller is root, with CAP_NET_ADMIN over the network namespace."""
    ns = ["--user", "--mount", "--net"] if state["mode"] == "rootless" else ["--mount", "--net"]
    if state.get("net") == "host":
        ns.remove("--net")
    return ["nsenter", f"--target={state['dockerd_pid']}", *ns, "--", *command]


def enter(paths: Paths, command: list[str]) -> None:
    """Replace this process with `command` inside the namespaces: exit codes, signals and
    the terminal pass straight through."""
    supervise.check_runtime(paths)
    state = supervise.read_state(paths)
    if not state or not supervise.is_locked(paths):
        raise DockerUpError("docker-up is not running", hint="start it: docker-up -d")
    argv = enter_argv(state, command)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError as e:
        raise DockerUpError(f"cannot run {argv[0]}", hint="apt-get install util-linux") from e


# -- shell start-up, autostart, docker context, dependencies --------------------------------


def docker_up_path() -> str:
    """The docker-up that the shell snippet runs: this one, by absolute path."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "docker-up"
    return str(beside) if beside.exists() else shutil.which("docker-up") or "docker-up"


def shell_init(shell: str, start: bool | None = None, lazy: bool | None = None) -> str:
    """The snippet; whether it starts docker-up, and how, comes from the settings unless
    given."""
    from dockerup import shellinit

    if shell not in shellinit.SHELLS:
        raise DockerUpError(f"unknown shell {shell!r}", hint="one of: bash, zsh, fish, sh")
    config = load_config({}).config
    start = config.autostart if start is None else start
    lazy = config.lazy_start if lazy is None else lazy
    return shellinit.snippet(shell, docker_up_path(), start, lazy)


def _write_atomic(path: Path, text: str) -> None:
    """Replace a file's text in one step. A symlink (dotfile managers link ~/.bashrc into
    their repository) is written through: the link stays, its target changes."""
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise DockerUpError(
                f"{path} is a link to {target}, which does not exist",
                hint=f"create {target}, or remove the link",
            )
        path = target
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.docker-up.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def autostart(
    shells: list[str], enable: bool, lazy: bool | None = None
) -> list[tuple[str, Path, bool]]:
    """Add (or remove) docker-up's marked block in each shell's rc file; returns what changed.
    Disabling also removes the docker context."""
    from dockerup import context, shellinit

    f = host.probe()
    home = Path(f.home)
    changed = []
    for shell in shells:
        path = shellinit.rc_file(shell, home, f.env.get("XDG_CONFIG_HOME", ""))
        old = path.read_text() if path.exists() else ""
        if enable:
            new = shellinit.with_block(old, shell_init(shell, start=True, lazy=lazy))
        else:
            new = shellinit.without_block(old)
        if new != old:
            _write_atomic(path, new)
        changed.append((shell, path, new != old))
    if not enable:
        meta = context.meta_path(context.docker_config_dir(f.env, f.home))
        with contextlib.suppress(FileNotFoundError):
            meta.unlink()
            meta.parent.rmdir()
    return changed


def autostart_status() -> list[dict[str, Any]]:
    from dockerup import shellinit

    f = host.probe()
    out = []
    for shell in shellinit.SHELLS:
        path = shellinit.rc_file(shell, Path(f.home), f.env.get("XDG_CONFIG_HOME", ""))
        text = path.read_text() if path.exists() else ""
        out.append({"shell": shell, "file": str(path), "installed": shellinit.has_block(text)})
    return out


def missing_packages() -> list[str]:
    from dockerup.facts import PACKAGES

    f = host.probe()
    return sorted({PACKAGES[n] for n in PACKAGES if not f.binaries.get(n)})


# -- socket activation ----------------------------------------------------------------------


def lazy_file(paths: Paths) -> Path:
    return paths.runtime / "lazy.json"


def up_lazy(loaded: Loaded) -> UpResult:
    """Hold the socket and the lock in the background; start on the first connection."""
    import socket
    import sys

    plan = make_plan(loaded.config, loaded.facts)  # refuse a broken machine now, not later
    paths = plan.paths
    supervise.prepare_runtime(paths)
    lock = supervise.take_lock(paths)
    if lock is None:
        return UpResult(paths.docker_host, already_running=True)
    # What a killed docker-up left (its state names processes that are gone): cleared here
    # as `up` does, or `stop` would later find the old records instead of this holder's.
    supervise.end_orphans(paths, lambda _msg: None)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(paths.socket))
    os.chmod(paths.socket, 0o600)
    server.listen(128)
    pid = os.fork()
    if pid == 0:
        _daemonize(paths)
        me = procid.identify(os.getpid())
        doc = {"pid": os.getpid(), "lazy": True, "id": me.to_json() if me else None}
        lazy_file(paths).write_text(json.dumps(doc))
        paths.main_pid.write_text(str(os.getpid()))
        for fd in (lock, server.fileno()):
            os.set_inheritable(fd, True)
        spec = {
            "listen_fd": server.fileno(), "lock_fd": lock, "socket": str(paths.socket),
            "lazy_file": str(lazy_file(paths)), "argv": [docker_up_path(), "up"],
            "main_pid": str(paths.main_pid),
        }  # fmt: skip
        script = str(Path(__file__).with_name("lazy.py"))
        os.execv(sys.executable, [sys.executable, "-S", script, json.dumps(spec)])
    os.waitpid(pid, 0)
    return UpResult(paths.docker_host, already_running=False)


def activated_fds() -> tuple[int, int] | None:
    """(listen fd, lock fd) when the lazy holder exec'd us on a first connection."""
    listen, lock = (
        os.environ.pop("DOCKER_UP_LISTEN_FD", ""),
        os.environ.pop("DOCKER_UP_LOCK_FD", ""),
    )
    if listen.isdigit() and lock.isdigit():
        return int(listen), int(lock)
    return None


def up_activated(loaded: Loaded, lock_fd: int) -> None:
    """Started by the lazy holder: start for real on its socket, then become the keeper."""
    plan = make_plan(loaded.config, loaded.facts)
    raise SystemExit(supervise.run(plan, lambda _m: None, lambda _r: None, foreground=False,
                                   lock_fd=lock_fd))  # fmt: skip
