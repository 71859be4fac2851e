"""The Plan: what a start will do, as data a test compares exactly and `up --dry-run`
prints (pure: built by build.py, carried out by keeper/supervise.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dockerup.lean import script
from dockerup.net.driver import NetworkDriver
from dockerup.plan import daemon
from dockerup.plan.cgroups import UNDECIDED, Cgroups
from dockerup.plan.engine import Engine
from dockerup.plan.idmap import IdMap, describe
from dockerup.settings.config import Config
from dockerup.settings.modes import Mode
from dockerup.settings.paths import Paths
from dockerup.wire.specs import ApiInfo, ChildSpec


@dataclass(frozen=True)
class WriteFile:
    """A file the executor writes (only when its content differs: nothing is rewritten for
    nothing). optional: a convenience whose failure must not stop the start."""

    path: Path
    content: str
    mode: int = 0o600
    optional: bool = False


@dataclass(frozen=True)
class Plan:
    paths: Paths
    config: Config
    mode: Mode
    mode_reason: str
    net: NetworkDriver | None  # None: dockerd shares the current network namespace
    uidmap: IdMap | None  # None: no new user namespace (we are root in one already)
    gidmap: IdMap | None
    python: str  # the interpreter that runs the lean programs (under -S)
    child: ChildSpec
    dockerd_argv: tuple[str, ...]
    dockerd_env: dict[str, str] = field(default_factory=dict)
    dirs: tuple[Path, ...] = ()
    # Written before dockerd starts: the runtime and proxy scripts dockerd is pointed at.
    files: tuple[WriteFile, ...] = ()
    # Written once dockerd runs: the docker CLI context naming the socket.
    context_file: WriteFile | None = None
    # daemon.json for each storage driver the child may find working (it probes them).
    daemon_json: dict[str, str] = field(default_factory=dict)
    accel: bool = False  # --net-accel, resolved
    ipv6: bool = False  # --ipv6, resolved
    daemon_accel: bool = False  # --daemon-net-accel, resolved
    engine: Engine = daemon.DEFAULT_ENGINE  # what dockerd and containerd say they are
    # dockerd 28+: what docker-up's RootlessKit API says (child_pid filled in at the start).
    rlk_info: ApiInfo | None = None
    # The cgroup driver dockerd gets, why, and which limits apply (cgroups.decide).
    cgroups: Cgroups = UNDECIDED

    @property
    def agent(self) -> bool:
        """The acceleration agent runs: for containers, for dockerd, or both."""
        return self.accel or self.daemon_accel

    ipv6_reason: str = ""

    @property
    def data_mode(self) -> int:
        """docker-up's data directory is closed to others, except for passing through when
        dockerd remaps container root to another user (--userns-remap, real root only):
        that user must reach the data-root below (dockerd refuses to start otherwise)."""
        return 0o711 if self.config.gives_dockerd("--userns-remap") else 0o700

    @property
    def child_argv(self) -> tuple[str, ...]:
        # -S: no site-packages. The child is stdlib-only and starts in a few milliseconds.
        return (self.python, "-S", script("child"))

    def program_argv(self, name: str, spec_json: str) -> list[str]:
        return [self.python, "-S", script(name), spec_json]

    @property
    def net_name(self) -> str:
        return self.net.name if self.net else "host"

    @property
    def userns(self) -> str:
        """The id map in one line (status): "" without a user namespace of docker-up's."""
        return describe(self.config.userns, self.uidmap.outer_id) if self.uidmap else ""
