"""The core's entry points, called by the CLI: probe, plan, execute."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dockerup import facts as host
from dockerup import supervise
from dockerup.config import Config
from dockerup.paths import resolve_paths
from dockerup.plan import Plan, build_plan


def make_plan(config: Config) -> Plan:
    f = host.probe()
    return build_plan(config, f, resolve_paths(f.env, f.uid, f.home))


def plan_summary(plan: Plan) -> dict[str, Any]:
    return {
        "socket": str(plan.paths.socket),
        "network": plan.net.argv(0, 3, 4),
        "uidmap": plan.uidmap.argv(0),
        "gidmap": plan.gidmap.argv(0),
        "dockerd": list(plan.dockerd_argv),
        "dockerd_env": plan.dockerd_env,
        "child": plan.child_spec,
    }


def up(
    config: Config, progress: supervise.Progress, on_ready: Callable[[supervise.Running], None]
) -> int:
    plan = make_plan(config)
    try:
        return supervise.run_foreground(plan, progress, on_ready)
    except supervise.AlreadyRunning:
        progress("already running")
        print(f"export DOCKER_HOST={plan.paths.docker_host}", flush=True)
        return 0


__all__ = ["make_plan", "os", "plan_summary", "up"]
