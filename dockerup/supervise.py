"""Carry out a Plan: the only module that changes the system. Every helper is a context
manager on one ExitStack, so a failure or Ctrl-C half-way unwinds what was started, in reverse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dockerup import proc
from dockerup.errors import DockerUpError
from dockerup.paths import Paths
from dockerup.plan import Plan

Progress = Callable[[str], None]


class AlreadyRunning(Exception):
    pass


class Interrupted(Exception):
    """SIGINT or SIGTERM: stop everything in order."""


@dataclass
class Handles:
    """What the keeper inherits: the children and the fd that keeps slirp4netns alive."""

    child: ChildLink
    net: subprocess.Popen[bytes]
    net_exit_fd: int


@dataclass
class Running:
    pid: int
    dockerd_pid: int
    slirp_pid: int
    socket: str
    docker_host: str
    storage: str
    storage_reason: str
    iptables: str
    iptables_reason: str
    net: str
    net_options: list[str]
    mtu: int
    started_at: float
    timings: dict[str, float] = field(default_factory=dict)


def _pidfd(p: subprocess.Popen[bytes]) -> int:
    return os.pidfd_open(p.pid)


def _wait_readable(
    fd: int, helper: subprocess.Popen[bytes], name: str, what: str, log: Path, deadline: float
) -> None:
    """Block until fd is readable; fail at once if the helper exits first (its pidfd becomes
    readable), or at the deadline."""
    pidfd = _pidfd(helper)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DockerUpError(f"timed out waiting for {what}", detail=proc.tail(log))
            ready, _, _ = select.select([fd, pidfd], [], [], left)
            if fd in ready:
                return
            if pidfd in ready:
                raise helper_died(helper, name, what, log)
    finally:
        os.close(pidfd)


def helper_died(p: subprocess.Popen[bytes], name: str, what: str, log: Path) -> DockerUpError:
    code = p.wait()
    return DockerUpError(
        f"{name} {proc.describe_exit(code)} while waiting for {what}",
        hint=f"full log: {log}",
        detail=proc.tail(log, 20),
    )


class ChildLink:
    """The parent's end of the JSON-lines conversation with child.py."""

    def __init__(self, p: subprocess.Popen[bytes], rfd: int, wfd: int, log: Path) -> None:
        self.p, self.rfd, self.wfd, self.log = p, rfd, wfd, log
        self.buf = b""
        # The child process execs dockerd once told to go: errors name what it is by then.
        self.name = "docker-up's namespace child"

    def send(self, **msg: Any) -> None:
        os.write(self.wfd, (json.dumps(msg) + "\n").encode())

    def recv(self, what: str, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.buf:
            _wait_readable(self.rfd, self.p, self.name, what, self.log, deadline)
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise helper_died(self.p, self.name, what, self.log)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        if msg.get("step") == "error":
            raise DockerUpError(
                f"setting up the namespace failed: {msg['error']}", hint=f"log: {self.log}"
            )
        return msg


@contextlib.contextmanager
def instance_lock(paths: Paths) -> Iterator[int]:
    """One docker-up per user: a second one must not disturb the first. The lock lives as
    long as its open file, which the keeper inherits."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise AlreadyRunning(paths.docker_host) from e
        yield fd
    finally:
        os.close(fd)


def prepare_dirs(plan: Plan) -> None:
    for d in plan.dirs:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    rt = plan.paths.runtime
    st = rt.lstat()
    # A fallback under /tmp could have been made by someone else: refuse to use it then.
    if st.st_uid != os.getuid() or not rt.is_dir() or rt.is_symlink():
        raise DockerUpError(
            f"{rt} is not a directory owned by you", hint="remove it, or set XDG_RUNTIME_DIR"
        )
    os.chmod(rt, 0o700)


def remove_stale(paths: Paths) -> None:
    """Under the lock nothing of ours runs, so leftovers are stale."""
    for p in (paths.socket, paths.pidfile, paths.slirp_api, paths.state_file):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def spawn_child(plan: Plan) -> Iterator[ChildLink]:
    c2p_r, c2p_w = os.pipe()
    p2c_r, p2c_w = os.pipe()
    log = plan.paths.log_dir / "dockerd.log"
    log.write_bytes(b"")
    argv = [*plan.child_argv, json.dumps(plan.child_spec), str(p2c_r), str(c2p_w)]
    try:
        p = proc.spawn(argv, env=plan.dockerd_env, log=log, pass_fds=(p2c_r, c2p_w))
    finally:
        os.close(p2c_r)
        os.close(c2p_w)
    link = ChildLink(p, c2p_r, p2c_w, log)
    try:
        yield link
    finally:
        os.close(p2c_w)
        os.close(c2p_r)
        stop_daemon(p, plan.config.stop_timeout)


def stop_daemon(p: subprocess.Popen[bytes], timeout: float) -> None:
    """dockerd stops its containers and its containerd on SIGTERM; kill only when it hangs.
    SIGKILL would leave containerd and shims behind in the namespace, so it is the last resort."""
    proc.stop(p, timeout)


def start(
    plan: Plan, stack: contextlib.ExitStack[bool | None], progress: Progress
) -> tuple[Running, Handles]:
    t0 = time.monotonic()
    deadline = t0 + plan.config.start_timeout
    timings: dict[str, float] = {}
    paths = plan.paths
    prepare_dirs(plan)
    remove_stale(paths)
    # The Engine API client is only needed once dockerd listens: import it meanwhile.
    importer = threading.Thread(target=_import_docker_sdk, daemon=True)
    importer.start()

    progress("creating user and network namespaces")
    child = stack.enter_context(spawn_child(plan))
    child.recv("the child to unshare its namespaces", deadline)
    proc.run(plan.uidmap.argv(child.p.pid), "mapping user ids (newuidmap)")
    proc.run(plan.gidmap.argv(child.p.pid), "mapping group ids (newgidmap)")
    child.send(step="mapped")
    timings["namespaces"] = time.monotonic() - t0

    progress(f"starting {plan.net.name} ({', '.join(plan.net.options_used) or 'no options'})")
    ready_r, exit_w, net = _start_network(plan, stack, child.p.pid)
    ns = child.recv("the namespace set-up", deadline)
    timings["namespace_setup"] = time.monotonic() - t0
    paths.daemon_json.write_text(plan.daemon_json(ns["storage"]))
    _wait_readable(
        ready_r,
        net,
        plan.net.name,
        "the network to be ready",
        paths.log_dir / f"{plan.net.name}.log",
        deadline,
    )
    timings["network_ready"] = time.monotonic() - t0

    progress(f"starting dockerd (storage {ns['storage']}, iptables {ns['iptables']})")
    child.send(step="go")
    child.name = "dockerd"
    t_exec = time.monotonic()
    _wait_socket(paths.socket, child, deadline)
    timings["dockerd_socket"] = time.monotonic() - t_exec
    t_sock = time.monotonic()
    importer.join()
    _wait_api(paths.docker_host, child, deadline)
    timings["api_ready"] = time.monotonic() - t_sock
    verified = child.recv("the network check", deadline)
    if not verified.get("ok"):
        raise DockerUpError(
            "the namespace's network is not as slirp4netns should have set it: "
            + "; ".join(verified.get("problems", []))
        )
    timings["total"] = time.monotonic() - t0
    running = Running(
        pid=os.getpid(),
        dockerd_pid=child.p.pid,
        slirp_pid=net.pid,
        socket=str(paths.socket),
        docker_host=paths.docker_host,
        storage=ns["storage"],
        storage_reason=ns["storage_reason"],
        iptables=ns["iptables"],
        iptables_reason=ns["iptables_reason"],
        net=plan.net.name,
        net_options=list(plan.net.options_used),
        mtu=plan.net.mtu,
        started_at=time.time(),
        timings=timings,
    )
    return running, Handles(child, net, exit_w)


def _start_network(
    plan: Plan, stack: contextlib.ExitStack[bool | None], pid: int
) -> tuple[int, int, subprocess.Popen[bytes]]:
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    log = plan.paths.log_dir / f"{plan.net.name}.log"
    log.write_bytes(b"")
    argv = plan.net.argv(pid, ready_fd=ready_w, exit_fd=exit_r)
    try:
        p = proc.spawn(argv, log=log, pass_fds=(ready_w, exit_r))
    finally:
        os.close(ready_w)
        os.close(exit_r)

    def cleanup() -> None:
        # Closing exit_w is slirp4netns' signal to exit; it also fires if docker-up dies.
        os.close(exit_w)
        os.close(ready_r)
        proc.stop(p, 5.0)

    stack.callback(cleanup)
    return ready_r, exit_w, p


def _import_docker_sdk() -> None:
    import docker  # noqa: F401


class _NotYet(Exception):
    pass


def _wait_socket(sock: Path, child: ChildLink, deadline: float) -> None:
    def attempt() -> None:
        if child.p.poll() is not None:
            raise helper_died(child.p, child.name, "its socket", child.log)
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(sock))
            except OSError as e:
                raise _NotYet from e

    _retry(attempt, deadline, "dockerd's socket", child.log)


def _wait_api(docker_host: str, child: ChildLink, deadline: float) -> None:
    import docker

    # A fixed, old API version: "auto" would ask the daemon before it is ready.
    client = docker.APIClient(base_url=docker_host, version="1.24", timeout=5)

    def attempt() -> None:
        if child.p.poll() is not None:
            raise helper_died(child.p, child.name, "the Engine API", child.log)
        try:
            client.ping()
        except docker.errors.APIError as e:
            raise _NotYet from e
        except Exception as e:  # connection-level errors from requests/urllib3
            raise _NotYet from e

    try:
        _retry(attempt, deadline, "the Engine API to answer", child.log)
    finally:
        client.close()


def _retry(attempt: Callable[[], None], deadline: float, what: str, log: Path) -> None:
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception_type,
        stop_before_delay,
        wait_fixed,
    )

    try:
        for a in Retrying(
            retry=retry_if_exception_type(_NotYet),
            stop=stop_before_delay(max(0.0, deadline - time.monotonic())),
            # A fixed short period: the wait ends within 10 ms of readiness, at little cost.
            wait=wait_fixed(0.01),
        ):
            with a:
                attempt()
    except RetryError as e:
        raise DockerUpError(
            f"timed out waiting for {what}", hint=f"log: {log}", detail=proc.tail(log)
        ) from e


def write_state(paths: Paths, running: Running) -> None:
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(running), indent=2))
    tmp.replace(paths.state_file)


def read_state(paths: Paths) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None
    return data


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        # Cleanup must not be cut short by a second Ctrl-C: ignore them while unwinding.
        for s in old:
            signal.signal(s, signal.SIG_IGN)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
KEEPER_SCRIPT = Path(__file__).with_name("keeper.py")


def run_foreground(plan: Plan, progress: Progress, on_ready: Callable[[Running], None]) -> int:
    """Start and announce; then become the lean keeper (never returns on success)."""
    paths = plan.paths
    paths.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    with instance_lock(paths) as lock_fd, contextlib.ExitStack() as stack:
        stack.callback(remove_stale, paths)
        with _signals_raise():
            try:
                running, handles = start(plan, stack, progress)
                write_state(paths, running)
                on_ready(running)
                # From here on a signal waits for the keeper (pending signals survive exec).
                signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
            except Interrupted:
                progress("stopping")
                return 0
        exec_keeper(plan, running, handles, lock_fd)
    return 0


def keeper_spec(plan: Plan, running: Running, handles: Handles, lock_fd: int) -> dict[str, Any]:
    paths = plan.paths
    return {
        "dockerd_pid": running.dockerd_pid,
        "net_pid": running.slirp_pid,
        "net_name": plan.net.name,
        "exit_fd": handles.net_exit_fd,
        "lock_fd": lock_fd,
        "stop_timeout": plan.config.stop_timeout,
        "dockerd_log": str(paths.log_dir / "dockerd.log"),
        "remove": [
            str(p) for p in (paths.socket, paths.pidfile, paths.slirp_api, paths.state_file)
        ],
    }


def exec_keeper(plan: Plan, running: Running, handles: Handles, lock_fd: int) -> None:
    spec = keeper_spec(plan, running, handles, lock_fd)
    for fd in (handles.net_exit_fd, lock_fd):
        os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    python = plan.child_argv[0]
    os.execv(python, [python, "-S", str(KEEPER_SCRIPT), json.dumps(spec)])
