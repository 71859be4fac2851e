"""What the verbs return: typed results, rendered once by dockerup/cli/render.py as text or
as JSON in one versioned envelope ({"version": 1, "kind": ..., ...})."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dockerup.doctor import Fix, Report

SCHEMA_VERSION = 1


class Result:
    kind: ClassVar[str]

    @property
    def exit_code(self) -> int:
        return 0

    def data(self) -> dict[str, Any]:
        raise NotImplementedError


def envelope(result: Result) -> dict[str, Any]:
    """The one JSON shape every verb's --json has."""
    return {"version": SCHEMA_VERSION, "kind": result.kind, **result.data()}


@dataclass(frozen=True)
class Up(Result):
    kind: ClassVar[str] = "up"
    docker_host: str
    already_running: bool
    # Interrupted before dockerd was ready (on success the process became the keeper).
    stopped: bool = False
    code: int = 0
    notice: str = ""  # said once by the start that started it (the cgroup limits' notice)

    @property
    def exit_code(self) -> int:
        return self.code

    def data(self) -> dict[str, Any]:
        return {"docker_host": self.docker_host, "already_running": self.already_running}


@dataclass(frozen=True)
class DryRun(Result):
    """`up --dry-run`: the plan, every file it would write included."""

    kind: ClassVar[str] = "plan"
    plan: dict[str, Any]

    def data(self) -> dict[str, Any]:
        return self.plan


# `status --json`'s own document, versioned apart from the envelope: a field is added
# within a version, never renamed or given another meaning (README: "status --json").
STATUS_SCHEMA = "docker-up.status/1"


@dataclass(frozen=True)
class Daemon:
    """What a running docker-up is and does: the fields `status` publishes."""

    pid: int  # docker-up's keeper
    dockerd_pid: int
    net_pid: int | None  # the network helper's (None: --host-network)
    mode: str
    mode_reason: str
    net: str  # slirp4netns, pasta, host
    net_options: list[str]
    mtu: int
    ipv6: bool
    ipv6_reason: str
    storage: str
    storage_reason: str
    data_root: str
    iptables: str
    iptables_reason: str
    engine: str  # "dockerd 28.5.2, containerd 2.1.9"; "" when not known
    started_at: float  # seconds since the epoch
    restarts: int  # of dockerd or the network helper, by the keeper
    # dockerd's cgroup driver ("systemd", "none", "cgroupfs"; "" from an older docker-up),
    # the controllers whose limits apply (memory, cpu, pids), why, and the fix for the rest.
    cgroup_driver: str = ""
    cgroup_limits: list[str] = field(default_factory=list)
    cgroup_reason: str = ""
    cgroup_fix: str = ""
    # The user namespace's id map (idmap.describe): "default: ..." or "keep-id: ..."; ""
    # without a namespace of docker-up's, or from an older docker-up.
    userns: str = ""


@dataclass(frozen=True)
class Status(Result):
    kind: ClassVar[str] = "status"
    running: bool
    socket: str
    docker_host: str
    lazy: bool = False  # socket activation: only the holder runs (pid), dockerd not yet
    pid: int | None = None
    answering: bool | None = None
    uptime_s: float | None = None
    daemon: Daemon | None = None
    # --debug only: the start's timings and the processes' identity records.
    debug: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.running else 3

    @property
    def state(self) -> str:
        return "lazy" if self.lazy else "running" if self.running else "stopped"

    def data(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": STATUS_SCHEMA,
            "running": self.running,
            "state": self.state,
            "lazy": self.lazy,
            "socket": self.socket,
            "docker_host": self.docker_host,
        }
        if self.lazy:
            doc.update(pid=self.pid)
        elif self.daemon is not None:
            doc.update(
                dataclasses.asdict(self.daemon), answering=self.answering, uptime_s=self.uptime_s
            )
        if self.debug is not None:
            doc["debug"] = self.debug
        return doc


@dataclass(frozen=True)
class Stopped(Result):
    kind: ClassVar[str] = "stop"
    was_running: bool

    def data(self) -> dict[str, Any]:
        return {"was_running": self.was_running}


