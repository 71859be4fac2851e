"""Carry out a Plan: the executor of `up`, where a start changes the system. Every helper
is a context manager or callback on one ExitStack, so a failure or Ctrl-C half-way unwinds
what was started, in reverse. Once dockerd answers, the process execs the lean keeper
(resident.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dockerup import logs as logfiles
from dockerup import proc
from dockerup.errors import DockerUpError
from dockerup.files import atomic_write
from dockerup.keeper.handover import (
    Handles,
    exec_keeper,
    open_listener,
    open_port_manager,
    serve_rootlesskit_api,
)
from dockerup.keeper.instance import AlreadyRunning as AlreadyRunning
from dockerup.keeper.instance import Progress as Progress
from dockerup.keeper.instance import Running as Running
from dockerup.keeper.instance import (
    end_orphans,
    instance_lock,
    prepare_runtime,
    remove_stale,
    write_state,
)
from dockerup.linux import procid
from dockerup.linux.exits import STOP_SIGNALS
from dockerup.logs import append_log, tail
from dockerup.namespace.childlink import ChildLink, helper_died
from dockerup.namespace.early import MARKS, Child, start_child, stop_on_signals
from dockerup.namespace.early import Interrupted as Interrupted
from dockerup.namespace.netstart import start_net, wait_ready
from dockerup.net.driver import argv_template
from dockerup.net.kinds import NET_DRIVERS
from dockerup.plan.data import Plan, WriteFile
from dockerup.settings.paths import Paths
from dockerup.wire.messages import Go, Mapped, Prepared, Rooted, Start, Unshared, Verified
from dockerup.wire.ping import ping

if TYPE_CHECKING:
    pass

NS_KINDS = ("user", "mnt", "net")


def prepare_dirs(plan: Plan) -> None:
    try:
        for d in plan.dirs:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(plan.paths.data, plan.data_mode)
    except PermissionError as e:
        raise not_the_users(Path(e.filename or plan.paths.data), e) from None
    # Under keep-id dockerd, root inside, makes its data-root its own (0710): a subordinate
    # id's, the marker inside out of the user's reach.
    ns_root = plan.uidmap.root if plan.uidmap and plan.child.become_root else None
    claim_data_root(plan.paths.data_root, custom=plan.config.data_root is not None, ns_root=ns_root)


def not_the_users(path: Path, e: OSError) -> DockerUpError:
    """A directory docker-up needs is another id's. Most often a volume that another user, or
    another pod under an id range of its own, wrote first: its files then show as the
    overflow id (65534) and docker-up's 0700 directories among them are closed."""
    found = path
    while True:  # the nearest that can be looked at says whose it is
        try:
            st = found.lstat()
            break
        except OSError:
            if found.parent == found:
                return DockerUpError(f"cannot create {path}: {e.strerror}")
            found = found.parent
    return DockerUpError(
        f"cannot create or change {path}: {e.strerror}; {found} belongs to uid {st.st_uid}"
        f" (mode {st.st_mode & 0o7777:04o}), docker-up runs as uid {os.getuid()}",
        hint="docker-up's directories must be its user's own. If they are on a volume that"
        " another user or pod wrote first (another pod's ids show as 65534), give docker-up a"
        " volume of its own, or move what is there aside.",
    )


DATA_ROOT_MARKER = ".docker-up-data-root"


def claim_data_root(root: Path, custom: bool, ns_root: int | None = None) -> None:
    """dockerd empties <data-root>/tmp and changes the root's mode at every start: never
    point it at a directory of the user's that docker-up did not create. docker-up's own
    default location is its own (also from before the marker existed). ns_root: the id
    outside that is root in docker-up's namespace, when that is not the user (keep-id): a
    directory of that id's is one such a dockerd already took over."""
    marker = root / DATA_ROOT_MARKER
    try:
        if ns_root is not None and root.is_dir() and root.stat().st_uid == ns_root:
            return
        if marker.exists():
            return
        if custom and root.exists() and any(root.iterdir()):
            raise DockerUpError(
                f"data-root {root} is not empty, and docker-up did not create it",
                hint="dockerd would empty its tmp/ and change its permissions: set data-root "
                "to a new or empty directory",
            )
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker.write_text("docker-up's data-root: dockerd's images, containers and volumes.\n")
    except OSError as e:
        raise DockerUpError(
            f"cannot use data-root {root}: {e.strerror}",
            hint="set data-root to a directory you own",
        ) from e


