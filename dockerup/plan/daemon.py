"""dockerd's configuration, argv and environment (pure rendering)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from dockerup import __version__
from dockerup.errors import DockerUpError
from dockerup.lean import script
from dockerup.net.addresses import CONTAINER_CIDR6, DNS, GATEWAY, GUEST_ADDR
from dockerup.net.driver import NetworkDriver
from dockerup.plan.cgroups import UNDECIDED, Cgroups
from dockerup.plan.engine import Engine
from dockerup.ports.rlkapi import PROTOS_SLIRP, PROTOS_SPLICE
from dockerup.settings.config import Config
from dockerup.settings.paths import Paths
from dockerup.wire.specs import ApiInfo, ProxySpec, RuntimeSpec

# iptables backends in docker-up's order of preference: legacy deletes a rule in ~2 ms, nft
# waits ~15 ms for the kernel on each (a warm dockerd deletes and re-adds the bridge's).
IPTABLES_BACKENDS = ("legacy", "nft")

# What an engine that says no version is taken to be (tests that plan without one).
DEFAULT_ENGINE = Engine(dockerd=(20, 10), containerd=(1, 6))
TLS_FILES = {"tlscacert": "ca.pem", "tlscert": "cert.pem", "tlskey": "key.pem"}


def tcp_listener(config: Config) -> dict[str, Any]:
    """A TCP listener is root-equivalent access for anyone who reaches it: only with TLS and
    client-certificate verification, never plain."""
    if not config.tcp:
        return {}
    if not config.tls_dir:
        raise DockerUpError(
            f"refusing a plain TCP listener on {config.tcp}: anyone who can reach it controls "
            "the daemon, and through it everything your user can do",
            hint="add --tls-dir DIR (with ca.pem, cert.pem, key.pem) for a TLS listener with "
            "client verification, or use the unix socket docker-up prints",
        )
    tls = {k: f"{config.tls_dir}/{v}" for k, v in TLS_FILES.items()}
    return {"hosts": [f"tcp://{config.tcp}"], "tls": True, "tlsverify": True, **tls}


RUNTIME = "docker-up"  # the name dockerd knows docker-up's runtime wrapper by


def container_sysctls(config: Config) -> dict[str, str]:
    """Defaults for every container with a network namespace of its own."""
    if not config.tcp_wmem_max:
        return {}
    return {"net.ipv4.tcp_wmem": f"4096 16384 {config.tcp_wmem_max}"}


HOST_GATEWAY = GATEWAY  # both network drivers' gateway: the workspace as the namespace sees it


def ipv6_config(config: Config, engine: Engine) -> dict[str, Any]:
    """Containers on the default bridge get an address in a ULA network; dockerd's
    ip6tables masquerades it to the namespace's address (the helper knows only that one)
    and keeps Docker's isolation between networks for IPv6 too. dockerd 20.10 keeps
    ip6tables behind `experimental` (27 and later need neither)."""
    doc: dict[str, Any] = {"ipv6": True, "fixed-cidr-v6": CONTAINER_CIDR6, "ip6tables": True}
    # A flag that also sits in daemon.json makes dockerd refuse to start.
    if engine.ipv6_needs_experimental and not config.gives_dockerd("--experimental"):
        doc["experimental"] = True
    return doc


def daemon_config(
    config: Config,
    paths: Paths,
    storage: str,
    own_netns: bool = True,
    accel: bool = False,
    ipv6: bool = False,
    engine: Engine = DEFAULT_ENGINE,
    cg: Cgroups = UNDECIDED,
) -> dict[str, Any]:
    """daemon.json. Everything lives under the user's own directories; the MTU matches the
    network helper's so that docker0's packets fit the tap device. cg: the plan's cgroup
    decision (dockerup/plan/cgroups.py): its driver, and the limits docker-up's runtime refuses."""
    tcp = tcp_listener(config)
    return (
        tcp
        | {
            "data-root": str(paths.data_root),
            "exec-root": str(paths.exec_root),
            "pidfile": str(paths.pidfile),
            "hosts": [
                "fd://" if config.listen_fd is not None else paths.docker_host,
                *tcp.get("hosts", []),
            ],
            "mtu": config.mtu,
            "storage-driver": storage,
            # Shorter than docker-up's own stop timeout, so dockerd always gets to stop its
            # containers (and their shims) before it could be killed.
            "shutdown-timeout": 10,
            # dockerd 20.10 only moves its identity key out of /etc/docker when RootlessKit's
            # environment is present; without it, it would write into the host's /etc/docker.
            "deprecated-key-path": str(paths.data / "key.json"),
        }
        | (
            # Published ports must answer in the workspace too: docker-up's proxy arranges it.
            # `--add-host NAME:host-gateway` names the address that reaches the workspace:
            # the network helper's gateway (its 127.0.0.1 when host loopback is allowed;
            # refused otherwise, as 10.0.2.2 itself is).
            {"userland-proxy-path": str(paths.proxy_script), "host-gateway-ip": HOST_GATEWAY}
            if own_netns
            else {}
        )
        | (
            {
                "runtimes": {RUNTIME: {"path": str(paths.runtime_script)}},
                "default-runtime": RUNTIME,
            }
            if own_netns and (accel or container_sysctls(config) or cg.refused)
            else {}
        )
        | (ipv6_config(config, engine) if own_netns and ipv6 else {})
        | local_registries(config, own_netns)
        | ({"exec-opts": [cg.exec_opt]} if cg.exec_opt else {})
    )


