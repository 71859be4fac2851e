"""docker-up's records in its runtime directory, typed (stdlib only: the keeper rewrites
state.json after each restart). Each is written whole and atomically and read back through
Spec.from_dict, so every reader gets the declared types or nothing."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import ClassVar, TypeVar

from dockerup.files import atomic_write
from dockerup.linux.procid import ProcId
from dockerup.wire.specs import Spec

R = TypeVar("R", bound=Spec)


@dataclasses.dataclass(frozen=True)
class Running(Spec):
    """What `status` shows; written to state.json at start, updated by the keeper."""

    # A newer docker-up may have added fields this one does not know: ignored, not an error
    # (fields an older one did not write yet get their defaults below).
    EXTRA_OK: ClassVar[bool] = True
    pid: int
    dockerd_pid: int
    net_pid: int | None
    socket: str
    docker_host: str
    mode: str
    mode_reason: str
    data_root: str
    storage: str
    storage_reason: str
    iptables: str
    iptables_reason: str
    net: str
    net_options: list[str]
    mtu: int
    started_at: float
    restarts: int = 0
    userns: str = ""  # the id map, in one line (idmap.describe); "" before it was recorded
    ipv6: str = ""  # on or off, and why (plan.ipv6_reason)
    engine: str = ""  # "dockerd 28.5.2, containerd 2.1.9" (plan.engine)
    # The plan's cgroup decision (dockerup/plan/cgroups.py): dockerd's driver, the controllers
    # whose limits apply, why, and the fix for those that do not.
    cgroup_driver: str = ""
    cgroup_limits: list[str] = dataclasses.field(default_factory=list)
    cgroup_reason: str = ""
    cgroup_fix: str = ""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    # keeper, dockerd, net: pid, start time and executable (procid.py): what any later
    # signal checks first, since a PID alone may name anyone's process by then.
    procs: dict[str, ProcId] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LazyRecord(Spec):
    """lazy.json: socket activation's holder runs, dockerd not yet (background.py)."""

    pid: int
    id: ProcId | None  # None: it could not read its own identity


def read(path: str | os.PathLike[str], kind: type[R]) -> R | None:
    """The record, or None when there is none, half a file from a crash, or not this kind."""
    try:
        with open(path) as f:
            return kind.from_json(f.read())
    except (OSError, ValueError):
        return None


def write(path: str | os.PathLike[str], record: Spec) -> None:
    atomic_write(path, json.dumps(dataclasses.asdict(record), indent=2))
