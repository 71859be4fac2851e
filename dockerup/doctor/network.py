"""Checks of the network: the driver and its helper (slirp4netns, pasta), acceleration,
IPv6 for containers, and iptables in a namespace."""

from __future__ import annotations

from dataclasses import replace

from dockerup.doctor.model import Finding, Health, from_require, ok, see_programs
from dockerup.doctor.probe import DoctorFacts
from dockerup.errors import DockerUpError
from dockerup.net import pasta, slirp4netns
from dockerup.plan import ipv6


def check_net_driver(f: DoctorFacts) -> Finding:
    # The daemon's record (status's): none while stopped, or lazy (nothing runs yet).
    daemon = f.docker_up.daemon if f.docker_up else None
    running = daemon.net if daemon else None
    now = f" (the running docker-up uses {running})" if running and running != f.net else ""
    return ok(f"{f.net}{now}")


def check_slirp4netns(f: DoctorFacts) -> Finding:
    if not f.host.binaries.get("slirp4netns"):
        if f.net == slirp4netns.NAME:
            return see_programs(["slirp4netns"])
        return Finding(Health.skip, "not installed (optional: apt-get install slirp4netns)")
    feats = slirp4netns.parse_features(f.host.slirp_help, f.host.slirp_version)
    have = [
        n
        for n, on in (
            ("sandbox", feats.sandbox),
            ("seccomp", feats.seccomp),
            ("api-socket", feats.api_socket),
            ("netns-by-path", feats.netns_type),
        )
        if on
    ]
    missing = {"sandbox", "seccomp", "api-socket"} - set(have)
    detail = f"{feats.version}: {', '.join(have) or 'no optional features'}"
    if missing:
        return Finding(
            Health.warn,
            detail + f"; lacks {', '.join(sorted(missing))}",
            "a newer slirp4netns (1.0+) adds them",
        )
    return ok(detail)


def check_pasta(f: DoctorFacts) -> Finding:
    h = f.host
    chosen = f.net == pasta.NAME
    if not h.binaries.get("pasta"):
        if chosen:
            return see_programs(["pasta"])
        return Finding(Health.skip, "not installed (optional: apt-get install passt)")
    feats = pasta.parse_features(h.pasta_help, h.pasta_version)
    r = from_require(lambda: pasta.require_usable(h), f"usable ({feats.version})")
    # Only a problem when pasta is chosen; otherwise a note about an option not taken.
    return r if chosen or r.status is Health.ok else replace(r, status=Health.warn)


def check_accel(f: DoctorFacts) -> Finding:
    """--net-accel: seccomp user notification, usable by rootless runc. The same probe the
    planner uses (facts.with_accel), so doctor and `up` cannot disagree."""
    problems = f.host.accel_problems
    # auto, for both: on wherever the agent works, host loopback allowed or not
    # (plan.resolve_accel, plan.resolve_daemon_accel).
    state = {True: "on", False: "off", None: "auto (on where supported)"}
    said = f"containers {state[f.net_accel]}, dockerd's own {state[f.daemon_net_accel]}"
    if problems:
        asked = f.net_accel or f.daemon_net_accel
        return Finding(
            Health.fail if asked else Health.skip,
            f"{said}; unsupported here: {'; '.join(problems)}",
            "drop --net-accel and --daemon-net-accel",
        )
    return ok(f"{said}; supported (seccomp user notification, runc 1.1+)")


def check_ipv6(f: DoctorFacts) -> Finding:
    """IPv6 for containers: what `up` would do here (the planner's rule), and why."""
    from dockerup.settings.config import Config

    config = Config(net=f.net, ipv6=f.ipv6)
    bins = {k: v for k, v in f.host.binaries.items() if v}
    try:
        on, reason = ipv6.resolve_ipv6(config, f.host, bins)
    except DockerUpError as e:
        return Finding(Health.fail, e.message, e.hint or "")
    if on and f.host.ipv6_overlap:
        return Finding(
            Health.warn,
            reason,
            "containers reach that network's hosts over IPv4 "
            "only (slirp4netns 1.2 cannot move its IPv6 network)",
        )
    return ok(reason)


def check_iptables(f: DoctorFacts) -> Finding:
    working = [b for b, err in f.iptables.items() if not err]
    if working:
        return ok(f"{working[0]} works in a fresh namespace (docker-up uses it)")
    errors = "; ".join(f"{b}: {e}" for b, e in f.iptables.items())
    return Finding(
        Health.fail,
        f"no iptables backend works in a namespace: {errors}",
        "sudo apt-get install iptables (and the nf_tables kernel module)",
    )
