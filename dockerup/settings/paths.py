"""Every path docker-up uses, derived once from the environment (pure)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# sun_path is 108 bytes on Linux, including the terminating NUL.
UNIX_SOCKET_MAX = 107


@dataclass(frozen=True)
class Paths:
    runtime: Path  # sockets, pid files, generated config: gone at reboot
    data: Path  # data-root and anything that must persist
    config: Path  # the user's own settings
    runtime_from_xdg: bool
    data_root_override: Path | None = None  # the data-root setting

    @property
    def socket(self) -> Path:
        return self.runtime / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def exec_root(self) -> Path:
        return self.runtime / "exec"

    @property
    def client_address_marker(self) -> Path:
        """Made by the namespace child once replies to transparent sockets route back."""
        return self.bin_dir / "client-address"

    @property
    def containerd_dir(self) -> Path:
        return self.exec_root / "containerd"

    @property
    def containerd_pidfile(self) -> Path:
        """Where the containerd of this start says it runs (docker-up starts it)."""
        return self.containerd_dir / "containerd.pid"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "containerd.toml"

    @property
    def pidfile(self) -> Path:
        return self.runtime / "dockerd.pid"

    @property
    def daemon_json(self) -> Path:
        return self.runtime / "daemon.json"

    @property
    def slirp_api(self) -> Path:
        return self.runtime / "slirp4netns.sock"

    @property
    def main_pid(self) -> Path:
        """docker-up's own PID (holder, starter or keeper: one process, exec'd through)."""
        return self.runtime / "docker-up.pid"

    @property
    def net_ready(self) -> Path:
        """The named pipe a helper that keeps no inherited fd reports readiness on (pasta)."""
        return self.runtime / "net-ready"

    @property
    def ports_sock(self) -> Path:
        return self.runtime / "ports.sock"

    @property
    def auto_ports_table(self) -> Path:
        """What the keeper auto-exposes and refuses (autoports/scanner.py), as JSON."""
        return self.runtime / "auto-ports.json"

    @property
    def published_ports_table(self) -> Path:
        """The ports the keeper publishes for dockerd (ports/manager.py), as JSON."""
        return self.runtime / "published-ports.json"

    @property
    def rootlesskit_dir(self) -> Path:
        """$ROOTLESSKIT_STATE_DIR for dockerd 28 and later (dockerup/ports/rlkapi.py)."""
        return self.runtime / "rootlesskit"

    @property
    def rootlesskit_api(self) -> Path:
        return self.rootlesskit_dir / "api.sock"

    @property
    def proxy_script(self) -> Path:
        return self.bin_dir / "docker-up-proxy"

    @property
    def accel_sock(self) -> Path:
        return self.runtime / "accel.sock"

    @property
    def runtime_script(self) -> Path:
        return self.bin_dir / "docker-up-runtime"

    @property
    def views(self) -> Path:
        """Dev containers' views of the workspace's folders, one directory a container
        (dockerup/views): mounted in docker-up's mount namespace only."""
        return self.runtime / "views"

    @property
    def lock(self) -> Path:
        return self.runtime / "lock"

    @property
    def state_file(self) -> Path:
        return self.runtime / "state.json"

    @property
    def bin_dir(self) -> Path:
        # Put first on dockerd's PATH: it selects the iptables backend that works.
        return self.runtime / "bin"

    @property
    def log_dir(self) -> Path:
        return self.runtime / "logs"

    def log(self, name: str) -> Path:
        """A program's log: docker-up, dockerd, slirp4netns, pasta, ... (`docker-up logs`)."""
        return self.log_dir / f"{name}.log"

    @property
    def data_root(self) -> Path:
        return self.data_root_override or self.data / "docker"

    @property
    def copyup(self) -> Path:
        # Where the real /etc and /run stay reachable inside the mount namespace. Not under
        # /run, because /run itself gets covered by a tmpfs there.
        return self.data / "copyup"

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"


def system_paths() -> Paths:
    """Real root (privileged mode) keeps its state where system daemons do."""
    return Paths(
        runtime=Path("/run/docker-up"),
        data=Path("/var/lib/docker-up"),
        config=Path("/etc/docker-up"),
        runtime_from_xdg=False,
    )


def resolve_paths(env: Mapping[str, str], uid: int, home: str) -> Paths:
    """XDG locations, with a per-user /tmp fallback where no XDG_RUNTIME_DIR exists
    (no systemd, so no /run/user/UID)."""
    xdg_runtime = env.get("XDG_RUNTIME_DIR", "")
    if xdg_runtime and os.path.isabs(xdg_runtime):
        runtime = Path(xdg_runtime) / "docker-up"
        from_xdg = True
    else:
        runtime = Path(f"/tmp/docker-up-{uid}")
        from_xdg = False
    data_home = env.get("XDG_DATA_HOME") or f"{home}/.local/share"
    config_home = env.get("XDG_CONFIG_HOME") or f"{home}/.config"
    return Paths(
        runtime=runtime,
        data=Path(data_home) / "docker-up",
        config=Path(config_home) / "docker-up",
        runtime_from_xdg=from_xdg,
    )
