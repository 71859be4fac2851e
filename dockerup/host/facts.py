"""Probe the host once into HostFacts. Everything after this is a pure function of them.
What only doctor reads, and its probes, are dockerup/doctor/probe.py's."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sys
from dataclasses import dataclass, field, replace

from dockerup.files import read_text
from dockerup.host.probecache import probes
from dockerup.linux.routes import ipv6_addresses, ipv6_default_gateways, routes
from dockerup.net.kinds import KINDS

# Debian's PATH for a normal user lacks the sbin directories, where dockerd and runc live.
EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Program -> the Debian package that provides it (for the error a user sees). Every start
# needs these; each network driver's own programs (its kind's) only with that driver.
REQUIRED_PACKAGES: dict[str, str] = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "runc": "runc",
    "newuidmap": "uidmap",
    "newgidmap": "uidmap",
    "iptables": "iptables",
    "docker-proxy": "docker.io",
}
DRIVER_PACKAGES = {p: pkg for kind in KINDS.values() for p, pkg in kind.programs.items()}
PACKAGES = REQUIRED_PACKAGES | DRIVER_PACKAGES
REQUIRED = tuple(REQUIRED_PACKAGES)  # see plan.missing_programs
# busctl: runc's systemd driver runs `busctl --user status` inside a user namespace to learn
# the uid it must authenticate as on the user's bus (runc libcontainer/cgroups/systemd).
# bindfs: dev containers' views of the workspace's folders (dockerup/views).
OPTIONAL = ("fuse-overlayfs", "docker", "ip", "busctl", "bindfs")
# What `doctor --fix` installs beside the required packages: what a missing one costs is
# small, and doctor says it (check_views).
OPTIONAL_PACKAGES = {"bindfs": "bindfs"}


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


@dataclass(frozen=True)
class TunAccess:
    exists: bool
    openable: bool
    error: str = ""


@dataclass(frozen=True)
class CgroupFacts:
    """What the host's cgroups offer docker-up (probed by probe_cgroups, read by the plan's
    cgroup decision and by doctor). The defaults describe this project's first hosts:
    cgroup v1, no init, nothing delegated."""

    version: int = 1  # 2: /sys/fs/cgroup is the unified hierarchy; 0: no cgroup fs at all
    # /run/systemd/system is a directory: sd_booted(3), the very test dockerd makes
    # (daemon_unix.go isRunningSystemd) before it picks the systemd driver on cgroup v2.
    systemd: bool = False
    bus: str = ""  # the user's D-Bus socket that accepted a connection ("": none did)
    bus_error: str = ""  # why no bus: which path, and what connecting to it said
    # The controllers the user's systemd manager may hand on (user@UID.service's
    # cgroup.controllers: what its Delegate= gave it).
    manager_controllers: tuple[str, ...] = ()
    own: str = ""  # docker-up's own cgroup, as /proc/self/cgroup names it ("0::/...")
    own_writable: bool = False  # we may create child cgroups in it (a delegated subtree)
    own_controllers: tuple[str, ...] = ()  # its cgroup.controllers


@dataclass(frozen=True)
class HostFacts:
    uid: int
    gid: int
    user: str
    home: str
    search_path: str  # PATH used to find programs, sbin dirs included
    binaries: dict[str, str | None]
    subuid: tuple[IdRange, ...]
    subgid: tuple[IdRange, ...]
    tun: TunAccess
    slirp_help: str = ""
    slirp_version: str = ""  # its --version: 1.2's --help does not say it
    pasta_help: str = ""  # probed only when pasta is chosen (net/pasta.py's probe)
    pasta_version: str = ""
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    initial_userns: bool = False  # /proc/self/uid_map is the identity map of the host
    max_gid: int = 65535  # the highest gid our user namespace maps
    # The ids our user namespace maps (inside ids): all of them on a host, 65536 in a
    # Kubernetes pod with hostUsers: false. Subordinate ranges outside them cannot be used.
    uid_map: tuple[IdRange, ...] = (IdRange(0, 4294967295),)
    gid_map: tuple[IdRange, ...] = (IdRange(0, 4294967295),)
    net_admin: bool = False  # CAP_NET_ADMIN over the network namespace we are in
    default_route: bool = True  # an IPv4 default route in our network namespace (pasta)
    accel_problems: tuple[str, ...] = ()  # why --net-accel cannot work (see with_accel)
    # IPv6 in the workspace: ::1 on loopback (the kernel has IPv6 and it is not disabled),
    # and the gateways of its IPv6 default routes (none: it reaches no IPv6 network).
    ipv6_loopback: bool = False
    ipv6_gateways: tuple[str, ...] = ()
    ipv6_overlap: bool = False  # the workspace itself is on fd00::/64, the namespace's network
    # What the engine's programs say of themselves (`--version`; see dockerup/plan/engine.py).
    dockerd_version: str = ""
    containerd_version: str = ""
    cgroups: CgroupFacts = field(default_factory=CgroupFacts)


def search_path(env_path: str) -> str:
    parts = [p for p in env_path.split(":") if p]
    parts += [p for p in EXTRA_PATH if p not in parts]
    return ":".join(parts)


def subid_lines(text: str) -> list[tuple[str, IdRange]]:
    """Every well-formed "name:start:count" line of /etc/subuid or /etc/subgid."""
    out = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            out.append((fields[0], IdRange(int(fields[1]), int(fields[2]))))
    return out


def parse_subid(text: str, user: str, uid: int) -> tuple[IdRange, ...]:
    """This user's ranges, matched by name or by numeric uid, as newuidmap does."""
    return tuple(r for name, r in subid_lines(text) if name in (user, str(uid)))