def local_registries(config: Config, own_netns: bool) -> dict[str, Any]:
    """dockerd trusts a registry on its own loopback over plain HTTP (localhost:5000); the
    workspace's loopback is 10.0.2.2 here (with host loopback allowed), so a registry the
    user runs in the workspace is as local, and as trusted. Not when the user names
    insecure registries: a flag that is also in daemon.json stops dockerd."""
    if not own_netns or not config.allow_host_loopback:
        return {}
    if config.gives_dockerd("--insecure-registry"):
        return {}
    return {"insecure-registries": [f"{GATEWAY}/32"]}


def render_daemon_json(
    config: Config,
    paths: Paths,
    storage: str,
    own_netns: bool = True,
    accel: bool = False,
    ipv6: bool = False,
    engine: Engine = DEFAULT_ENGINE,
    cg: Cgroups = UNDECIDED,
) -> str:
    doc = daemon_config(config, paths, storage, own_netns, accel, ipv6, engine, cg)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def proxy_script(
    python: str, paths: Paths, docker_proxy: str, transparent: str | None = None
) -> str:
    """What dockerd runs as its userland proxy (it takes a path, not an argv). Every path
    quoted: a venv or runtime dir with a space or a `$` in its name is still one word."""
    spec = ProxySpec(
        manager=str(paths.ports_sock), docker_proxy=docker_proxy, transparent=transparent
    )
    argv = " ".join(shlex.quote(a) for a in (python, "-S", script("portproxy"), spec.to_json()))
    return f'#!/bin/sh\nexec {argv} "$@"\n'


def runtime_spec(
    config: Config,
    paths: Paths,
    runc: str,
    accel: bool,
    cg: Cgroups = UNDECIDED,
    views: Views | None = None,
) -> RuntimeSpec | None:
    """What docker-up's runtime adds to each new container (or refuses); None: plain runc."""
    sysctls = container_sysctls(config)
    if not sysctls and not accel and not cg.refused and views is None:
        return None
    return RuntimeSpec(
        runc=runc,
        sysctls=sysctls,
        listener=str(paths.accel_sock) if accel else None,
        refused=list(cg.refused),
        refused_why=f"{cg.reason}. Fix: {cg.fix}" if cg.refused else "",
        views=str(paths.views) if views else None,
        bindfs=views.bindfs if views else "",
        user_uid=views.uid if views else 0,
        user_gid=views.gid if views else 0,
    )


@dataclass(frozen=True)
class Views:
    """Dev containers get views of the workspace's folders (dockerup/views): with bindfs,
    under the default map (the user is 0 inside, their own uid a subordinate id)."""

    bindfs: str
    uid: int
    gid: int


def views_for(bindfs: str | None, default_map: bool, uid: int, gid: int) -> Views | None:
    """None where the map is not the default one (keep-id: the user is already themself
    inside; no namespace of docker-up's: no map at all) or bindfs is missing (doctor says
    so; containers run as before)."""
    return Views(bindfs, uid, gid) if bindfs and default_map else None


