"""User settings: declared once as data, resolved from the config file, the environment and
the command line (in that order of precedence, the command line winning), each value
remembering where it came from."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from dockerup.errors import DockerUpError
from dockerup.net.kinds import NET_DRIVERS
from dockerup.ports.tables import FORWARDERS

MTU_MIN, MTU_MAX = 1280, 65520


class Storage(StrEnum):
    auto = "auto"
    overlay2 = "overlay2"
    fuse_overlayfs = "fuse-overlayfs"
    vfs = "vfs"


@dataclass(frozen=True)
class Config:
    mtu: int = 65520
    allow_host_loopback: bool = False
    start_timeout: float = 60.0
    storage: Storage = Storage.auto
    stop_timeout: float = 30.0
    mode: str = "auto"
    # privileged mode only: dockerd in the current network namespace, no slirp4netns.
    host_network: bool = False
    # An extra TCP listener for dockerd ("ADDR:PORT"); only ever with TLS client verification.
    tcp: str | None = None
    tls_dir: str | None = None  # holds ca.pem, cert.pem, key.pem
    port_forwarder: str = "splice"  # or "slirp": see dockerup/ports/manager.py
    net: str = NET_DRIVERS[0]
    # Cap on each container's TCP send buffer (net.ipv4.tcp_wmem's max), 0: the kernel's.
    # A container's TCP ends at the network helper, a hop away, so a small buffer costs
    # nothing there, while the kernel's 4 MiB floods the helper (docs/performance.md).
    tcp_wmem_max: int = 131072
    # Containers' TCP/IPv4 connections out of the namespace (and to the workspace's loopback,
    # with host loopback allowed) become real workspace sockets (seccomp user notification;
    # dockerup/accel/agent.py) instead of crossing the helper.
    # None (auto): on where the machine supports it, host loopback allowed or not.
    net_accel: bool | None = None
    # dockerd's own TCP connections (pulls, pushes, build downloads) go the same way: they
    # leave from the workspace instead of crossing the helper (accel/daemonfilter.py).
    # None (auto): on where the machine supports it.
    daemon_net_accel: bool | None = None
    # Published ports (splice forwarder): a container sees a remote client's own address
    # (IP_TRANSPARENT in docker-up's namespace), not the proxy's.
    client_address: bool = True
    # Every TCP listener in the namespace (a --network host container, a server started
    # with `docker-up exec`) answers on the workspace's loopback (autoports/scanner.py):
    # within these port ranges ("3000-3999,8080"; empty: all), not these, at most this many.
    auto_ports: bool = True
    auto_ports_include: str = ""
    auto_ports_exclude: str = ""
    auto_ports_max: int = 64
    # UDP sockets bound in the namespace on these ports only ("5353,27015-27020"; empty: none).
    auto_ports_udp: str = ""
    # IPv6 for containers (dockerd ipv6 with a ULA network, NAT to the namespace's address).
    # None (auto): on when the workspace has an IPv6 default route.
    ipv6: bool | None = None
    data_root: str | None = None  # default: $XDG_DATA_HOME/docker-up/docker
    # The user namespace's id map (dockerup/plan/idmap.py): "default", the user is root inside;
    # "keep-id", the user stays itself (its own data-root: docker-keep-id).
    userns: str = "default"
    # The Docker Engine to run: a dockerd binary; its containerd, docker-proxy and runc are
    # taken from beside it first. None: the first dockerd on PATH.
    dockerd: str | None = None
    dockerd_args: tuple[str, ...] = ()
    log_max: int = 10 * 2**20  # each log file's cap in bytes (then NAME.1 holds the rest)
    autostart: bool = True  # the shell-init snippet starts docker-up
    lazy_start: bool = True  # ... by holding the socket until the first client (activation)
    # Socket activation (internal): the listening socket dockerd inherits, as systemd would
    # hand it over (-H fd://, LISTEN_FDS, LISTEN_PID), and the instance lock held so far.
    listen_fd: int | None = None

    def gives_dockerd(self, flag: str) -> bool:
        """Do the user's dockerd-args name this flag (alone, or as --flag=value)?"""
        return any(a.split("=", 1)[0] == flag for a in self.dockerd_args)


