"""`docker-up up`: in the foreground, detached, lazily (socket activation), started by the
lazy holder, or only planned (--dry-run)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dockerup.keeper import background, supervise
from dockerup.namespace.early import Child
from dockerup.plan.data import Plan
from dockerup.verbs.resolve import Loaded, make_plan

# The results module is imported where a result is made: a foreground start never
# returns one (it becomes the keeper), so it does not pay for the import.
if TYPE_CHECKING:
    from dockerup.results import DryRun, Up


def plan_view(plan: Plan) -> dict[str, Any]:
    """The plan as data: every command, environment and file it would run or write."""
    return {
        "mode": str(plan.mode),
        "mode_reason": plan.mode_reason,
        "cgroups": dataclasses.asdict(plan.cgroups),
        "socket": str(plan.paths.socket),
        "network": plan.net.argv("PID", "READY_FD", "EXIT_FD") if plan.net else None,
        "uidmap": plan.uidmap.argv(0) if plan.uidmap else None,
        "gidmap": plan.gidmap.argv(0) if plan.gidmap else None,
        # The spec goes over the pipe, as the first message (the child may start first).
        "child": [*plan.child_argv, "P2C_FD", "C2P_FD", "PARENT_PID"],
        "child_spec": dataclasses.asdict(plan.child),
        "dockerd": list(plan.dockerd_argv),
        "dockerd_env": plan.dockerd_env,
        "files": [
            {"path": str(f.path), "mode": oct(f.mode), "content": f.content}
            for f in (*plan.files, *([plan.context_file] if plan.context_file else []))
        ],
        "daemon_json": {"path": str(plan.paths.daemon_json), "by_storage": plan.daemon_json},
    }


def dry_run(loaded: Loaded) -> DryRun:
    from dockerup.results import DryRun

    return DryRun(plan_view(make_plan(loaded.config, loaded.facts, loaded.resolved_mode)))


def up(
    loaded: Loaded,
    progress: supervise.Progress,
    on_ready: Callable[[supervise.Running], None],
    early: Child | None = None,
) -> Up:
    """Foreground: returns only when stopped (the process becomes the keeper, whose exit
    status becomes the command's), or at once when another docker-up already runs.
    early: the namespace child, if it was started before planning (dockerup/namespace/early.py)."""
    from dockerup.results import Up

    plan = make_plan(loaded.config, loaded.facts, loaded.resolved_mode)
    try:
        code = supervise.run(plan, progress, on_ready, foreground=True, early=early)
    except supervise.AlreadyRunning:
        return Up(background.wait_for_other(plan), already_running=True)
    return Up(plan.paths.docker_host, already_running=False, stopped=True, code=code)


def up_detached(loaded: Loaded) -> Up:
    from dockerup.results import Up

    plan = make_plan(loaded.config, loaded.facts, loaded.resolved_mode)
    docker_host, already = background.start_detached(plan)
    return Up(docker_host, already_running=already, notice="" if already else plan.cgroups.notice)


def up_lazy(loaded: Loaded) -> Up:
    """Hold the socket and the lock in the background; start on the first connection."""
    from dockerup.results import Up

    plan = make_plan(
        loaded.config, loaded.facts, (loaded.mode, loaded.mode_reason)
    )  # refuse a broken machine now, not later
    held = background.hold_socket(plan, background.docker_up_path())
    return Up(plan.paths.docker_host, already_running=not held)


def up_activated(loaded: Loaded, lock_fd: int, early: Child | None = None) -> Up:
    """Started by the lazy holder: start for real on its socket, then become the keeper."""
    from dockerup.results import Up

    plan = make_plan(loaded.config, loaded.facts, loaded.resolved_mode)
    code = supervise.run(
        plan, lambda _m: None, lambda _r: None, foreground=False, lock_fd=lock_fd, early=early
    )
    return Up(plan.paths.docker_host, already_running=False, stopped=True, code=code)