@dataclass(frozen=True)
class Logs(Result):
    kind: ClassVar[str] = "logs"
    lines: list[tuple[str, str]]  # (which log, line)

    def data(self) -> dict[str, Any]:
        return {"lines": [{"log": n, "line": line} for n, line in self.lines]}


@dataclass(frozen=True)
class Doctor(Result):
    kind: ClassVar[str] = "doctor"
    report: Report
    verbose: bool = False  # the text form shows every check in full (JSON always does)

    @property
    def exit_code(self) -> int:
        return 1 if self.report.failed else 0

    def data(self) -> dict[str, Any]:
        return self.report.as_json()


@dataclass(frozen=True)
class Fixes(Result):
    """`doctor --fix`: what was (or, not being root, would be) done."""

    kind: ClassVar[str] = "fixes"
    fixes: list[Fix]
    applied: bool
    user: str | None = None

    def data(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "user": self.user,
            "fixes": [{"what": f.what, "argv": list(f.argv)} for f in self.fixes],
        }


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str


@dataclass(frozen=True)
class ConfigShown(Result):
    kind: ClassVar[str] = "config"
    file: Path
    settings: list[Setting]

    def data(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "settings": {s.key: {"value": s.value, "source": s.source} for s in self.settings},
        }


@dataclass(frozen=True)
class Snippet(Result):
    kind: ClassVar[str] = "shell-init"
    shell: str
    text: str

    def data(self) -> dict[str, Any]:
        return {"shell": self.shell, "text": self.text}


@dataclass(frozen=True)
class RcChange:
    shell: str
    file: Path
    changed: bool


@dataclass(frozen=True)
class Autostart(Result):
    kind: ClassVar[str] = "autostart"
    enabled: bool
    changes: list[RcChange]

    def data(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "changes": [
                {"shell": c.shell, "file": str(c.file), "changed": c.changed} for c in self.changes
            ],
        }


@dataclass(frozen=True)
class UnitState(Result):
    """`autostart enable|disable|status --systemd`: docker-up's systemd --user unit."""

    kind: ClassVar[str] = "autostart-systemd"
    file: Path
    installed: bool  # docker-up's unit is there
    state: str  # systemctl --user is-active's word, "not installed" or "removed"
    linger: bool  # loginctl enable-linger: the user manager runs without a login
    user: str

    def data(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "installed": self.installed,
            "state": self.state,
            "linger": self.linger,
        }


@dataclass(frozen=True)
class RcState:
    """One shell's rc file, and whether docker-up's block is in it."""

    shell: str
    file: Path
    installed: bool


@dataclass(frozen=True)
class AutostartState(Result):
    kind: ClassVar[str] = "autostart-status"
    shells: list[RcState]

    def data(self) -> dict[str, Any]:
        return {
            "shells": [
                {"shell": s.shell, "file": str(s.file), "installed": s.installed}
                for s in self.shells
            ]
        }


@dataclass(frozen=True)
class Installed(Result):
    """install-deps: what was missing and whether it was installed (only real root may)."""

    kind: ClassVar[str] = "install-deps"
    packages: list[str]
    installed: bool

    @property
    def exit_code(self) -> int:
        return 0 if self.installed or not self.packages else 1

    def data(self) -> dict[str, Any]:
        return {"packages": self.packages, "installed": self.installed}


# `ports --json`'s document, versioned as status's is: fields are added, never renamed.
PORTS_SCHEMA = "docker-up.ports/1"


@dataclass(frozen=True)
class PortRow:
    """One port that answers (or was refused) on the workspace's side."""

    port: int
    proto: str  # "tcp" or "udp"
    addresses: list[str]  # where it answers in the workspace (empty: refused)
    how: str  # "published" (docker run -p) or "auto" (a namespace listener)
    owner: str  # the container's name; a namespace process's command; "" when unknown
    container: str | None = None  # the container's name, for a container's port
    pid: int | None = None  # auto: the process holding the listener inside
    target: str = ""  # published: the container's address and port
    reason: str | None = None  # auto: why it is not exposed (None: it answers)


@dataclass(frozen=True)
class Ports(Result):
    kind: ClassVar[str] = "ports"
    rows: list[PortRow]

    def data(self) -> dict[str, Any]:
        return {"schema": PORTS_SCHEMA, "ports": [dataclasses.asdict(r) for r in self.rows]}