def write_files(files: tuple[WriteFile, ...]) -> None:
    """The plan's files, each only if its content differs (a docker CLI context the user
    also points at stays untouched when it is already right)."""
    for f in files:
        try:
            if f.path.exists() and f.path.read_text() == f.content:
                continue
            f.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(f.path, f.content, f.mode)
        except OSError as e:
            if not f.optional:
                raise DockerUpError(f"cannot write {f.path}: {e.strerror}") from e


@contextlib.contextmanager
def spawn_child(plan: Plan, early: Child | None = None) -> Iterator[ChildLink]:
    """The namespace child, given its spec: the one started early (dockerup/namespace/early.py), or
    one started now."""
    log = Path(plan.child.log)
    logfiles.start_fresh(log)
    child = early or start_child(plan.python, plan.config.listen_fd)
    child.taken = True
    link = ChildLink(child.p, child.rfd, child.wfd, log)
    link.spawned_at = child.spawned_at
    try:
        link.send(Start(plan.child))
        yield link
    finally:
        os.close(child.wfd)
        os.close(child.rfd)
        # dockerd stops its containers and its containerd on SIGTERM; SIGKILL would leave
        # containerd and shims behind in the namespace, so it is the last resort.
        proc.stop(child.p, plan.config.stop_timeout)


def open_namespaces(
    plan: Plan, pid: int, stack: contextlib.ExitStack[bool | None]
) -> dict[str, int]:
    kinds = [k for k in NS_KINDS if k != "user" or plan.mode.needs_userns()]
    if plan.net is None:
        kinds.remove("net")
    fds = {k: os.open(f"/proc/{pid}/ns/{k}", os.O_RDONLY) for k in kinds}
    for fd in fds.values():
        stack.callback(os.close, fd)
    return fds


def start_network(
    plan: Plan, stack: contextlib.ExitStack[bool | None], pid: int
) -> tuple[int, int, subprocess.Popen[bytes]]:
    assert plan.net is not None
    for other in NET_DRIVERS:  # `logs` shows the helper of this run only
        with contextlib.suppress(FileNotFoundError):
            (plan.paths.log(other)).unlink()
    log = plan.paths.log(plan.net.name)
    logfiles.start_fresh(log)
    fifo = str(plan.paths.net_ready) if plan.net.ready_fifo else ""
    try:
        net = start_net(argv_template(plan.net), pid, fifo, str(log))
    except OSError as e:
        raise DockerUpError(
            f"cannot start {plan.net.name}: {e.strerror}",
            hint=f"see `docker-up doctor`; log: {log}",
        ) from e

    def cleanup() -> None:
        # Closing exit_w is the helper's signal to exit; it also fires if docker-up dies.
        os.close(net.exit_w)
        os.close(net.ready_r)
        proc.stop(net.p, 5.0)

    stack.callback(cleanup)
    return net.ready_r, net.exit_w, net.p


