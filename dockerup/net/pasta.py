"""pasta (from passt): a user-space network helper that, unlike slirp4netns, maps guest
TCP streams onto host sockets instead of running a whole TCP/IP stack.

Debian 12's pasta (passt 2023-03) differs from today's: no --ready-fd, no --exit-fd, no
version in --version. What it has instead:
- `-P FILE` writes its PID once the namespace is configured. Pointing it at a named pipe
  that docker-up reads turns that into a ready fd (Debian 13's pasta closes inherited
  fds, so /proc/self/fd/N of an inherited pipe no longer does).
- It needs an interface with a default route in the workspace, even when it is given
  every address explicitly ("External interface not usable" otherwise).
- It has no way to notice that docker-up died (it watches no exit pipe). The launcher
  (namespace/netstart.py) gives it a parent-death signal, checked: SIGTERM when the process
  that started it (docker-up, later the keeper, the same PID) is gone, even if it was gone
  before the signal was set (`setpriv --pdeathsig` did this before, unchecked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dockerup import proc
from dockerup.errors import DockerUpError
from dockerup.host.probecache import probes
from dockerup.net import slirp4netns

if TYPE_CHECKING:
    from dockerup.host.facts import HostFacts

NAME = "pasta"

# The same addresses as slirp4netns, so the namespace looks the same to everything
# above it (resolv.conf, the verifier, the host-loopback rule on 10.0.2.2).
TAP = slirp4netns.TAP
GUEST_ADDR = slirp4netns.GUEST_ADDR
GATEWAY = slirp4netns.GATEWAY
DNS = slirp4netns.DNS
PREFIXLEN = slirp4netns.PREFIXLEN
GUEST_ADDR6 = slirp4netns.GUEST_ADDR6
GATEWAY6 = slirp4netns.GATEWAY6
MAX_MTU = 65520

# Options docker-up cannot do without, and what each is for (for the refusal message).
NEEDED = {
    "--config-net": "configuring the interface in the namespace",
    "--pid": "telling docker-up when the namespace is wired",
    "--no-map-gw": "keeping the workspace's loopback unreachable",
    "--ns-ifname": "naming the interface tap0",
    "--address": "a fixed address in the namespace",
    "--gateway": "a fixed gateway in the namespace",
    "--mtu": "the MTU",
    "--tcp-ports": "switching its own port forwarding off",
}


@dataclass(frozen=True)
class PastaFeatures:
    version: str
    options: frozenset[str]
    dns_forward: bool
    ipv4_only: bool

    def lacks(self) -> list[str]:
        return [o for o in NEEDED if o not in self.options]


def parse_features(help_text: str, version_text: str) -> PastaFeatures:
    options = frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", help_text))
    return PastaFeatures(
        version=parse_version(version_text),
        options=options,
        dns_forward="--dns-forward" in options,
        ipv4_only="--ipv4-only" in options,
    )


def parse_version(text: str) -> str:
    """`pasta --version` says "pasta unknown version" on Debian 12; the caller may append
    the package's version ("passt 0.0~git20230309.7c7625d-1") so errors can name it."""
    lines = [ln for ln in text.splitlines() if ln.strip() and "syslog" not in ln]
    m = re.search(r"pasta\s+(\S+)", lines[0]) if lines else None
    version = m.group(1) if m and m.group(1) != "unknown" else ""
    pkg = re.search(r"^passt (\S+)$", text, re.M)
    if pkg:
        version = (
            f"{version} (passt {pkg.group(1)})".strip() if version else f"passt {pkg.group(1)}"
        )
    return version or "of unknown version"


