"""The Docker Engine docker-up runs, and what docker-up does differently for each version.

Every difference between engines is decided here, once, from the versions that dockerd and
containerd print (pure: the versions come probed, from facts.with_engine). The planner asks
an Engine; nothing else compares version numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockerup.errors import DockerUpError

# The oldest dockerd docker-up runs: 20.10 is the first with --rootless without RootlessKit
# and with the userland-proxy-path docker-up's port proxy needs.
OLDEST = (20, 10)
# dockerd 28 registers its bridge driver with RootlessKit's API, and refuses to start in
# rootless mode without $ROOTLESSKIT_STATE_DIR (moby #48132): docker-up serves that API.
ROOTLESSKIT_API = (28, 0)
# From 27 on, ip6tables is no longer experimental: IPv6 needs no `experimental` any more.
IP6TABLES_STABLE = (27, 0)


def parse_version(text: str) -> tuple[int, ...] | None:
    """(28, 5, 2) from "Docker version 28.5.2+dfsg4, build ..." or "containerd
    github.com/containerd/containerd/v2 2.1.9+unknown"; None: no version in it."""
    m = re.search(r"(?:^|\s)v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def show(v: tuple[int, ...] | None) -> str:
    return ".".join(map(str, v)) if v else "unknown"


@dataclass(frozen=True)
class Engine:
    dockerd: tuple[int, ...] | None  # None: its --version said nothing we could read
    containerd: tuple[int, ...] | None

    @classmethod
    def probed(cls, dockerd_version: str, containerd_version: str) -> Engine:
        return cls(parse_version(dockerd_version), parse_version(containerd_version))

    def at_least(self, v: tuple[int, int]) -> bool:
        # An unreadable version is taken as new: the differences below are all for the new.
        return self.dockerd is None or self.dockerd[:2] >= v

    @property
    def rootlesskit_api(self) -> bool:
        """dockerd needs a RootlessKit API ($ROOTLESSKIT_STATE_DIR/api.sock)."""
        return self.at_least(ROOTLESSKIT_API)

    @property
    def ipv6_needs_experimental(self) -> bool:
        return not self.at_least(IP6TABLES_STABLE)

    @property
    def containerd_config_version(self) -> int:
        """containerd 2 reads configuration version 3 (and migrates older ones at every
        start, with a warning); 1.x reads version 2."""
        return 3 if self.containerd and self.containerd[0] >= 2 else 2

    def require_supported(self, dockerd: str) -> None:
        if self.dockerd is not None and self.dockerd[:2] < OLDEST:
            raise DockerUpError(
                f"{dockerd} is Docker Engine {show(self.dockerd)}; docker-up needs "
                f"{show(OLDEST)} or newer (rootless mode without RootlessKit)",
                hint="install a newer docker.io (Debian 12 has 20.10, Debian 13 26.1), or "
                "point docker-up at one: docker-up --dockerd /path/to/dockerd",
            )

    def differences(self) -> list[str]:
        """What docker-up does for this engine that it does not do for every engine (doctor
        and status say it)."""
        out = []
        if self.rootlesskit_api:
            out.append(
                "serves a RootlessKit API for dockerd's published ports ($ROOTLESSKIT_STATE_DIR)"
            )
        if self.ipv6_needs_experimental:
            out.append("turns on `experimental` for IPv6 (ip6tables)")
        out.append(f"containerd configuration version {self.containerd_config_version}")
        return out

    def describe(self) -> str:
        return f"dockerd {show(self.dockerd)}, containerd {show(self.containerd)}"