# dockerd flags a user may add. Everything else is refused: docker-up owns the socket, the
# paths, the network and the storage, and a flag that also sits in daemon.json makes
# dockerd refuse to start.
DOCKERD_FLAGS_ALLOWED = frozenset(
    {
        "--debug",
        "-D",
        "--log-level",
        "-l",
        "--experimental",
        "--insecure-registry",
        "--registry-mirror",
        "--dns",
        "--dns-search",
        "--dns-opt",
        "--default-ulimit",
        "--max-concurrent-downloads",
        "--max-concurrent-uploads",
        "--max-download-attempts",
        "--live-restore",
        "--bip",
        "--default-address-pool",
        "--fixed-cidr",
        "--label",
        "--log-driver",
        "--log-opt",
        "--icc",
        "--ip-masq",
        "--default-shm-size",
        "--seccomp-profile",
        "--no-new-privileges",
        # Real root only (dockerd refuses it rootless): every container in a user namespace of
        # the named user's subordinate ids, as a Kubernetes pod with hostUsers: false is.
        "--userns-remap",
    }
)
DOCKERD_FLAGS_WHY = {
    "-H": "docker-up owns the socket; for TCP use --tcp with --tls-dir",
    "--host": "docker-up owns the socket; for TCP use --tcp with --tls-dir",
    "--data-root": "use the data-root setting",
    "--mtu": "use the mtu setting",
    "--storage-driver": "use the storage setting",
    "-s": "use the storage setting",
    "--add-runtime": "docker-up sets dockerd's runtime (its wrapper gives containers "
    "docker-up's defaults and --net-accel)",
    "--default-runtime": "docker-up sets dockerd's runtime (its wrapper gives containers "
    "docker-up's defaults and --net-accel)",
}


def check_dockerd_args(args: tuple[str, ...]) -> str | None:
    for arg in args:
        if not arg.startswith("-"):
            continue  # the value of the flag before it
        flag = arg.split("=", 1)[0]
        if flag not in DOCKERD_FLAGS_ALLOWED:
            why = DOCKERD_FLAGS_WHY.get(flag, "it would conflict with what docker-up manages")
            return f"dockerd flag {flag} is not allowed: {why}"
    return None


def _choices(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of: {', '.join(allowed)}"


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}"


def _ports(v: Any) -> str | None:
    from dockerup.autoports.rules import parse_ranges

    try:
        parse_ranges(v)
    except ValueError as e:
        return f"port ranges like 3000-3999,8080: {e}"
    return None


def _absolute(v: Any) -> str | None:
    return None if os.path.isabs(v) else "must be an absolute path"


@dataclass(frozen=True)
class Setting:
    key: str  # in the file, and DOCKER_UP_<KEY> in the environment
    kind: type
    help: str
    check: Callable[[Any], str | None] = lambda v: None

    @property
    def field(self) -> str:
        return self.key.replace("-", "_")

    @property
    def env(self) -> str:
        return "DOCKER_UP_" + self.field.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("mtu", int, "MTU of the tap device and docker0", _range(MTU_MIN, MTU_MAX)),
    Setting("net", str, "network driver: slirp4netns or pasta", _choices(*NET_DRIVERS)),
    Setting(
        "tcp-wmem-max",
        int,
        "containers' TCP send buffer cap in bytes (0: kernel's)",
        lambda v: None if v == 0 or 16384 <= v <= 2**30 else "0, or 16384 to 1073741824",
    ),
    Setting("net-accel", bool, "bypass the network helper for container connections"),
    Setting("daemon-net-accel", bool, "dockerd's pulls and pushes bypass the network helper"),
    Setting("allow-host-loopback", bool, "reach the workspace's 127.0.0.1 as 10.0.2.2"),
    Setting("data-root", str, "where images and containers live", _absolute),
    Setting("dockerd", str, "the dockerd to run (default: the first on PATH)", _absolute),
    Setting("log-max", int, "each log file's cap in bytes", _range(4096, 2**30)),
    Setting("storage", str, "storage driver", _choices(*[s.value for s in Storage])),
    Setting(
        "dockerd-args",
        list,
        "extra dockerd flags (an allow-list)",
        lambda v: check_dockerd_args(tuple(v)),
    ),
    Setting("autostart", bool, "start docker-up from the shell snippet"),
    Setting("lazy-start", bool, "the snippet holds the socket; dockerd starts on first use"),
    Setting("start-timeout", float, "seconds to wait for dockerd", _range(1, 3600)),
    Setting("port-forwarder", str, "splice or slirp", _choices(*FORWARDERS)),
    Setting("ipv6", bool, "IPv6 for containers (default: if the workspace has an IPv6 route)"),
    Setting("client-address", bool, "published ports show containers the client's address"),
    Setting("auto-ports", bool, "namespace listeners answer on the workspace's loopback"),
    Setting("auto-ports-include", str, "auto-ports only these ports (3000-3999,8080)", _ports),
    Setting("auto-ports-exclude", str, "auto-ports never these ports (5432,6000-6063)", _ports),
    Setting("auto-ports-max", int, "at most this many auto-exposed ports", _range(1, 4096)),
    Setting("auto-ports-udp", str, "auto-ports UDP sockets on these ports only (5353)", _ports),
    Setting("mode", str, "run mode", _choices("auto", "rootless", "userns-root", "privileged")),
    Setting(
        "userns",
        str,
        "id map: default (you are root inside) or keep-id (you are you; root is a subuid)",
        _choices("default", "keep-id"),
    ),
)
BY_KEY = {s.key: s for s in SETTINGS}
CONFIG_FIELDS = frozenset(f.name for f in fields(Config))
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce_file(s: Setting, value: Any) -> Any:
    """A TOML value must already have the right type (an int is a fine float)."""
    if s.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if s.kind is list:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ValueError("must be a list of strings")
        return tuple(value)
    if isinstance(value, bool) != (s.kind is bool) or not isinstance(value, s.kind):
        raise ValueError(f"must be {_kind_name(s.kind)}, not {type(value).__name__}")
    return value


