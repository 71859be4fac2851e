"""slirp4netns: a user-space TCP/IP stack on a TAP device in the namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dockerup.errors import DockerUpError
from dockerup.net.addresses import (
    DNS,
    GATEWAY,
    GATEWAY6,
    GUEST_ADDR,
    GUEST_ADDR6,
    PREFIXLEN,
    PREFIXLEN6,
)

NAME = "slirp4netns"
TAP = "tap0"
# slirp4netns' fixed addresses in its default 10.0.2.0/24 network (pasta uses the same).
__all__ = [
    "DNS",
    "GATEWAY",
    "GATEWAY6",
    "GUEST_ADDR",
    "GUEST_ADDR6",
    "PREFIXLEN",
    "PREFIXLEN6",
    "TAP",
]


@dataclass(frozen=True)
class SlirpFeatures:
    """What the installed slirp4netns can do, read from its --help (as rootlesskit does):
    options it lacks are refused by name rather than failing at run time."""

    version: str
    sandbox: bool
    seccomp: bool
    api_socket: bool
    exit_fd: bool
    ready_fd: bool
    netns_type: bool
    disable_host_loopback: bool
    max_mtu: int
    ipv6: bool = False


def parse_features(help_text: str, version_text: str = "") -> SlirpFeatures:
    """What slirp4netns can do, from its --help; its version ("slirp4netns version 1.2.0")
    from --version (some builds end --help with it too)."""

    def has(flag: str) -> bool:
        return re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_text, re.M) is not None

    m = re.search(r"max=(\d+)", help_text)
    v = re.search(r"^slirp4netns version (\S+)", f"{version_text}\n{help_text}", re.M)
    return SlirpFeatures(
        version=v.group(1) if v else "unknown",
        sandbox=has("--enable-sandbox"),
        seccomp=has("--enable-seccomp"),
        api_socket=has("--api-socket"),
        exit_fd=has("--exit-fd"),
        ready_fd=has("--ready-fd"),
        netns_type=has("--netns-type"),
        disable_host_loopback=has("--disable-host-loopback"),
        max_mtu=int(m.group(1)) if m else 65520,
        ipv6=has("--enable-ipv6"),
    )


@dataclass(frozen=True)
class Slirp4netns:
    binary: str
    mtu: int
    allow_host_loopback: bool
    api_socket: Path | None
    sandbox: bool
    seccomp: bool
    ipv6: bool = False
    name: str = NAME
    ready_fifo: bool = False  # --ready-fd: an inherited pipe

    @property
    def options_used(self) -> tuple[str, ...]:
        used = []
        if self.sandbox:
            used.append("sandbox")
        if self.seccomp:
            used.append("seccomp")
        if self.api_socket:
            used.append("api-socket")
        if not self.allow_host_loopback:
            used.append("disable-host-loopback")
        if self.ipv6:
            used.append("ipv6")
        return tuple(used)

    def argv(self, target_pid: int | str, ready_fd: int | str, exit_fd: int | str) -> list[str]:
        argv = [self.binary, "--configure", f"--mtu={self.mtu}"]
        argv += [f"--ready-fd={ready_fd}", f"--exit-fd={exit_fd}"]
        if not self.allow_host_loopback:
            argv.append("--disable-host-loopback")
        if self.api_socket:
            argv.append(f"--api-socket={self.api_socket}")
        if self.sandbox:
            argv.append("--enable-sandbox")
        if self.seccomp:
            argv.append("--enable-seccomp")
        if self.ipv6:
            # libslirp answers on fd00::/64 (fd00::2 is the workspace's ::1 unless
            # --disable-host-loopback); the address and route are docker-up's to set.
            argv.append("--enable-ipv6")
        return [*argv, str(target_pid), TAP]

    def ipv6_commands(self, ip: str) -> list[list[str]]:
        """slirp4netns leaves IPv6 to router advertisements (SLAAC: a random address, a
        second later, and a route that expires once forwarding is on); a fixed address,
        without duplicate detection, is there at once and stays."""
        if not self.ipv6:
            return []
        return [
            [ip, "-6", "addr", "add", f"{GUEST_ADDR6}/{PREFIXLEN6}", "dev", TAP, "nodad"],
            [ip, "-6", "route", "add", "default", "via", GATEWAY6, "dev", TAP],
        ]


def configure(
    binary: str,
    features: SlirpFeatures,
    mtu: int,
    allow_host_loopback: bool,
    api_socket: Path,
    ipv6: bool = False,
) -> Slirp4netns:
    """Choose the options for this slirp4netns, refusing what it cannot do (pure)."""
    for needed, ok in (
        ("--ready-fd", features.ready_fd),
        ("--exit-fd", features.exit_fd),
        ("--disable-host-loopback", features.disable_host_loopback or allow_host_loopback),
        ("--enable-ipv6 (for --ipv6)", features.ipv6 or not ipv6),
    ):
        if not ok:
            raise DockerUpError(
                f"slirp4netns {features.version} lacks {needed}, which docker-up needs",
                hint="install slirp4netns 0.4.0 or newer (Debian: apt-get install slirp4netns)",
            )
    if mtu > features.max_mtu:
        raise DockerUpError(
            f"MTU {mtu} is above what slirp4netns {features.version} allows ({features.max_mtu})",
            hint=f"choose --mtu {features.max_mtu} or lower",
        )
    return Slirp4netns(
        binary=binary,
        mtu=mtu,
        allow_host_loopback=allow_host_loopback,
        api_socket=api_socket if features.api_socket else None,
        sandbox=features.sandbox,
        seccomp=features.seccomp,
        ipv6=ipv6,
    )