def probe_tun(path: str = "/dev/net/tun") -> TunAccess:
    if not os.path.exists(path):
        return TunAccess(exists=False, openable=False, error="missing")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        return TunAccess(exists=True, openable=False, error=e.strerror or str(e))
    os.close(fd)
    return TunAccess(exists=True, openable=True)


def _inside_ranges(id_map: str) -> list[IdRange]:
    """The inside ids of each line of a /proc/PID/[ug]id_map ("inside outside count")."""
    out = []
    for line in id_map.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            out.append(IdRange(int(fields[0]), int(fields[2])))
    return out


def mapped_ids(id_map: str) -> tuple[IdRange, ...]:
    """The inside ids an id map maps, sorted (all of them when it cannot be read)."""
    ranges = sorted(_inside_ranges(id_map), key=lambda r: r.start)
    return tuple(ranges) or (IdRange(0, 4294967295),)


def usable_ranges(
    ranges: tuple[IdRange, ...], mapped: tuple[IdRange, ...], own: int
) -> tuple[IdRange, ...]:
    """The parts of the subordinate ranges this namespace maps, without our own id (the new
    namespace maps it as 0), sorted: what newuidmap can really hand to the containers."""
    pieces = []
    for r in ranges:
        for m in mapped:
            lo, hi = max(r.start, m.start), min(r.start + r.count, m.start + m.count)
            if lo >= hi:
                continue
            if lo <= own < hi:  # split around our own id
                pieces += [IdRange(lo, own - lo), IdRange(own + 1, hi - own - 1)]
            else:
                pieces.append(IdRange(lo, hi - lo))
    return tuple(sorted((p for p in pieces if p.count > 0), key=lambda r: r.start))


def max_mapped_id(id_map: str) -> int:
    """The highest id that a /proc/PID/[ug]id_map maps."""
    return max((r.start + r.count - 1 for r in _inside_ranges(id_map)), default=0)


def is_initial_userns(uid_map: str) -> bool:
    return uid_map.split() == ["0", "0", "4294967295"]


def probe_net_admin() -> bool:
    """Do we hold CAP_NET_ADMIN over our network namespace? Set lo's flags to what they
    already are: the kernel checks the capability first, and nothing changes either way."""
    from dockerup.linux import libc as linux

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            linux.set_if_flags(s, "lo", linux.if_flags(s, "lo"))
    except OSError:
        return False
    return True


def probe(env: dict[str, str] | None = None) -> HostFacts:
    env = dict(os.environ if env is None else env)
    uid, gid = os.getuid(), os.getgid()
    try:
        pw = pwd.getpwuid(uid)
        user, home = pw.pw_name, env.get("HOME") or pw.pw_dir
    except KeyError:
        user, home = str(uid), env.get("HOME", "/")
    path = search_path(env.get("PATH", "/usr/bin:/bin"))
    names = (*REQUIRED, *DRIVER_PACKAGES, *OPTIONAL)
    binaries = {name: shutil.which(name, path=path) for name in names}
    slirp = binaries.get("slirp4netns")
    cache = probes(env, home)
    uid_map, gid_map = read_text("/proc/self/uid_map"), read_text("/proc/self/gid_map")
    if_inet6 = read_text("/proc/net/if_inet6")
    return HostFacts(
        uid=uid,
        gid=gid,
        user=user,
        home=home,
        search_path=path,
        binaries=binaries,
        subuid=parse_subid(read_text("/etc/subuid"), user, uid),
        subgid=parse_subid(read_text("/etc/subgid"), user, uid),
        tun=probe_tun(),
        slirp_help=cache.output([slirp, "--help"]) if slirp else "",
        slirp_version=cache.output([slirp, "--version"]) if slirp else "",
        env=env,
        initial_userns=is_initial_userns(uid_map),
        net_admin=probe_net_admin(),
        max_gid=max_mapped_id(gid_map),
        uid_map=mapped_ids(uid_map),
        gid_map=mapped_ids(gid_map),
        default_route=has_default_route(read_text("/proc/net/route")),
        ipv6_loopback=has_ipv6_loopback(if_inet6),
        ipv6_overlap=on_namespace_network(if_inet6),
        ipv6_gateways=tuple(ipv6_default_gateways(read_text("/proc/net/ipv6_route"))),
        cgroups=probe_cgroups(env, uid),
    )


