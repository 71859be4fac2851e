"""From host facts and config to a Plan: data a test can compare, and `up --dry-run` prints."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from dockerup import context, daemon
from dockerup.cgroups import UNDECIDED, Cgroups, decide
from dockerup.config import Config, Storage
from dockerup.engine import Engine
from dockerup.errors import DockerUpError
from dockerup.facts import PACKAGES, REQUIRED, HostFacts, IdRange, usable_ranges
from dockerup.idmap import KEEP_ID, IdMap, describe, id_maps
from dockerup.ipv6 import IPV6_SYSCTLS, ipv6_commands, resolve_ipv6
from dockerup.modes import Mode, resolve_mode
from dockerup.net import NetworkDriver, slirp4netns
from dockerup.net.kinds import kind_of
from dockerup.paths import UNIX_SOCKET_MAX, Paths, resolve_paths, system_paths
from dockerup.programs import script
from dockerup.programs.common import (
    DNS,
    FORWARDERS,
    GATEWAY,
    GATEWAY6,
    GUEST_ADDR,
    GUEST_ADDR6,
    IPTABLES_BACKENDS,
    PREFIXLEN,
    PREFIXLEN6,
)
from dockerup.programs.specs import ApiInfo, ChildSpec, Command, NetCheck


def sysctls(gids: int, config: Config, ipv6: bool = False) -> dict[str, str]:
    # dockerd's own namespace (--network host containers, dockerd's own traffic) gets the
    # containers' defaults too.
    defaults = {k.replace(".", "/"): v for k, v in daemon.container_sysctls(config).items()}
    return (
        defaults
        | {
            "net/ipv4/ip_forward": "1",
            # Let every mapped group ping (the workspace default is "1 0": nobody). The kernel
            # refuses gids outside the namespace's map, so the range ends where the map does.
            "net/ipv4/ping_group_range": f"0 {gids}",
            # Containers may bind low ports inside the namespace.
            "net/ipv4/ip_unprivileged_port_start": "0",
        }
        | (IPV6_SYSCTLS if ipv6 else {})
    )


@dataclass(frozen=True)
class WriteFile:
    """A file the executor writes (only when its content differs: nothing is rewritten for
    nothing). optional: a convenience whose failure must not stop the start."""

    path: Path
    content: str
    mode: int = 0o600
    optional: bool = False


@dataclass(frozen=True)
class Plan:
    paths: Paths
    config: Config
    mode: Mode
    mode_reason: str
    net: NetworkDriver | None  # None: dockerd shares the current network namespace
    uidmap: IdMap | None  # None: no new user namespace (we are root in one already)
    gidmap: IdMap | None
    python: str  # the interpreter that runs the lean programs (under -S)
    child: ChildSpec
    dockerd_argv: tuple[str, ...]
    dockerd_env: dict[str, str] = field(default_factory=dict)
    dirs: tuple[Path, ...] = ()
    # Written before dockerd starts: the runtime and proxy scripts dockerd is pointed at.
    files: tuple[WriteFile, ...] = ()
    # Written once dockerd runs: the docker CLI context naming the socket.
    context_file: WriteFile | None = None
    # daemon.json for each storage driver the child may find working (it probes them).
    daemon_json: dict[str, str] = field(default_factory=dict)
    accel: bool = False  # --net-accel, resolved
    ipv6: bool = False  # --ipv6, resolved
    daemon_accel: bool = False  # --daemon-net-accel, resolved
    engine: Engine = daemon.DEFAULT_ENGINE  # what dockerd and containerd say they are
    # dockerd 28+: what docker-up's RootlessKit API says (child_pid filled in at the start).
    rlk_info: ApiInfo | None = None
    # The cgroup driver dockerd gets, why, and which limits apply (cgroups.decide).
    cgroups: Cgroups = UNDECIDED

    @property
    def agent(self) -> bool:
        """The acceleration agent runs: for containers, for dockerd, or both."""
        return self.accel or self.daemon_accel

    ipv6_reason: str = ""

    @property
    def data_mode(self) -> int:
        """docker-up's data directory is closed to others, except for passing through when
        dockerd remaps container root to another user (--userns-remap, real root only):
        that user must reach the data-root below (dockerd refuses to start otherwise)."""
        return 0o711 if self.config.gives_dockerd("--userns-remap") else 0o700

    @property
    def child_argv(self) -> tuple[str, ...]:
        # -S: no site-packages. The child is stdlib-only and starts in a few milliseconds.
        return (self.python, "-S", script("child"))

    def program_argv(self, name: str, spec_json: str) -> list[str]:
        return [self.python, "-S", script(name), spec_json]

    @property
    def net_name(self) -> str:
        return self.net.name if self.net else "host"

    @property
    def userns(self) -> str:
        """The id map in one line (status): "" without a user namespace of docker-up's."""
        return describe(self.config.userns, self.uidmap.outer_id) if self.uidmap else ""


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


