"""From host facts and config to a Plan: data a test can compare, and `up --dry-run` prints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dockerup.errors import DockerUpError
from dockerup.host.facts import HostFacts
from dockerup.net import slirp4netns
from dockerup.net.addresses import (
    DNS,
    GATEWAY,
    GATEWAY6,
    GUEST_ADDR,
    GUEST_ADDR6,
    PREFIXLEN,
    PREFIXLEN6,
)
from dockerup.net.driver import NetworkDriver
from dockerup.net.kinds import kind_of
from dockerup.plan import daemon
from dockerup.plan.cgroups import Cgroups, decide
from dockerup.plan.daemon import IPTABLES_BACKENDS
from dockerup.plan.data import Plan, WriteFile
from dockerup.plan.engine import Engine
from dockerup.plan.idmap import KEEP_ID, id_maps
from dockerup.plan.ipv6 import IPV6_SYSCTLS, ipv6_commands, resolve_ipv6
from dockerup.plan.require import (
    require_dockerd,
    require_forwarder,
    require_programs,
    require_range,
    require_socket_path,
    require_tun,
    require_userns_setting,
    resolve_accel,
    resolve_daemon_accel,
)
from dockerup.settings import context
from dockerup.settings.config import Config, Storage
from dockerup.settings.modes import Mode, resolve_mode
from dockerup.settings.paths import Paths, resolve_paths, system_paths
from dockerup.wire.specs import ChildSpec, Command, NetCheck


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


def resolve_mode_of(config: Config, facts: HostFacts) -> tuple[Mode, str]:
    """The mode, and why: from the configuration (auto, or what it asks for) and the host."""
    return resolve_mode(facts.uid, facts.initial_userns, facts.net_admin, config.mode)


def build_plan(
    config: Config,
    facts: HostFacts,
    paths: Paths | None = None,
    resolved: tuple[Mode, str] | None = None,
) -> Plan:
    """Pure: raises DockerUpError for anything that cannot work on this host. resolved: the
    mode and why, as the command resolved it (verbs/resolve.load_config); resolved here
    only for a caller that has none."""
    mode, reason = resolved or resolve_mode_of(config, facts)
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
    require_userns_setting(config.userns, mode)
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
    default_map = uidmap is not None and not keep_id
    views = daemon.views_for(bins.get("bindfs"), default_map, facts.uid, facts.gid)
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
            *(scripts(facts.python, bins, config, paths, accel, cg, views) if own else ()),
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
    python: str,
    bins: dict[str, str],
    config: Config,
    paths: Paths,
    accel: bool,
    cg: Cgroups,
    views: daemon.Views | None = None,
) -> tuple[WriteFile, ...]:
    """dockerd's userland proxy and (with container defaults) its default runtime."""
    marker = str(paths.client_address_marker) if client_address(config, bins) else None
    proxy = daemon.proxy_script(python, paths, bins["docker-proxy"], marker)
    files = [WriteFile(paths.proxy_script, proxy, 0o755)]
    spec = daemon.runtime_spec(config, paths, bins["runc"], accel, cg, views)
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