def start(
    plan: Plan,
    stack: contextlib.ExitStack[bool | None],
    progress: Progress,
    early: Child | None = None,
) -> tuple[Running, Handles]:
    t0 = time.monotonic()
    deadline = t0 + plan.config.start_timeout
    timings: dict[str, float] = {}
    paths = plan.paths
    prepare_dirs(plan)
    # Before the child runs anything: containerd's configuration (the child starts it),
    # dockerd's runtime and proxy scripts (dockerd checks their paths as it starts).
    write_files(plan.files)
    progress(f"mode {plan.mode} ({plan.mode_reason})")
    progress(f"cgroups {plan.cgroups.describe()}")

    progress("creating namespaces: " + ", ".join(plan.child.unshare))
    child = stack.enter_context(spawn_child(plan, early))
    unshared = child.recv(Unshared, "the child to unshare its namespaces", deadline)
    # The child's own steps, and this process's, on this timeline (negative: before
    # start() was called).
    timings["child_spawned"] = child.spawned_at - t0
    timings.update({f"cli_{step}": t - t0 for step, t in MARKS.items()})
    timings.update(
        child_started=unshared.t_started - t0,
        child_imported=unshared.t_imported - t0,
        child_spec=unshared.t_spec - t0,
    )
    timings["unshared"] = time.monotonic() - t0
    if plan.uidmap and plan.gidmap:
        proc.run_together(
            [
                (plan.uidmap.argv(child.p.pid), "mapping user ids (newuidmap)"),
                (plan.gidmap.argv(child.p.pid), "mapping group ids (newgidmap)"),
            ]
        )
    ns_fds = open_namespaces(plan, child.p.pid, stack)
    child.send(Mapped())
    if plan.child.become_root:  # before the helper opens its namespaces
        child.recv(Rooted, "the child to become root in its namespace", deadline)
    timings["namespaces"] = time.monotonic() - t0

    net = exit_w = ready_r = None
    if plan.net:
        progress(f"starting {plan.net.name} ({', '.join(plan.net.options_used) or 'no options'})")
        ready_r, exit_w, net = start_network(plan, stack, child.p.pid)
    ns = child.recv(Prepared, "the namespace set-up", deadline)
    progress(f"storage {ns.storage}: {ns.storage_reason}")
    progress(f"iptables {ns.iptables}: {ns.iptables_reason}")
    if ns.client_address:  # "" when it works, "off", or why not
        progress(f"published ports show containers the proxy's address: {ns.client_address}")
    atomic_write(paths.daemon_json, plan.daemon_json[ns.storage])
    ports = open_port_manager(plan, stack)
    accel = open_listener(plan.paths.accel_sock, stack) if plan.agent else None
    if plan.net and net and ready_r is not None:
        wait_network(plan.net.name, net, ready_r, paths.log(plan.net.name), deadline)
    timings["network_ready"] = time.monotonic() - t0

    rlk = serve_rootlesskit_api(plan, child.p.pid, stack)
    progress("starting dockerd")
    child.send(Go())
    verified = child.recv(Verified, "the network check", deadline)
    if verified.watch:
        raise DockerUpError(
            f"dockerd's connections cannot go to the acceleration agent: {verified.watch}",
            hint="start with --no-daemon-net-accel",
        )
    if not verified.ok:
        raise DockerUpError(
            f"the namespace's network is not as {plan.net_name} should have set it: "
            + "; ".join(verified.problems)
        )
    child.name = "dockerd"
    t_exec = time.monotonic()
    if plan.config.listen_fd is None:  # an activated socket is ours and connects at once
        wait_socket(paths.socket, child, deadline)
    timings["dockerd_socket"] = time.monotonic() - t_exec
    t_sock = time.monotonic()
    wait_api(paths.socket, child, deadline)
    timings["api_ready"] = time.monotonic() - t_sock
    # Nobody else may use the socket: the runtime dir is 0700 already; this is belt and braces.
    # (Under keep-id it is dockerd's, a subordinate id's: 0660 with the user's group.)
    if not plan.child.become_root:
        os.chmod(paths.socket, 0o600)
    timings["total"] = time.monotonic() - t0
    running = Running(
        pid=os.getpid(),
        dockerd_pid=child.p.pid,
        net_pid=net.pid if net else None,
        socket=str(paths.socket),
        docker_host=paths.docker_host,
        mode=str(plan.mode),
        mode_reason=plan.mode_reason,
        userns=plan.userns,
        data_root=str(paths.data_root),
        storage=ns.storage,
        storage_reason=ns.storage_reason,
        iptables=ns.iptables,
        iptables_reason=ns.iptables_reason,
        net=plan.net_name,
        net_options=(list(plan.net.options_used) if plan.net else [])
        + (["net-accel"] if plan.accel else [])
        + (["daemon-net-accel"] if plan.daemon_accel else [])
        + (["client-address"] if ns.client_address == "" else []),
        mtu=plan.config.mtu,
        ipv6=plan.ipv6_reason,
        engine=plan.engine.describe(),
        cgroup_driver=plan.cgroups.driver,
        cgroup_limits=list(plan.cgroups.limits),
        cgroup_reason=plan.cgroups.reason,
        cgroup_fix=plan.cgroups.fix,
        started_at=time.time(),
        timings=timings,
        procs=procid.identities(
            {"keeper": os.getpid(), "dockerd": child.p.pid, "net": net.pid if net else None}
        ),
    )
    return running, Handles(child, net, exit_w, ns_fds, ports, accel, rlk)


