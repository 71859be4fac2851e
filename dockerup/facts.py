"""Probe the host once into HostFacts. Everything after this is a pure function of them."""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import socket
import struct
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from dockerup import proc
from dockerup.net import routes

# Debian's PATH for a normal user lacks the sbin directories, where dockerd and runc live.
EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Program -> the Debian package that provides it (for the error a user sees).
PACKAGES: dict[str, str] = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "runc": "runc",
    "slirp4netns": "slirp4netns",
    "newuidmap": "uidmap",
    "newgidmap": "uidmap",
    "iptables": "iptables",
    "docker-proxy": "docker.io",
    "pasta": "passt",
    "setpriv": "util-linux",
}
# Always needed; slirp4netns only with its driver (see plan.missing_programs).
REQUIRED = tuple(p for p in PACKAGES if p not in ("pasta", "setpriv"))
OPTIONAL = ("fuse-overlayfs", "docker", "pasta", "setpriv")


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
    pasta_help: str = ""  # probed only when pasta is chosen (see with_pasta)
    pasta_version: str = ""
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    initial_userns: bool = False  # /proc/self/uid_map is the identity map of the host
    max_gid: int = 65535  # the highest gid our user namespace maps
    net_admin: bool = False  # CAP_NET_ADMIN over the network namespace we are in
    default_route: bool = True  # an IPv4 default route in our network namespace (pasta)
    accel_problems: tuple[str, ...] = ()  # why --net-accel cannot work (see with_accel)


def search_path(env_path: str) -> str:
    parts = [p for p in env_path.split(":") if p]
    parts += [p for p in EXTRA_PATH if p not in parts]
    return ":".join(parts)


def parse_subid(text: str, user: str, uid: int) -> tuple[IdRange, ...]:
    """Ranges in /etc/subuid or /etc/subgid format ("name:start:count") for this user,
    matched by name or by numeric uid, as newuidmap does."""
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            ranges.append(IdRange(int(fields[1]), int(fields[2])))
        except ValueError:
            continue
    return tuple(ranges)


def probe_tun(path: str = "/dev/net/tun") -> TunAccess:
    if not os.path.exists(path):
        return TunAccess(exists=False, openable=False, error="missing")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        return TunAccess(exists=True, openable=False, error=e.strerror or str(e))
    os.close(fd)
    return TunAccess(exists=True, openable=True)


def max_mapped_id(id_map: str) -> int:
    """The highest id that a /proc/PID/[ug]id_map maps ("inside outside count" lines)."""
    tops = []
    for line in id_map.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            tops.append(int(fields[0]) + int(fields[2]) - 1)
    return max(tops, default=0)


def is_initial_userns(uid_map: str) -> bool:
    return uid_map.split() == ["0", "0", "4294967295"]


def probe_net_admin() -> bool:
    """Do we hold CAP_NET_ADMIN over our network namespace? Set lo's flags to what they
    already are: the kernel checks the capability first, and nothing changes either way."""
    siocgifflags, siocsifflags = 0x8913, 0x8914
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sH14x", b"lo", 0)
            flags = fcntl.ioctl(s, siocgifflags, req)
            fcntl.ioctl(s, siocsifflags, flags)
    except OSError:
        return False
    return True


def read_text(path: str) -> str:
    """A small system file, or "" when it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def probe(env: dict[str, str] | None = None) -> HostFacts:
    env = dict(os.environ if env is None else env)
    uid, gid = os.getuid(), os.getgid()
    try:
        pw = pwd.getpwuid(uid)
        user, home = pw.pw_name, env.get("HOME") or pw.pw_dir
    except KeyError:
        user, home = str(uid), env.get("HOME", "/")
    path = search_path(env.get("PATH", "/usr/bin:/bin"))
    binaries = {name: shutil.which(name, path=path) for name in REQUIRED + OPTIONAL}
    slirp = binaries.get("slirp4netns")
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
        slirp_help=proc.output([slirp, "--help"]) if slirp else "",
        env=env,
        initial_userns=is_initial_userns(read_text("/proc/self/uid_map")),
        net_admin=probe_net_admin(),
        max_gid=max_mapped_id(read_text("/proc/self/gid_map")),
        default_route=has_default_route(read_text("/proc/net/route")),
    )


def has_default_route(route_table: str) -> bool:
    """/proc/net/route: a route whose destination and mask are 0.0.0.0."""
    return (0, 0) in routes(route_table)


def with_accel(f: HostFacts) -> HostFacts:
    """What --net-accel needs (seccomp user notification, runc 1.1+), probed only when it
    may be used."""
    from dockerup.accel import has_netns_cookie, support_problems

    runc = f.binaries.get("runc")
    version = proc.output([runc, "--version"]) if runc else ""
    actions = read_text("/proc/sys/kernel/seccomp/actions_avail")
    cookie = has_netns_cookie()
    return replace(f, accel_problems=tuple(support_problems(actions, version, cookie)))


def with_pasta(f: HostFacts) -> HostFacts:
    """pasta's --help and version, probed only when it is chosen (it costs ~10 ms).
    Debian's pasta prints "unknown version", so the package's version is added."""
    pasta = f.binaries.get("pasta")
    if not pasta or f.pasta_help:
        return f
    version = proc.output([pasta, "--version"])
    if "unknown version" in version:
        pkg = proc.output(["dpkg-query", "-W", "-f", "${Version}", "passt"]).strip()
        if pkg and " " not in pkg:
            version += f"\npasst {pkg}\n"
    return replace(f, pasta_help=proc.output([pasta, "--help"]), pasta_version=version)
