"""Checks of the programs docker-up runs: all found, and the engine's versions (dockerd,
containerd, runc) and the docker client."""

from __future__ import annotations

from dockerup.doctor.model import Finding, Health, from_require, mode_of, ok, see_programs
from dockerup.doctor.probe import DoctorFacts
from dockerup.plan import require
from dockerup.plan.engine import Engine


def check_programs(f: DoctorFacts) -> Finding:
    mode = mode_of(f)
    return from_require(
        lambda: require.require_programs(f.host, mode, f.net),
        f"dockerd, containerd, runc, {f.net}, iptables found",
    )


def _version(f: DoctorFacts, name: str) -> str:
    return f.versions.get(name, "").strip() or "?"


def check_dockerd(f: DoctorFacts) -> Finding:
    """The engine: its versions, and what docker-up does for it (engine.py, as `up`)."""
    dockerd = f.host.binaries.get("dockerd")
    if not dockerd:
        return see_programs(["dockerd"])
    engine = Engine.probed(f.host.dockerd_version, f.host.containerd_version)
    if engine.dockerd is None:
        return Finding(
            Health.warn, f"cannot read {dockerd}'s version: {f.host.dockerd_version.strip()!r}"
        )
    found = from_require(lambda: engine.require_supported(dockerd), "")
    if found.status is not Health.ok:
        return found
    return ok(f"{engine.describe()} ({dockerd}); docker-up: {'; '.join(engine.differences())}")


def check_containerd_runc(f: DoctorFacts) -> Finding:
    parts = [
        f"{n} {_version(f, n).split()[2] if len(_version(f, n).split()) > 2 else '?'}"
        for n in ("containerd", "runc")
        if f.host.binaries.get(n)
    ]
    missing = [n for n in ("containerd", "runc") if not f.host.binaries.get(n)]
    if missing:
        return see_programs(missing)
    return ok(", ".join(parts))


def check_docker_cli(f: DoctorFacts) -> Finding:
    if not f.host.binaries.get("docker"):
        return Finding(Health.warn, "no docker client on PATH", "sudo apt-get install docker.io")
    return ok(_version(f, "docker"))