def require_socket_path(paths: Paths) -> None:
    if len(str(paths.socket)) > UNIX_SOCKET_MAX:
        raise DockerUpError(
            f"socket path {paths.socket} is longer than {UNIX_SOCKET_MAX} bytes",
            hint="set XDG_RUNTIME_DIR to a shorter directory",
        )


def network_driver(
    config: Config,
    facts: HostFacts,
    bins: dict[str, str],
    paths: Paths,
    mode: Mode,
    ipv6: bool = False,
) -> NetworkDriver:
    require_tun(facts)
    return kind_of(config.net).configure(config, facts, bins, paths, mode, ipv6)


def resolve_accel(config: Config, facts: HostFacts) -> bool:
    """--net-accel: on, off, or (None) on wherever it can work, host loopback allowed or
    not: connections leaving the namespace then cross the workspace's kernel instead of
    the helper (0.3x -> about 1x of the workspace's own speed, docs/performance.md). With
    host loopback closed the agent refuses what the helper would keep out
    (accel_policy.decide): 10.0.2.2 stays with the helper, which refuses it, and the
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


def storage_candidates(config: Config) -> list[str]:
    if config.storage is Storage.auto:
        return [Storage.overlay2.value, Storage.fuse_overlayfs.value, Storage.vfs.value]
    return [config.storage.value]


def paths_for(mode: Mode, facts: HostFacts, config: Config | None = None) -> Paths:
    """Every path of a docker-up in this mode, with the configuration's own (data-root).
    The one answer that up, status, stop, logs, exec and doctor all use."""
    paths = (
        system_paths()
        if mode is Mode.privileged
        else resolve_paths(facts.env, facts.uid, facts.home)
    )
    return configured(paths, config) if config is not None else paths


def configured(paths: Paths, config: Config) -> Paths:
    """The paths with the configuration's own (data-root), whoever computed them."""
    if config.data_root:
        return replace(paths, data_root_override=Path(config.data_root))
    if config.userns == KEEP_ID:  # image files' owners differ between the two maps
        return replace(paths, data_root_override=paths.data / KEEP_ID_DATA_ROOT)
    return paths


KEEP_ID_DATA_ROOT = "docker-keep-id"


def require_userns_setting(config: Config, mode: Mode) -> None:
    if config.userns == KEEP_ID and not mode.needs_userns():
        raise DockerUpError(
            f"userns = keep-id maps the ids of the user namespace docker-up makes (mode {mode} "
            "makes none)",
            hint="drop the userns setting (DOCKER_UP_USERNS, --userns), or use mode rootless",
        )


def resolve_mode_of(config: Config, facts: HostFacts) -> tuple[Mode, str]:
    """The mode, and why: from the configuration (auto, or what it asks for) and the host."""
    return resolve_mode(facts.uid, facts.initial_userns, facts.net_admin, config.mode)