CGROUP_ROOT = "/sys/fs/cgroup"


def own_cgroup(proc_self_cgroup: str) -> str:
    """The cgroup v2 path of this process ("0::/user.slice/..." -> "/user.slice/...")."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return ""


def bus_path(env: dict[str, str], uid: int) -> str:
    """Where the user's D-Bus session bus is, as runc looks for it
    (DetectUserDbusSessionBusAddress): $DBUS_SESSION_BUS_ADDRESS's unix:path=, else the
    runtime directory's bus, else /run/user/UID/bus."""
    for part in env.get("DBUS_SESSION_BUS_ADDRESS", "").split(";"):
        if part.startswith("unix:"):
            for kv in part[5:].split(","):
                if kv.startswith("path="):
                    return kv[5:]
    runtime = env.get("XDG_RUNTIME_DIR", "")
    return f"{runtime}/bus" if runtime.startswith("/") else f"/run/user/{uid}/bus"


def reach_bus(path: str) -> str:
    """Connect to a unix socket: "" when it accepts, else why not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    return ""


def probe_cgroups(env: dict[str, str], uid: int, root: str = CGROUP_ROOT) -> CgroupFacts:
    """File reads and one connect: cheap enough for every start."""
    if os.path.exists(f"{root}/cgroup.controllers"):
        version = 2
    elif os.path.isdir(f"{root}/memory") or os.path.isdir(f"{root}/pids"):
        version = 1
    else:
        version = 0
    if version != 2:
        return CgroupFacts(version=version, systemd=os.path.isdir("/run/systemd/system"))
    own = own_cgroup(read_text("/proc/self/cgroup"))
    here = f"{root}{own}".rstrip("/") or root
    manager = f"{root}/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    path = bus_path(env, uid)
    error = reach_bus(path)
    return CgroupFacts(
        version=2,
        systemd=os.path.isdir("/run/systemd/system"),
        bus="" if error else path,
        bus_error=error,
        manager_controllers=tuple(read_text(manager).split()),
        own=own,
        own_writable=os.access(here, os.W_OK)
        and os.access(f"{here}/cgroup.subtree_control", os.W_OK),
        own_controllers=tuple(read_text(f"{here}/cgroup.controllers").split()),
    )


def on_namespace_network(if_inet6: str) -> bool:
    """Does the workspace have an address in fd00::/64, the network docker-up's namespace
    uses for IPv6 (slirp4netns 1.2 cannot move it)?"""
    net = socket.inet_pton(socket.AF_INET6, "fd00::")[:8]
    return any(
        socket.inet_pton(socket.AF_INET6, a)[:8] == net for a, _, _ in ipv6_addresses(if_inet6)
    )


def has_ipv6_loopback(if_inet6: str) -> bool:
    """/proc/net/if_inet6 lists ::1 on lo (absent: no IPv6 in the kernel, or disabled)."""
    return any(a == "::1" and dev == "lo" for a, _, dev in ipv6_addresses(if_inet6))


def has_default_route(route_table: str) -> bool:
    """/proc/net/route: a route whose destination and mask are 0.0.0.0."""
    return (0, 0) in routes(route_table)


# The engine's own programs: with --dockerd PATH they are taken from beside it first.
ENGINE_PROGRAMS = ("dockerd", "containerd", "docker-proxy", "runc")


def with_engine(f: HostFacts, dockerd: str | None = None) -> HostFacts:
    """The Docker Engine: the given dockerd (else the first on PATH), the containerd,
    docker-proxy and runc beside it (else on PATH), and what dockerd and containerd say of
    their versions (cached per binary: no process on a start)."""
    binaries = dict(f.binaries)
    path = f.search_path
    if dockerd:
        here = os.path.dirname(dockerd)
        path = ":".join([here, *(p for p in path.split(":") if p != here)])
        binaries.update({n: shutil.which(n, path=path) for n in ENGINE_PROGRAMS})
        binaries["dockerd"] = dockerd if os.access(dockerd, os.X_OK) else None
    cache = probes(f.env, f.home)

    def version(name: str) -> str:
        binary = binaries.get(name)
        return cache.output([binary, "--version"]) if binary else ""

    return replace(
        f,
        binaries=binaries,
        search_path=path,
        dockerd_version=version("dockerd"),
        containerd_version=version("containerd"),
    )


def with_accel(f: HostFacts) -> HostFacts:
    """What --net-accel needs (seccomp user notification, runc 1.1+), probed only when it
    may be used."""
    from dockerup.accel.support import has_netns_cookie, support_problems
    from dockerup.linux.libc import machine_problem

    runc = f.binaries.get("runc")
    version = probes(f.env, f.home).output([runc, "--version"]) if runc else ""
    actions = read_text("/proc/sys/kernel/seccomp/actions_avail")
    cookie = has_netns_cookie()
    problems = support_problems(actions, version, cookie, machine_problem())
    return replace(f, accel_problems=tuple(problems))