def _coerce_env(s: Setting, text: str) -> Any:
    if s.kind is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ValueError("must be true or false (1/0, yes/no, on/off)")
    if s.kind is list:
        return tuple(shlex.split(text))
    try:
        return s.kind(text)
    except ValueError:
        raise ValueError(f"must be {_kind_name(s.kind)}") from None


def _kind_name(kind: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        list: "a list of strings",
    }[kind]


def _fail(where: str, s: Setting | None, key: str, problem: str) -> DockerUpError:
    allowed = ", ".join(BY_KEY) if s is None else s.help
    return DockerUpError(f"{where}: {key}: {problem}", hint=f"allowed: {allowed}")


def resolve(
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    file_text: str | None,
    file_path: str = "config.toml",
) -> tuple[Config, dict[str, str]]:
    """(config, where each setting came from: default, file, env or cli). Pure. cli holds
    Config fields only (None: not given); any other key is the CLI layer's mistake, refused
    here rather than silently dropped (ValueError)."""
    unknown = sorted(set(cli) - CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"resolve(): not Config fields: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    sources = {s.key: "default" for s in SETTINGS}
    if file_text is not None:
        try:
            import tomllib  # only when there is a file: a few ms of every start otherwise

            doc = tomllib.loads(file_text)
        except tomllib.TOMLDecodeError as e:
            raise DockerUpError(
                f"{file_path}: not valid TOML: {e}",
                hint="see https://toml.io; keys: " + ", ".join(BY_KEY),
            ) from e
        for key, value in doc.items():
            s = BY_KEY.get(key)
            if s is None:
                raise _fail(file_path, None, key, "unknown setting")
            try:
                values[s.field] = _coerce_file(s, value)
            except ValueError as e:
                raise _fail(file_path, s, key, str(e)) from None
            sources[key] = "file"
    for s in SETTINGS:
        if s.env in env:
            try:
                values[s.field] = _coerce_env(s, env[s.env])
            except ValueError as e:
                raise _fail("environment", s, s.env, str(e)) from None
            sources[s.key] = "env"
    for s in SETTINGS:
        if cli.get(s.field) is not None:
            values[s.field] = tuple(cli[s.field]) if s.kind is list else cli[s.field]
            sources[s.key] = "cli"
    for s in SETTINGS:
        if s.field in values:
            problem = s.check(values[s.field])
            if problem:
                where = {"file": file_path, "env": "environment", "cli": "command line"}
                raise _fail(where[sources[s.key]], s, s.key, problem)
    if "storage" in values:
        values["storage"] = Storage(values["storage"])
    # What only the command line gives (no setting: host_network, tcp, listen_fd ...).
    settings = {s.field for s in SETTINGS}
    values.update({k: v for k, v in cli.items() if k not in settings and v is not None})
    return Config(**values), sources
