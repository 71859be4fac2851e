"""The rules a start must pass, each raising DockerUpError with its fix (pure, from facts and
settings): build.py applies them, doctor reuses them as checks."""

from __future__ import annotations

from dockerup.errors import DockerUpError
from dockerup.host.facts import PACKAGES, REQUIRED, HostFacts, IdRange, usable_ranges
from dockerup.net.kinds import kind_of
from dockerup.plan.idmap import KEEP_ID
from dockerup.ports.tables import FORWARDERS
from dockerup.settings.config import Config
from dockerup.settings.modes import Mode
from dockerup.settings.paths import UNIX_SOCKET_MAX, Paths


def missing_programs(facts: HostFacts, mode: Mode, net: str | None) -> list[str]:
    """net: the network driver, None for the host's network."""
    needed = [n for n in REQUIRED if mode.needs_userns() or n not in ("newuidmap", "newgidmap")]
    if net is not None:
        needed += kind_of(net).programs
    return [name for name in needed if not facts.binaries.get(name)]


def require_programs(facts: HostFacts, mode: Mode, net: str | None) -> dict[str, str]:
    missing = missing_programs(facts, mode, net)
    if missing:
        pkgs = sorted({PACKAGES[m] for m in missing})
        names = ", ".join(missing)
        raise DockerUpError(
            f"{names} not found (looked in {facts.search_path})",
            hint=f"install it: sudo apt-get install {' '.join(pkgs)}",
        )
    return {k: v for k, v in facts.binaries.items() if v}


def require_dockerd(config: Config, facts: HostFacts) -> None:
    """--dockerd names a file that must be there to run (with_engine found it or not)."""
    if config.dockerd and not facts.binaries.get("dockerd"):
        raise DockerUpError(
            f"dockerd {config.dockerd} is not an executable file",
            hint="name a dockerd binary (e.g. one that scripts/engines fetched), or drop "
            "--dockerd (and DOCKER_UP_DOCKERD, dockerd in config.toml) to use the first on PATH",
        )


def require_range(ranges: tuple[IdRange, ...], file: str, facts: HostFacts) -> tuple[IdRange, ...]:
    """The user's subordinate ranges that this namespace can hand on (usable_ranges)."""
    if not ranges:
        raise DockerUpError(
            f"no subordinate ids for {facts.user} in {file}",
            # One command for both files: the subuid and subgid checks give the same fix.
            hint=f"as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
            f"{facts.user}",
        )
    uid = file.endswith("subuid")
    mapped = facts.uid_map if uid else facts.gid_map
    usable = usable_ranges(ranges, mapped, facts.uid if uid else facts.gid)
    if not usable:
        top = max(r.start + r.count for r in mapped) - 1
        raise DockerUpError(
            f"{file}: {facts.user}'s subordinate ids are outside the ids this user namespace "
            f"has (0-{top}, as in a pod with hostUsers: false)",
            hint=f"give {facts.user} ranges inside them in {file}, around its own id: e.g. "
            f"{facts.user}:1:{(facts.uid if uid else facts.gid) - 1} (README: Kubernetes)",
        )
    return usable


def require_tun(facts: HostFacts) -> None:
    if not facts.tun.exists:
        raise DockerUpError(
            "/dev/net/tun is missing: the network helper needs it for the tap device",
            hint="as root: mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && "
            "chmod 0666 /dev/net/tun (in a container: run it with --device /dev/net/tun)",
        )
    if not facts.tun.openable:
        raise DockerUpError(
            # Short enough for one line each in doctor at 80 columns (issue 28). Harmless:
            # opening it grants nothing by itself, a tap device needs CAP_NET_ADMIN.
            f"/dev/net/tun cannot be opened: {facts.tun.error}",
            hint="as root: chmod 0666 /dev/net/tun (harmless: tap needs CAP_NET_ADMIN)",
        )


def require_own_runtime(paths: Paths, foreign: bool) -> None:
    """foreign: the runtime directory exists and is someone else's, or a link. The /tmp
    fallback can be made by anyone first, who would then receive the Docker API traffic."""
    if foreign:
        raise DockerUpError(
            f"{paths.runtime} is not a directory owned by you: another user may have made it",
            hint="do not use it; remove it as root, or set XDG_RUNTIME_DIR to a directory of "
            "your own",
        )


def require_userns_setting(userns: str, mode: Mode) -> None:
    if userns == KEEP_ID and not mode.needs_userns():
        raise DockerUpError(
            f"userns = keep-id maps the ids of the user namespace docker-up makes (mode {mode} "
            "makes none)",
            hint="drop the userns setting (DOCKER_UP_USERNS, --userns), or use mode rootless",
        )


def require_socket_path(paths: Paths) -> None:
    if len(str(paths.socket)) > UNIX_SOCKET_MAX:
        raise DockerUpError(
            f"socket path {paths.socket} is longer than {UNIX_SOCKET_MAX} bytes",
            hint="set XDG_RUNTIME_DIR to a shorter directory",
        )


def resolve_accel(config: Config, facts: HostFacts) -> bool:
    """--net-accel: on, off, or (None) on wherever it can work, host loopback allowed or
    not: connections leaving the namespace then cross the workspace's kernel instead of
    the helper (0.3x -> about 1x of the workspace's own speed, docs/performance.md). With
    host loopback closed the agent refuses what the helper would keep out
    (accel/policy.py's decide): 10.0.2.2 stays with the helper, which refuses it, and the
    workspace's own addresses."""
    if config.net_accel is None:
        return not config.host_network and not facts.accel_problems
    if not config.net_accel:
        return False
    if config.host_network:
        raise DockerUpError(
            "--net-accel needs docker-up's own network namespace",
            hint="drop --host-network or --net-accel",
        )
    if facts.accel_problems:
        raise DockerUpError(
            f"--net-accel cannot work here: {'; '.join(facts.accel_problems)}",
            hint="drop --net-accel (`docker-up doctor` checks it)",
        )
    return True


def resolve_daemon_accel(config: Config, facts: HostFacts) -> bool:
    """--daemon-net-accel: on, off, or (None) on wherever the agent can work, host
    loopback allowed or not, as containers' (resolve_accel): its win is the registries out
    there, and 10.0.2.2 stays as closed as without it."""
    if config.daemon_net_accel is False:
        return False
    problem = (
        "it needs docker-up's own network namespace"
        if config.host_network
        else "; ".join(facts.accel_problems)
    )
    if not problem:
        return True
    if config.daemon_net_accel:
        raise DockerUpError(
            f"--daemon-net-accel cannot work here: {problem}",
            hint="drop --daemon-net-accel (`docker-up doctor` checks it)",
        )
    return False


def require_forwarder(config: Config) -> None:
    if config.port_forwarder not in FORWARDERS:
        raise DockerUpError(
            f"unknown port forwarder {config.port_forwarder!r}",
            hint=f"choose one of: {', '.join(FORWARDERS)}",
        )
    if config.port_forwarder == "slirp" and (
        config.host_network or not kind_of(config.net).api_port_forwarder
    ):
        raise DockerUpError(
            "the slirp port forwarder needs the slirp4netns network driver "
            f"(here: {'the host network' if config.host_network else config.net})",
            hint="use --port-forwarder splice, which works with every driver",
        )