def build_plan(config: Config, facts: HostFacts, paths: Paths | None = None) -> Plan:
    """Pure: raises DockerUpError for anything that cannot work on this host."""
    mode, reason = resolve_mode_of(config, facts)
    if config.host_network and mode is not Mode.privileged:
        raise DockerUpError(
            f"--host-network needs privileged mode (here: {mode})",
            hint="without real root, dockerd needs its own network namespace: drop the option",
        )
    paths = configured(paths or paths_for(mode, facts), config)
    require_dockerd(config, facts)
    bins = require_programs(facts, mode, None if config.host_network else config.net)
    uidmap = gidmap = None
    # ping_group_range may only name gids the namespace maps: ours, or the new one's.
    gids = min(facts.max_gid, 2147483647)
    require_userns_setting(config, mode)
    if mode.needs_userns():
        subuid = require_range(facts.subuid, "/etc/subuid", facts)
        subgid = require_range(facts.subgid, "/etc/subgid", facts)
        bin_pair = (bins["newuidmap"], bins["newgidmap"])
        uidmap, gidmap = id_maps(config.userns, bin_pair, (facts.uid, facts.gid), (subuid, subgid))
        gids = gidmap.count - 1
    ipv6, ipv6_reason = resolve_ipv6(config, facts, bins)
    net = None if config.host_network else network_driver(config, facts, bins, paths, mode, ipv6)
    require_socket_path(paths)
    require_forwarder(config)
    accel = resolve_accel(config, facts)
    daemon_accel = resolve_daemon_accel(config, facts)
    daemon.tcp_listener(config)  # refuses a plain TCP listener before anything starts
    engine = Engine.probed(facts.dockerd_version, facts.containerd_version)
    engine.require_supported(bins["dockerd"])
    rootless = mode.dockerd_rootless()
    argv = daemon.dockerd_argv(bins["dockerd"], paths, rootless=rootless)
    argv += config.dockerd_args
    keep_id = uidmap is not None and config.userns == KEEP_ID
    if keep_id:  # dockerd, root inside, is a subordinate id: the socket's group is the user's
        argv.append(f"--group={facts.gid}")
    # Without a network namespace of its own dockerd is not rootless (privileged mode).
    rlk = (
        daemon.rootlesskit_info(config, paths, net)
        if engine.rootlesskit_api and rootless and net
        else None
    )
    cg = decide(facts.cgroups, mode, facts.uid, bins.get("busctl"))
    env = daemon.dockerd_env(facts.env, paths, facts.search_path, facts.home, rlk is not None)
    env |= cg.env
    own = net is not None
    return Plan(
        paths=paths,
        config=config,
        mode=mode,
        mode_reason=reason,
        net=net,
        uidmap=uidmap,
        gidmap=gidmap,
        python=facts.python,
        child=replace(
            child_spec(config, mode, paths, bins, gids, argv, env, net),
            watch_connects=str(paths.accel_sock) if daemon_accel else None,
            become_root=keep_id,
        ),
        dockerd_argv=tuple(argv),
        dockerd_env=env,
        dirs=(paths.runtime, paths.log_dir, paths.bin_dir, paths.data, paths.copyup),
        files=(
            WriteFile(
                paths.containerd_config,
                daemon.containerd_config(paths, engine.containerd_config_version),
                0o644,
            ),
            *(scripts(facts.python, bins, config, paths, accel, cg) if own else ()),
        ),
        context_file=context_file(facts, paths),
        daemon_json={
            storage: daemon.render_daemon_json(config, paths, storage, own, accel, ipv6, engine, cg)
            for storage in storage_candidates(config)
        },
        accel=accel,
        ipv6=ipv6,
        ipv6_reason=ipv6_reason,
        daemon_accel=daemon_accel,
        engine=engine,
        rlk_info=rlk,
        cgroups=cg,
    )


