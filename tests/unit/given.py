"""Given facts the unit tests plan, check and render from: a Debian 12 host (its binaries,
engine versions, slirp4netns' and pasta's help), a user's paths, a running record and the
fields `status --json` publishes, Debian 13's cgroups. One copy, imported by the tests that
need them (a test module imports no other test module)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dockerup.host.facts import CgroupFacts, HostFacts, IdRange, TunAccess
from dockerup.keeper import instance
from dockerup.linux.procid import ProcId
from dockerup.settings.paths import resolve_paths
from dockerup.verbs.run import Where

DATA = Path(__file__).parent / "data"
HELP_12 = (DATA / "slirp4netns-1.2.0.help").read_text()
BINS = {
    "dockerd": "/usr/sbin/dockerd",
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "slirp4netns": "/usr/bin/slirp4netns",
    "newuidmap": "/usr/bin/newuidmap",
    "newgidmap": "/usr/bin/newgidmap",
    "iptables": "/usr/sbin/iptables",
    "fuse-overlayfs": None,
    "docker-proxy": "/usr/sbin/docker-proxy",
}


# What Debian 12's, 13's and unstable's engines print for --version.
DOCKERD_20 = "Docker version 20.10.24+dfsg1, build 297e128"
CONTAINERD_16 = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
DOCKERD_26 = "Docker version 26.1.5+dfsg1, build a72d7cd"
CONTAINERD_17 = "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1"
DOCKERD_28 = "Docker version 28.5.2+dfsg4, build ecc6942"
CONTAINERD_21 = "containerd github.com/containerd/containerd/v2 2.1.9+unknown "


def facts(**kw: object) -> HostFacts:
    base = HostFacts(
        uid=1001,
        gid=1001,
        user="alice",
        home="/home/alice",
        search_path="/usr/bin:/bin:/usr/sbin",
        binaries=dict(BINS),
        subuid=(IdRange(100000, 65536),),
        subgid=(IdRange(200000, 65536),),
        tun=TunAccess(True, True),
        slirp_help=HELP_12,
        slirp_version=(DATA / "slirp4netns-1.2.0.version").read_text(),
        python="/usr/bin/python3",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SECRET": "x"},
        dockerd_version=DOCKERD_20,
        containerd_version=CONTAINERD_16,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def paths(env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return resolve_paths(env or {}, 1001, "/home/alice")


PASTA_HELP = (DATA / "pasta-2023-03-09.help").read_text()
PASTA_VERSION = (DATA / "pasta-2023-03-09.version").read_text()
WITH_PASTA = {**BINS, "pasta": "/usr/bin/pasta"}


def pasta_facts(**kw: object) -> HostFacts:
    base: dict[str, object] = {
        "binaries": WITH_PASTA,
        "pasta_help": PASTA_HELP,
        "pasta_version": PASTA_VERSION,
    }
    return facts(**{**base, **kw})


# A running docker-up's record, as its state file holds it.
# `docker-up run` from outside docker-up's namespaces (another shell of the workspace).
OUTSIDE = Where(same_net=False, same_user=False)

RUNNING = instance.Running(
    pid=10,
    dockerd_pid=11,
    net_pid=12,
    socket="/run/u/docker-up/docker.sock",
    docker_host="unix:///run/u/docker-up/docker.sock",
    mode="rootless",
    mode_reason="auto: uid 1001 is not root",
    data_root="/home/a/.local/share/docker-up/data",
    storage="overlay2",
    storage_reason="overlay mounts",
    iptables="legacy",
    iptables_reason="legacy works",
    net="slirp4netns",
    net_options=["sandbox", "mtu=65520"],
    mtu=65520,
    started_at=1000.0,
    restarts=2,
    ipv6="on (auto): the workspace has an IPv6 default route",
    engine="dockerd 20.10.24, containerd 1.6.20",
    timings={"total": 0.45},
    procs={"keeper": ProcId(pid=10, start=5, exe="/usr/bin/python3")},
)

# The fields `status --json` publishes (the README documents each).
PUBLISHED = {
    "schema",
    "running",
    "state",
    "lazy",
    "socket",
    "docker_host",
    "pid",
    "dockerd_pid",
    "net_pid",
    "answering",
    "mode",
    "mode_reason",
    "net",
    "net_options",
    "mtu",
    "ipv6",
    "ipv6_reason",
    "storage",
    "storage_reason",
    "data_root",
    "iptables",
    "iptables_reason",
    "engine",
    "cgroup_driver",
    "cgroup_limits",
    "cgroup_reason",
    "cgroup_fix",
    "userns",
    "started_at",
    "uptime_s",
    "restarts",
}


BUS = "/run/user/1001/bus"
# Debian 13 after a login through PAM: systemd 257's user@.service delegates these.
DEBIAN13 = CgroupFacts(
    version=2,
    systemd=True,
    bus=BUS,
    manager_controllers=("cpu", "memory", "pids"),
    own="/user.slice/user-1001.slice/session-3.scope",
    own_controllers=("cpuset", "cpu", "io", "memory", "pids"),
)
