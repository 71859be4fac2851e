"""What the keeper inherits from the start-up: the listeners bound before dockerd runs (its
port proxies, runc's acceleration client and dockerd 28's RootlessKit client connect to them
from the first moment), the children and namespaces, and the exec into the keeper itself."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockerup.keeper.instance import Running, stale_files
from dockerup.namespace.childlink import ChildLink
from dockerup.net.driver import argv_template
from dockerup.plan.data import Plan
from dockerup.wire.specs import AutoPortsSpec, KeeperSpec

if TYPE_CHECKING:
    from dockerup.ports.rlkapi import ApiThread


@dataclass
class Handles:
    """What the keeper inherits: the children, the fd that keeps slirp4netns alive, and fds
    of the namespaces (holding them keeps the namespaces alive, so dockerd can be restarted
    in them after it died)."""

    child: ChildLink
    net: subprocess.Popen[bytes] | None
    net_exit_fd: int | None
    ns_fds: dict[str, int]
    ports: socket.socket | None = None
    accel: socket.socket | None = None  # the acceleration agent's listener (--net-accel)
    rlk: ApiThread | None = None  # dockerd 28+: the RootlessKit API, answered meanwhile


def open_port_manager(plan: Plan, stack: contextlib.ExitStack[bool | None]) -> socket.socket | None:
    """Listen for dockerd's port proxies before dockerd starts (containers with a restart
    policy publish at once); the keeper inherits the socket and answers them."""
    if plan.net is None:
        return None
    return open_listener(plan.paths.ports_sock, stack)


def serve_rootlesskit_api(
    plan: Plan, dockerd_pid: int, stack: contextlib.ExitStack[bool | None]
) -> ApiThread | None:
    """dockerd 28+ asks the RootlessKit API as it starts, before its own API answers: this
    process serves it on a thread until the keeper takes over (exec_keeper)."""
    if plan.rlk_info is None:
        return None
    from dockerup.ports.rlkapi import ApiThread, RootlessKitApi

    plan.paths.rootlesskit_dir.mkdir(mode=0o700, exist_ok=True)
    server = open_listener(plan.paths.rootlesskit_api, stack)
    api = RootlessKitApi(dataclasses.replace(plan.rlk_info, child_pid=dockerd_pid))
    return stack.enter_context(ApiThread(api, server))


def open_listener(path: Path, stack: contextlib.ExitStack[bool | None]) -> socket.socket:
    """A unix socket only we may connect to, bound before dockerd starts (runc connects to
    the acceleration agent's as it creates a container; a missing one fails the container)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX)
    stack.callback(server.close)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(64)
    return server


def keeper_spec(
    plan: Plan, running: Running, handles: Handles, lock_fd: int, foreground: bool
) -> KeeperSpec:
    paths = plan.paths
    # A new slirp4netns attaches by dockerd's PID, as the first did: by namespace path it
    # would have to join the user namespace itself, which its --enable-sandbox cannot do.
    net_argv = argv_template(plan.net) if plan.net else None
    return KeeperSpec(
        dockerd_pid=running.dockerd_pid,
        dockerd=plan.child.dockerd,
        containerd=plan.child.containerd,
        dockerd_log=str(paths.log("dockerd")),
        net_pid=running.net_pid,
        net_name=plan.net_name,
        net_argv=net_argv,
        net_ready=str(paths.net_ready) if plan.net and plan.net.ready_fifo else "",
        net_log=str(paths.log(plan.net_name)),
        net_api=str(paths.slirp_api),
        exit_fd=handles.net_exit_fd,
        ns_fds=handles.ns_fds,
        lock_fd=lock_fd,
        listen_fd=plan.config.listen_fd,
        ports_fd=handles.ports.fileno() if handles.ports else None,
        accel_fd=handles.accel.fileno() if handles.accel else None,
        live_restore=plan.config.gives_dockerd("--live-restore"),
        **rootlesskit_handover(handles.rlk),
        allow_host_loopback=plan.config.allow_host_loopback,
        watch_connects=plan.child.watch_connects,
        become_root=plan.child.become_root,
        port_forwarder=plan.config.port_forwarder,
        socket=str(paths.socket),
        pidfile=str(paths.pidfile),
        containerd_pidfile=str(paths.containerd_pidfile),
        state_file=str(paths.state_file),
        log_file=str(paths.log("docker-up")),
        log_max=plan.config.log_max,
        echo=foreground,
        stop_timeout=plan.config.stop_timeout,
        start_timeout=plan.config.start_timeout,
        remove=[str(p) for p in stale_files(paths)] + [str(paths.auto_ports_table)],
        views=str(paths.views),
        auto_ports=auto_ports_spec(plan),
        ports_table=str(paths.published_ports_table) if handles.ports else None,
    )


def auto_ports_spec(plan: Plan) -> AutoPortsSpec | None:
    """Namespace listeners on the workspace's loopback: only where docker-up has a network
    namespace of its own (the keeper checks it holds one)."""
    c = plan.config
    if not c.auto_ports or c.host_network:
        return None
    from dockerup.autoports.rules import parse_ranges

    return AutoPortsSpec(
        include=parse_ranges(c.auto_ports_include),
        exclude=parse_ranges(c.auto_ports_exclude),
        cap=c.auto_ports_max,
        table=str(plan.paths.auto_ports_table),
        udp=parse_ranges(c.auto_ports_udp),
    )


def rootlesskit_handover(rlk: ApiThread | None) -> dict[str, Any]:
    """The API's socket and table for the keeper. The thread stops first: what dockerd asks
    from now on waits in the socket's backlog for the keeper."""
    if rlk is None:
        return {}
    rlk.stop()
    state = rlk.api
    return {"rlk_fd": rlk.server.fileno(), "rlk_info": state.info, "rlk_ports": state.snapshot()}


def exec_keeper(
    plan: Plan, running: Running, handles: Handles, lock_fd: int, foreground: bool
) -> None:
    spec = keeper_spec(plan, running, handles, lock_fd, foreground)
    port_fd = handles.ports.fileno() if handles.ports else None
    accel_fd = handles.accel.fileno() if handles.accel else None
    listen = plan.config.listen_fd
    rlk_fd = handles.rlk.server.fileno() if handles.rlk else None
    for fd in (
        handles.net_exit_fd,
        lock_fd,
        port_fd,
        accel_fd,
        rlk_fd,
        listen,
        *handles.ns_fds.values(),
    ):
        if fd is not None:
            os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = plan.program_argv("keeper", spec.to_json())
    os.execv(argv[0], argv)