def client_address(config: Config, bins: dict[str, str]) -> bool:
    """Containers see a published port's client address where the splice proxy makes the
    connections and iproute2 can route the replies back to it."""
    return config.client_address and config.port_forwarder == "splice" and "ip" in bins


def context_file(facts: HostFacts, paths: Paths) -> WriteFile:
    """The docker CLI context `docker-up` (a convenience: a failure to write it is no
    reason not to start)."""
    path = context.meta_path(context.docker_config_dir(facts.env, facts.home))
    return WriteFile(path, context.meta_json(paths.docker_host), mode=0o644, optional=True)


def scripts(
    python: str, bins: dict[str, str], config: Config, paths: Paths, accel: bool, cg: Cgroups
) -> tuple[WriteFile, ...]:
    """dockerd's userland proxy and (with container defaults) its default runtime."""
    marker = str(paths.client_address_marker) if client_address(config, bins) else None
    proxy = daemon.proxy_script(python, paths, bins["docker-proxy"], marker)
    files = [WriteFile(paths.proxy_script, proxy, 0o755)]
    spec = daemon.runtime_spec(config, paths, bins["runc"], accel, cg)
    if spec is not None:
        files.append(WriteFile(paths.runtime_script, daemon.runtime_script(python, spec), 0o755))
    return tuple(files)


def child_spec(
    config: Config,
    mode: Mode,
    paths: Paths,
    bins: dict[str, str],
    gids: int,
    argv: list[str],
    env: dict[str, str],
    net: NetworkDriver | None,
) -> ChildSpec:
    """What child.py does inside the namespaces, as data."""
    own_netns = net is not None
    ipv6 = net is not None and net.ipv6
    # Real root may write the real /etc and /run; everyone else gets a writable copy.
    copyup = ["/etc", "/run"] if mode is not Mode.privileged or own_netns else []
    iptables_dir = str(Path(bins["iptables"]).parent)
    check = NetCheck(
        tap=slirp4netns.TAP,
        address=GUEST_ADDR,
        prefixlen=PREFIXLEN,
        gateway=GATEWAY,
        mtu=config.mtu,
        address6=f"{GUEST_ADDR6}/{PREFIXLEN6}" if ipv6 else None,
        gateway6=GATEWAY6 if ipv6 else None,
    )
    return ChildSpec(
        unshare=(["user"] if mode.needs_userns() else [])
        + ["mount"]
        + (["net"] if own_netns else []),
        copyup=copyup,
        copyup_base=str(paths.copyup),
        resolv_conf=f"nameserver {DNS}\n" if own_netns else None,
        sysctls=sysctls(gids, config, ipv6) if own_netns else {},
        loopback=own_netns,
        storage_candidates=storage_candidates(config),
        storage_probe_dir=str(paths.data / "probe"),
        fuse_overlayfs=bins.get("fuse-overlayfs"),
        # In order of preference (legacy works there: the copy-up gives the namespace its
        # own xtables.lock).
        iptables=[[name, f"{iptables_dir}/iptables-{name}"] for name in IPTABLES_BACKENDS],
        bin_dir=str(paths.bin_dir),
        verify=check if own_netns else None,
        dockerd=Command(argv=argv, env=env),
        listen_fd=config.listen_fd,
        log=str(paths.log("dockerd")),
        containerd=Command(argv=daemon.containerd_argv(bins["containerd"], paths), env=env),
        containerd_pidfile=str(paths.containerd_pidfile),
        transparent_ip=bins["ip"] if own_netns and client_address(config, bins) else None,
        transparent_marker=str(paths.client_address_marker),
        ipv6=ipv6,
        ipv6_commands=ipv6_commands(net, bins, config) if net is not None and ipv6 else [],
        sysfs=own_netns,
        # `-v /var/run/docker.sock:...` (Testcontainers' Ryuk, act, Portainer) is resolved in
        # this mount namespace: there, as on any Docker host, it is this daemon's socket.
        run_links={"docker.sock": str(paths.socket)} if "/run" in copyup else {},
    )