def wait_network(
    name: str, net: subprocess.Popen[bytes], ready_r: int, log: Path, deadline: float
) -> None:
    pidfd = os.pidfd_open(net.pid)
    try:
        came_up = wait_ready(ready_r, pidfd, max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)
    if came_up == "timeout":
        raise DockerUpError(
            "timed out waiting for the network to be ready",
            hint=f"log: {log}",
            detail=tail(log),
        )
    if came_up == "died":
        raise helper_died(net, name, "the network to be ready", log)


def wait_socket(sock: Path, child: ChildLink, deadline: float) -> None:
    def connects() -> bool:
        if child.p.poll() is not None:
            raise helper_died(child.p, child.name, "its socket", child.log)
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(sock))
            except OSError:
                return False
        return True

    wait_for(connects, deadline, "dockerd's socket", child.log)


def wait_api(sock: Path, child: ChildLink, deadline: float) -> None:
    """Until GET /_ping answers 200: a raw request (wire.ping). The docker SDK would cost
    about 0.1 s to import on the start-up path for this one call."""

    def answers() -> bool:
        if child.p.poll() is not None:
            raise helper_died(child.p, child.name, "the Engine API", child.log)
        return ping(sock)

    wait_for(answers, deadline, "the Engine API to answer", child.log)


def wait_for(condition: Callable[[], bool], deadline: float, what: str, log: Path) -> None:
    from dockerup.waiting import wait_until  # tenacity: only when a start waits

    # A fixed short period: the wait ends within 10 ms of readiness, at little cost.
    if not wait_until(condition, deadline - time.monotonic(), period=0.01):
        raise DockerUpError(f"timed out waiting for {what}", hint=f"log: {log}", detail=tail(log))


def ignore_stop_signals() -> None:
    """While unwinding: a second Ctrl-C must not cut the cleanup short. (Never on the way to
    the keeper: setting SIG_IGN discards a pending signal, and the keeper must see it.)"""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def logged(paths: Paths, progress: Progress) -> Progress:
    """docker-up's own lines go to its log file too (`docker-up logs` shows them)."""

    def both(msg: str) -> None:
        append_log(paths.log("docker-up"), msg)
        progress(msg)

    return both


def run(
    plan: Plan,
    progress: Progress,
    on_ready: Callable[[Running], None],
    foreground: bool = True,
    lock_fd: int | None = None,
    early: Child | None = None,
) -> int:
    """Start and announce; then become the lean keeper (does not return on success).
    lock_fd: the instance lock, already held (socket activation hands it over)."""
    paths = plan.paths
    prepare_runtime(paths)
    held = contextlib.nullcontext(lock_fd) if lock_fd is not None else instance_lock(paths)
    activated = plan.config.listen_fd is not None
    try:
        with held as lock, contextlib.ExitStack() as stack:
            assert lock is not None
            lock_fd = lock
            paths.log_dir.mkdir(exist_ok=True, mode=0o700)
            progress = logged(paths, progress)
            end_orphans(paths, progress, keep_socket=activated)
            stack.callback(remove_stale, paths)
            # The shell snippet's cheap is-it-running test (kill -0 on this PID).
            paths.main_pid.write_text(str(os.getpid()))
            stop_on_signals()  # (a start's first line did already: for other callers)
            try:
                running, handles = start(plan, stack, progress, early)
                write_state(paths, running)
                # From here on a signal waits for the keeper (pending signals survive exec):
                # whoever reads the ready line below may signal at once.
                signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
                if plan.context_file:
                    write_files((plan.context_file,))
            except BaseException:
                ignore_stop_signals()
                raise
            on_ready(running)
            exec_keeper(plan, running, handles, lock_fd, foreground)
    except Interrupted as e:
        progress(f"stopped ({e}) before dockerd was ready")
        return 130
    return 0
