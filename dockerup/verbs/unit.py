"""`docker-up autostart enable|disable|status --systemd`: docker-up as a systemd --user
service, with Delegate=yes as Docker's rootless setuptool unit asks for (the user manager
hands the service a cgroup subtree of its own), enabled and started with the user manager.

Removal leaves the user's files as they were: the unit names, in comments of its own, what
did not exist before enabling and enabling or the start creates (~/.config/systemd/user,
its default.target.wants, the docker CLI context docker-up writes, their parents), and
disabling removes exactly the unit, the link systemctl made, and those (a directory only
when it is empty again). A unit file of the same name that docker-up did not write is never
touched. docker-up's own data (its images, ~/.local/share/docker-up) stays, as after
`docker-up stop`."""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from dockerup import proc
from dockerup.errors import DockerUpError
from dockerup.files import atomic_write
from dockerup.host import facts as host
from dockerup.keeper.background import docker_up_path
from dockerup.results import UnitState
from dockerup.settings import context

UNIT = "docker-up.service"
WANTS = "default.target.wants"
MARK = "# Written by `docker-up autostart enable --systemd`; `docker-up autostart disable "
CREATED = "# docker-up created: "  # what enabling (or the start) made, removed on disable


@dataclass(frozen=True)
class Account:
    """Who runs this, read without host.probe(): its probe cache would write into the home
    that disabling must leave as it found it."""

    user: str
    home: str
    env: dict[str, str]

    @classmethod
    def current(cls) -> Account:
        env = dict(os.environ)
        pw = pwd.getpwuid(os.getuid())
        return cls(pw.pw_name, env.get("HOME") or pw.pw_dir, env)

    @property
    def path(self) -> str:
        return host.search_path(self.env.get("PATH", "/usr/bin:/bin"))


def unit_dir(env: dict[str, str], home: str) -> Path:
    """Where systemd --user reads the user's own units ($XDG_CONFIG_HOME/systemd/user)."""
    config = env.get("XDG_CONFIG_HOME") or f"{home}/.config"
    return Path(config) / "systemd" / "user"


def render_unit(docker_up: str, path_env: str, created: list[Path]) -> str:
    """The unit, pure. `docker-up up` runs in the foreground and becomes the keeper, which
    stops dockerd and everything else in order on SIGTERM; KillMode=mixed sends that to
    the keeper alone first, as Docker's own unit does for dockerd-rootless.sh."""
    lines = [
        MARK + "--systemd` removes it.",
        *(CREATED + str(p) for p in created),
        "[Unit]",
        "Description=docker-up: a rootless Docker daemon of your own",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={quote(docker_up)} up",
        f"Environment={quote('PATH=' + path_env)}",
        # The user manager delegates the service's cgroup to it: runc's systemd driver
        # puts each container in a scope of its own with the limits it asks for.
        "Delegate=yes",
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "Restart=on-failure",
        "RestartSec=2",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def quote(word: str) -> str:
    """systemd's quoting for one word of ExecStart= or Environment=."""
    if word and not any(c in word for c in ' "\\$%;\t'):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{escaped}"'


def ours(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARK)
    except OSError:
        return False


def created_paths(text: str) -> list[Path]:
    return [Path(line[len(CREATED) :]) for line in text.splitlines() if line.startswith(CREATED)]


def systemctl(*args: str) -> str:
    """The user's own manager (the one choke point, so tests can stand in for it)."""
    return proc.run(["systemctl", "--user", *args], f"systemctl --user {' '.join(args)}")


def lingering(user: str) -> bool:
    """loginctl enable-linger USER: the user manager runs from boot, without a login."""
    return Path("/var/lib/systemd/linger", user).exists()


def enable() -> UnitState:
    f = Account.current()
    d = unit_dir(f.env, f.home)
    path = d / UNIT
    if path.exists() and not ours(path):
        raise DockerUpError(
            f"{path} exists and docker-up did not write it: it is left as it is",
            hint=f"remove or rename it yourself, then run this again (systemctl --user cat {UNIT})",
        )
    # What this (and the start) makes, outermost first, so that disabling removes it again.
    meta = context.meta_path(context.docker_config_dir(f.env, f.home))
    missing = [p for p in (*absent_parents(d / WANTS), *absent_parents(meta)) if not p.exists()]
    if path.exists():
        missing = created_paths(path.read_text())  # enabled before: keep its record
    d.mkdir(parents=True, exist_ok=True)
    unit = render_unit(docker_up_path(), f.path, missing)
    atomic_write(path, unit, 0o644)
    try:
        systemctl("daemon-reload")
        systemctl("enable", "--now", UNIT)
    except DockerUpError:
        undo(path, missing)
        raise
    return UnitState(path, True, systemctl_state("is-active"), lingering(f.user), f.user)


def disable() -> UnitState:
    f = Account.current()
    path = unit_dir(f.env, f.home) / UNIT
    if not path.exists():
        return UnitState(path, False, "not installed", lingering(f.user), f.user)
    if not ours(path):
        raise DockerUpError(
            f"{path} is not docker-up's: it is left as it is",
            hint="docker-up removes only the unit it wrote",
        )
    created = created_paths(path.read_text())
    systemctl("disable", "--now", UNIT)  # stops docker-up, removes the link it made
    undo(path, created)
    with contextlib.suppress(DockerUpError):
        systemctl("daemon-reload")
    return UnitState(path, False, "removed", lingering(f.user), f.user)


def absent_parents(path: Path) -> list[Path]:
    """path and each of its parents that does not exist yet, outermost first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out[::-1]


def undo(path: Path, created: list[Path]) -> None:
    """Remove the unit and, innermost first, what enabling created: a file (the docker
    context's meta.json, docker-up's own), a directory only if empty (else something of
    the user's is in it now, and it stays)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    for p in reversed(created):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.name == "meta.json":
                p.unlink()


def systemctl_state(verb: str) -> str:
    return proc.probe(["systemctl", "--user", verb, UNIT]).output.strip() or "unknown"


def status() -> UnitState:
    f = Account.current()
    path = unit_dir(f.env, f.home) / UNIT
    if not path.exists():
        state = "not installed"
    elif not ours(path):
        state = "another unit of that name (not docker-up's)"
    else:
        state = systemctl_state("is-active")
    return UnitState(path, ours(path), state, lingering(f.user), f.user)
