"""Resolve once per command: the settings (and their sources), the host's facts, the mode
(and why) and the paths, exactly as `up` does. The mode is resolved here, once, and
travels with the settings (Loaded) to the plan and every verb that needs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockerup.errors import DockerUpError
from dockerup.host import facts as host
from dockerup.namespace.early import mark
from dockerup.net.kinds import kind_of
from dockerup.plan.build import build_plan, paths_for, resolve_mode_of
from dockerup.plan.data import Plan
from dockerup.settings.config import Config
from dockerup.settings.modes import Mode, resolve_mode
from dockerup.settings.paths import Paths

if TYPE_CHECKING:
    from dockerup.results import ConfigShown


@dataclass(frozen=True)
class Loaded:
    config: Config
    sources: dict[str, str]
    file: Path
    facts: host.HostFacts
    mode: Mode
    mode_reason: str

    @property
    def resolved_mode(self) -> tuple[Mode, str]:
        return self.mode, self.mode_reason


def load_config(cli: dict[str, Any]) -> Loaded:
    """Settings from the config file, DOCKER_UP_* variables and the command line. Where the
    file is depends on the mode, so only the command line and the environment choose it."""
    from dockerup.settings.config import resolve

    f = host.probe()
    asked = cli.get("mode") or f.env.get("DOCKER_UP_MODE")
    mode, reason = resolve_mode(f.uid, f.initial_userns, f.net_admin, asked)
    path = paths_for(mode, f).config_file
    try:
        text: str | None = path.read_text()
    except FileNotFoundError:
        text = None
    except OSError as e:
        raise DockerUpError(f"cannot read {path}: {e.strerror}") from e
    config, sources = resolve(cli, f.env, text, str(path))
    if config.mode != (asked or "auto"):
        # The file asks for a mode of its own (the command line and the environment did
        # not choose one): what it asks decides, as for every other setting.
        mode, reason = resolve_mode_of(config, f)
    mark("configured")
    return Loaded(config, sources, path, f, mode, reason)


@dataclass(frozen=True)
class Context:
    """What every command resolves once and the same way `up` does."""

    loaded: Loaded
    mode: Mode
    mode_reason: str
    paths: Paths


def context(cli: dict[str, Any] | None = None) -> Context:
    loaded = load_config(cli or {})
    mode = loaded.mode
    return Context(loaded, mode, loaded.mode_reason, paths_for(mode, loaded.facts, loaded.config))


def current_paths() -> Paths:
    """Where a running docker-up of this user keeps its state (status, stop, logs, exec)."""
    return context().paths


def wants_agent(config: Config) -> bool:
    """Whether the acceleration agent may run (then its support is probed)."""
    containers = config.net_accel is not False
    dockerd = config.daemon_net_accel is not False
    return (containers or dockerd) and not config.host_network


def make_plan(
    config: Config, f: host.HostFacts | None = None, mode: tuple[Mode, str] | None = None
) -> Plan:
    """Probe what the configuration needs, refuse what a cheap fatal check of doctor's
    finds (with doctor's words and fix), and plan. mode: as load_config resolved it (a
    caller without one has it resolved from config and facts, once, here)."""
    from dockerup import doctor
    from dockerup.doctor.probe import probe_cheap

    f = host.with_engine(f or host.probe(), config.dockerd)
    f = kind_of(config.net).probe(f)
    if wants_agent(config):
        f = host.with_accel(f)
    mode = mode or resolve_mode_of(config, f)
    if not config.host_network:
        paths = paths_for(mode[0], f, config)
        cheap = probe_cheap(f, paths, config)
        failures = doctor.up_failures(cheap)
        if failures:
            check, result = failures[0]
            raise DockerUpError(
                result.detail,
                hint=f"{result.hint}\n(check {check.id} failed; `docker-up doctor` checks "
                "everything)",
            )
    plan = build_plan(config, f, resolved=mode)
    mark("planned")
    return plan


def config_show(loaded: Loaded) -> ConfigShown:
    from dockerup.results import ConfigShown, Setting
    from dockerup.settings.config import SETTINGS

    c = loaded.config
    return ConfigShown(
        loaded.file,
        [Setting(s.key, _plain(getattr(c, s.field)), loaded.sources[s.key]) for s in SETTINGS],
    )


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else str(v) if hasattr(v, "value") else v