@dataclass(frozen=True)
class Pasta:
    binary: str
    mtu: int
    allow_host_loopback: bool
    dns_forward: bool
    ipv4_only: bool
    ipv6: bool = False
    name: str = NAME
    # Its PID file: a named pipe in the runtime dir. /proc/self/fd/N of an inherited pipe
    # served Debian 12's pasta; Debian 13's closes inherited fds first ("Couldn't open PID
    # file /proc/self/fd/10"). Both open the pipe by name before they isolate themselves.
    ready_fifo: bool = True

    @property
    def options_used(self) -> tuple[str, ...]:
        used = []
        if self.dns_forward:
            used.append("dns-forward")
        if not self.allow_host_loopback:
            used.append("no-map-gw")
        if self.ipv6:
            used.append("ipv6")
        return tuple(used)

    def argv(self, target_pid: int | str, ready_fd: int | str, exit_fd: int | str) -> list[str]:
        # exit_fd is unused: pasta cannot watch one; the parent-death signal stands in.
        argv = [self.binary, "--foreground", "--stderr", "--quiet", "--config-net"]
        argv += [f"--pid={ready_fd}"]  # the named pipe (ready_fifo)
        # Its own port forwarding stays off: docker-up's forwarders publish ports, and a
        # splice path from the namespace's loopback to the workspace's would bypass the
        # host-loopback rule.
        argv += ["--tcp-ports=none", "--udp-ports=none", "--tcp-ns=none", "--udp-ns=none"]
        argv += [f"--ns-ifname={TAP}", f"--mtu={self.mtu}"]
        argv += [f"--address={GUEST_ADDR}", f"--netmask={PREFIXLEN}", f"--gateway={GATEWAY}"]
        if self.dns_forward:
            argv.append(f"--dns-forward={DNS}")
        if self.ipv6:
            # The same addresses as with slirp4netns; pasta sets them and the route itself.
            argv += [f"--address={GUEST_ADDR6}", f"--gateway={GATEWAY6}"]
        elif self.ipv4_only:
            argv.append("--ipv4-only")
        if not self.allow_host_loopback:
            # pasta maps the gateway to the workspace's loopback unless told not to.
            argv.append("--no-map-gw")
        return [*argv, str(target_pid)]

    def ipv6_commands(self, ip: str) -> list[list[str]]:
        return []  # --config-net sets the IPv6 address and route too


def probe(f: HostFacts) -> HostFacts:
    """pasta's --help and version, probed only when it is chosen (it costs ~10 ms).
    Debian's pasta prints "unknown version", so the package's version is added."""
    pasta = f.binaries.get("pasta")
    if not pasta or f.pasta_help:
        return f
    cache = probes(f.env, f.home)
    # With a terminal: Debian 13's pasta loses what it prints into a pipe (proc.tty_output).
    version = cache.output([pasta, "--version"], tty=True)
    if "unknown version" in version:
        pkg = proc.output(["dpkg-query", "-W", "-f", "${Version}", "passt"]).strip()
        if pkg and " " not in pkg:
            version += f"\npasst {pkg}\n"
    return replace(f, pasta_help=cache.output([pasta, "--help"], tty=True), pasta_version=version)


def require_usable(facts: HostFacts) -> PastaFeatures:
    """What pasta needs of the workspace and of itself (doctor's net.pasta check too)."""
    features = parse_features(facts.pasta_help, facts.pasta_version)
    require_features(features)
    if not facts.default_route:
        raise DockerUpError(
            "pasta needs a network interface with a default route in the workspace, "
            "and this network namespace has none",
            hint="use --net slirp4netns, which needs none",
        )
    return features


def require_features(features: PastaFeatures) -> None:
    lacks = features.lacks()
    if lacks:
        raise DockerUpError(
            f"pasta ({features.version}) lacks {', '.join(lacks)}, which docker-up needs for "
            + "; ".join(NEEDED[o] for o in lacks),
            hint="install passt from Debian 12 or newer, or use --net slirp4netns",
        )


def configure(
    binary: str,
    features: PastaFeatures,
    mtu: int,
    allow_host_loopback: bool,
    makes_userns: bool = True,
    ipv6: bool = False,
) -> Pasta:
    """Choose pasta's options, refusing what this pasta cannot do (pure)."""
    if not makes_userns:
        # pasta drops its capabilities before it opens /proc/PID/ns/*; the kernel then
        # refuses it a root-owned process with more capabilities than it has left (ptrace
        # access rules). Rootless, pasta owns the namespace's user namespace and may.
        raise DockerUpError(
            "pasta cannot attach to docker-up's namespace when docker-up runs as root "
            "(privileged or userns-root mode): it drops its capabilities first, and then "
            "may not open a root process's namespaces (\"Couldn't open user namespace\")",
            hint="use --net slirp4netns as root, or run docker-up as a normal user",
        )
    require_features(features)
    if mtu > MAX_MTU:
        raise DockerUpError(
            f"MTU {mtu} is above what pasta ({features.version}) allows ({MAX_MTU})",
            hint=f"choose --mtu {MAX_MTU} or lower",
        )
    return Pasta(
        binary=binary,
        mtu=mtu,
        allow_host_loopback=allow_host_loopback,
        dns_forward=features.dns_forward,
        ipv4_only=features.ipv4_only,
        ipv6=ipv6,
    )