def runtime_script(python: str, spec: RuntimeSpec) -> str:
    """dockerd's default runtime: runc itself for every command but `create`, which passes
    through dockerup/accel/ociruntime.py to add the container defaults (one Python start per
    container, none for state, start, kill, delete)."""
    q = shlex.quote
    runc = spec.runc
    create = f'exec {q(python)} -S {q(script("runtime"))} {q(spec.to_json())} "$@"'
    # runc's delete unmounts the container's views (dockerup/views), if it has any.
    delete = (
        [
            "for id; do :; done",
            f'  *" delete "*) [ -d {q(spec.views)}/"$id" ] && {create} ;;',
        ]
        if spec.views
        else []
    )
    lines = [
        "#!/bin/sh",
        *delete[:1],
        'case " $* " in',
        f'  *" create "*) {create} ;;',
        *delete[1:],
        "esac",
        f'exec {q(runc)} "$@"',
    ]
    return "\n".join(lines) + "\n"


def dockerd_argv(dockerd: str, paths: Paths, rootless: bool = True) -> list[str]:
    # containerd is docker-up's to start (see containerd_config): dockerd only connects.
    argv = [
        dockerd,
        f"--config-file={paths.daemon_json}",
        f"--containerd={paths.containerd_socket}",
    ]
    return [*argv, "--rootless"] if rootless else argv


def containerd_argv(containerd: str, paths: Paths) -> list[str]:
    return [containerd, "--config", str(paths.containerd_config), "--log-level", "info"]


def containerd_config(paths: Paths, version: int = 2) -> str:
    """The settings dockerd gives the containerd it starts itself. docker-up starts
    containerd in the namespaces before dockerd runs, so that containerd boots while
    dockerd's own start-up runs (about 30 ms that dockerd otherwise spends waiting for it;
    docs/performance.md). version: the configuration format the containerd reads (2 for
    containerd 1.x, 3 for 2.x, engine.py); the keys below mean the same in both."""
    q = json.dumps  # a TOML basic string is a JSON string
    return (
        "\n".join(
            [
                f"version = {version}",
                f"root = {q(str(paths.data_root / 'containerd' / 'daemon'))}",
                f"state = {q(str(paths.containerd_dir / 'daemon'))}",
                # Kubernetes' CRI is not used by dockerd; its plugins cost start-up time.
                f"disabled_plugins = {q(list(CRI_PLUGINS))}",
                "",
                "[grpc]",
                f"  address = {q(str(paths.containerd_socket))}",
                "",
                "[debug]",
                f"  address = {q(str(paths.containerd_dir / 'containerd-debug.sock'))}",
                '  level = "info"',
                "",
                # Its default, /opt/containerd, is the host's (and not ours to create).
                '[plugins."io.containerd.internal.v1.opt"]',
                f"  path = {q(str(paths.data_root / 'containerd' / 'opt'))}",
            ]
        )
        + "\n"
    )


CRI_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
)


def dockerd_env(
    base: dict[str, str],
    paths: Paths,
    search_path: str,
    home: str,
    rootlesskit_api: bool = False,
) -> dict[str, str]:
    """A small, explicit environment: our bin dir first (the working iptables backend),
    then the user's PATH with the sbin directories where Debian keeps runc."""
    env = {
        "PATH": f"{paths.bin_dir}:{search_path}",
        "HOME": home,
        # Rootless dockerd derives some defaults from it and refuses to start without it.
        "XDG_RUNTIME_DIR": str(paths.runtime),
    }
    if rootlesskit_api:
        # dockerd 28+ asks RootlessKit's API here; docker-up answers (ports/rlkapi.py).
        env["ROOTLESSKIT_STATE_DIR"] = str(paths.rootlesskit_dir)
    for key in ("LANG", "LC_ALL", "TZ", "DOCKERD_DEBUG"):
        if key in base:
            env[key] = base[key]
    return env


def rootlesskit_info(config: Config, paths: Paths, net: NetworkDriver) -> ApiInfo:
    """What docker-up's RootlessKit API tells dockerd 28+. Its port driver is docker-up's
    own forwarder. slirp4netns' forwarding (--port-forwarder slirp) delivers to the tap
    address, IPv4 only: then dockerd must bind there, as with RootlessKit's slirp4netns port
    driver; the splice forwarder takes every address and both families."""
    slirp = config.port_forwarder == "slirp"
    return ApiInfo(
        version=f"docker-up-{__version__}",
        state_dir=str(paths.rootlesskit_dir),
        child_pid=0,
        network_driver=net.name,
        dns=DNS,
        child_ip=GUEST_ADDR,
        port_driver=f"docker-up-{config.port_forwarder}",
        protos=list(PROTOS_SLIRP if slirp else PROTOS_SPLICE),
        disallow_loopback_child_ip=slirp,
    )
