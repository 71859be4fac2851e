"""`docker-up doctor` (with --fix) and `install-deps`: probe, check, plan fixes, apply them
as root through proc.run."""

from __future__ import annotations

import os
import pwd

from dockerup import doctor, proc
from dockerup.doctor.probe import probe_cheap, probe_doctor
from dockerup.errors import DockerUpError
from dockerup.files import read_text
from dockerup.host import facts as host
from dockerup.host.facts import OPTIONAL_PACKAGES, PACKAGES
from dockerup.plan.build import paths_for, resolve_mode_of
from dockerup.results import Doctor, Fixes, Installed
from dockerup.settings.config import Config
from dockerup.verbs.resolve import load_config
from dockerup.verbs.running import status


def report(verbose: bool = False) -> Doctor:
    """Every check, for the configured settings (a broken config file is reported by `up`
    and `config show`; doctor then still checks the machine, for the defaults)."""
    try:
        loaded = load_config({})
        config, h, mode = loaded.config, loaded.facts, loaded.mode  # as `up` would
    except DockerUpError:
        config, h = Config(), host.probe()
        mode = resolve_mode_of(config, h)[0]
    h = host.with_engine(h, config.dockerd)
    paths = paths_for(mode, h, config)
    cheap = probe_cheap(h, paths, config)
    facts = probe_doctor(cheap, status(paths))
    return Doctor(doctor.run_checks(facts), verbose)


def fixes(user: str | None) -> list[doctor.Fix]:
    """The fixes for this machine (and, as root, for `user`), planned from what is found."""
    try:
        tun_mode: int | None = os.stat("/dev/net/tun").st_mode & 0o777
    except FileNotFoundError:
        tun_mode = None
    target = None
    if user:
        try:
            target = (user, pwd.getpwnam(user).pw_uid)
        except KeyError as e:
            raise DockerUpError(f"no such user: {user}") from e
    return doctor.plan_fixes(
        tun_mode,
        target,
        read_text("/etc/subuid"),
        read_text("/etc/subgid"),
        missing_packages(),
        mode_of("/dev/fuse"),
    )


def fix(user: str | None) -> Fixes:
    """As root: apply them. Otherwise: say what root would run."""
    planned = fixes(user)
    root = os.geteuid() == 0
    if root:
        apply(planned)
    return Fixes(planned, applied=root and bool(planned), user=user)


def apply(planned: list[doctor.Fix]) -> None:
    for f in planned:
        proc.run(f.argv, f.what or " ".join(f.argv), timeout=600)


def missing_packages() -> list[str]:
    f = host.probe()
    wanted = PACKAGES | OPTIONAL_PACKAGES
    return sorted({wanted[n] for n in wanted if not f.binaries.get(n)})


def mode_of(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return None


def install_deps() -> Installed:
    """Install missing dockerd, slirp4netns, uidmap, iptables with apt (as real root)."""
    pkgs = missing_packages()
    if not pkgs or os.geteuid() != 0:
        return Installed(pkgs, installed=False)
    apply(doctor.package_fixes(pkgs))
    return Installed(pkgs, installed=True)
