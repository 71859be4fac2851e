"""What the CLI side tells each lean program, as typed data (stdlib only).

Both sides use these classes: the planner and the executor build a spec and pass
`spec.to_json()` on the command line; the program reads it back with `Spec.from_json()`. A
field renamed on one side is renamed on the other, and mypy checks every read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import types
import typing
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Spec")


class SpecError(ValueError):
    """A document that is not what its class says: unknown or missing fields, wrong types."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A typed document that crosses a process boundary as JSON. from_dict checks every
    field against its annotation and builds nested specs from theirs, so a reader gets
    the declared types or a SpecError, never a KeyError or a str where an int was meant."""

    # Unknown fields: refused (a renamed field is a bug), unless a newer writer may add some.
    EXTRA_OK: ClassVar[bool] = False

    def to_json(self) -> str:
        # Field and key order as written: some carry meaning (preference order).
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[S], doc: object) -> S:
        if not isinstance(doc, dict):
            raise SpecError(f"{cls.__name__}: not an object: {type(doc).__name__}")
        hints = _hints(cls)
        unknown = set(doc) - set(hints)
        if unknown and not cls.EXTRA_OK:
            raise SpecError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        values = {
            k: _convert(v, hints[k], f"{cls.__name__}.{k}") for k, v in doc.items() if k in hints
        }
        try:
            return cls(**values)
        except TypeError as e:  # a required field missing
            raise SpecError(f"{cls.__name__}: {e}") from None

    @classmethod
    def from_json(cls: type[S], text: str | bytes) -> S:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise SpecError(f"{cls.__name__}: not JSON: {e}") from None
        return cls.from_dict(doc)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Each field's annotation, evaluated once per class (they are strings until then)."""
    if cls not in _HINTS:
        names = {f.name for f in dataclasses.fields(cls)}
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items() if k in names}
    return _HINTS[cls]


def _convert(value: object, hint: Any, where: str) -> Any:
    """value as the annotation hint says (nested specs built), or SpecError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            with contextlib.suppress(SpecError):
                return _convert(value, arm, where)
    elif isinstance(hint, type) and issubclass(hint, Spec):
        return hint.from_dict(value)
    elif origin is list and isinstance(value, list):
        return [_convert(v, args[0], f"{where}[]") for v in value]
    elif origin is dict and isinstance(value, dict):
        return {
            _convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}")
            for k, v in value.items()
        }
    elif _plain(value, hint):
        return float(value) if hint is float else value  # type: ignore[arg-type]
    raise SpecError(f"{where}: expected {_name(hint)}, got {type(value).__name__}")


def _plain(value: object, hint: Any) -> bool:
    if hint is type(None) or hint is None:
        return value is None
    if isinstance(value, bool):  # a bool is an int to Python, not to JSON
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return hint in (int, str, bool) and isinstance(value, hint)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


@dataclasses.dataclass(frozen=True)
class Command(Spec):
    argv: list[str]
    env: dict[str, str]


@dataclasses.dataclass(frozen=True)
class NetCheck(Spec):
    """What the network helper must have set up (namespace/netcheck.py checks it)."""

    tap: str
    address: str
    prefixlen: int
    gateway: str
    mtu: int
    address6: str | None = None  # IPv6 on: tap0's address and the default route's gateway
    gateway6: str | None = None


@dataclasses.dataclass(frozen=True)
class ChildSpec(Spec):
    """child.py: the namespaces to make, how to set them up, and the dockerd to exec."""

    unshare: list[str]
    copyup: list[str]
    copyup_base: str
    resolv_conf: str | None
    sysctls: dict[str, str]
    loopback: bool
    storage_candidates: list[str]
    storage_probe_dir: str
    fuse_overlayfs: str | None
    iptables: list[list[str]]  # [backend, path] in order of preference
    bin_dir: str
    verify: NetCheck | None
    dockerd: Command
    listen_fd: int | None
    log: str  # where its output and dockerd's go
    containerd: Command  # started in the namespaces first; dockerd connects to it
    containerd_pidfile: str
    # `ip` (iproute2): when set, replies to the port proxy's transparent sockets are routed
    # to them (a mark, a rule, a local route), then transparent_marker is made; None: no
    # client addresses.
    transparent_ip: str | None = None
    transparent_marker: str | None = None
    # IPv6 on: the iptables backend must do ip6tables too (dockerd's ip6tables), and these
    # commands give tap0 its IPv6 address and route once the helper is up.
    ipv6: bool = False
    ipv6_commands: list[list[str]] = dataclasses.field(default_factory=list)
    # The acceleration agent's socket: dockerd's own IPv4 connects go to it (accel/daemonfilter.py).
    watch_connects: str | None = None
    # A sysfs of the namespace's own on /sys, the host's cgroup tree kept on /sys/fs/cgroup
    # (as RootlessKit's child does): /sys/class/net is the namespace's, and the host's
    # securityfs is out of sight (dockerd would try to load its AppArmor profile there).
    sysfs: bool = False
    # Symlinks made in the copied-up /run (name -> target): the daemon's socket where
    # containers look for it (/run/docker.sock, and /var/run/docker.sock through /var/run).
    run_links: dict[str, str] = dataclasses.field(default_factory=dict)
    # userns keep-id: the child is the user's own id inside, not root; it becomes root
    # there (keeping its capabilities across its execs) once the ids are mapped.
    become_root: bool = False


@dataclasses.dataclass(frozen=True)
class ApiInfo(Spec):
    """What docker-up's RootlessKit API says of itself (rlkapi.py): fixed for a start."""

    version: str
    state_dir: str
    child_pid: int  # dockerd's: the process in the namespaces (0 until it runs)
    network_driver: str
    dns: str
    child_ip: str
    port_driver: str
    protos: list[str]
    disallow_loopback_child_ip: bool


@dataclasses.dataclass(frozen=True)
class AutoPortsSpec(Spec):
    """autoports.py: which namespace listeners the keeper exposes, and where it says so."""

    include: list[list[int]]  # [first, last] port ranges; empty: every port
    exclude: list[list[int]]
    cap: int  # at most this many ports exposed at once
    table: str  # the file `docker-up ports` reads (written atomically)
    # UDP: only these ports (a blanket UDP forward would catch every client's socket).
    udp: list[list[int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PortSpec(Spec):
    """port.Spec of RootlessKit's API (rlkapi.py): parent = the workspace side, child = the
    namespace side. The field names are the wire's."""

    proto: str
    parentIP: str = ""
    parentPort: int = 0
    childIP: str = ""
    childPort: int = 0

    @property
    def kind(self) -> str:
        return self.proto.rstrip("46")

    @property
    def families(self) -> frozenset[int]:
        """The address families the forward listens on: by the proto's suffix, else by
        the address, else (tcp on no address) both, as Go's net.Listen would."""
        if self.proto.endswith("4"):
            return frozenset({4})
        if self.proto.endswith("6"):
            return frozenset({6})
        if self.parentIP:
            return frozenset({ipaddress.ip_address(self.parentIP).version})
        return frozenset({4, 6})

    def overlaps(self, other: PortSpec) -> bool:
        """Two forwards that would take the same workspace port: same protocol and port,
        a family in common, and the same address or an unspecified one. (0.0.0.0 and ::
        on one port do not: each family has its own socket, IPV6_V6ONLY.)"""
        if self.kind != other.kind or self.parentPort != other.parentPort:
            return False
        if not self.families & other.families:
            return False
        a, b = self.parentIP, other.parentIP
        return a == b or not a or not b or _unspecified(a) or _unspecified(b)


def _unspecified(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_unspecified


@dataclasses.dataclass(frozen=True)
class KeeperSpec(Spec):
    """keeper/resident.py: the running processes, the fds it inherits, and how to restart them."""

    dockerd_pid: int
    dockerd: Command
    containerd: Command
    dockerd_log: str
    net_pid: int | None
    net_name: str
    net_argv: list[str] | None  # with {target}, {ready_fd} and {exit_fd} to fill in
    net_ready: str  # "": {ready_fd} is an inherited pipe's fd; else this named pipe's path
    net_log: str
    net_api: str
    exit_fd: int | None
    ns_fds: dict[str, int]
    lock_fd: int
    listen_fd: int | None
    ports_fd: int | None
    accel_fd: int | None
    allow_host_loopback: bool
    # A new dockerd's connects go to the agent too (accel/daemonfilter.py).
    watch_connects: str | None
    port_forwarder: str
    socket: str
    pidfile: str
    containerd_pidfile: str
    state_file: str
    log_file: str
    log_max: int
    echo: bool
    stop_timeout: float
    start_timeout: float
    remove: list[str]
    # dockerd 28+: the RootlessKit API's listening socket, what it says, and the port
    # forwards dockerd told it of so far (id -> spec).
    live_restore: bool = False  # dockerd --live-restore: its containers outlive it
    # The dev containers' views (dockerup/views): what runc's delete did not remove (dockerd
    # killed) goes at stop, once nothing runs in the namespace.
    views: str | None = None
    rlk_fd: int | None = None
    rlk_info: ApiInfo | None = None
    rlk_ports: dict[str, PortSpec] = dataclasses.field(default_factory=dict)
    # Every TCP listener in the namespace answers on the workspace's loopback (None: off).
    auto_ports: AutoPortsSpec | None = None
    ports_table: str | None = None  # where the published ports are listed (ports/tables.py)
    # userns keep-id: a restarted dockerd becomes root in the namespace it joins, as the
    # child did (the user is its own id there).
    become_root: bool = False


@dataclasses.dataclass(frozen=True)
class LazySpec(Spec):
    """lazy.py: the bound socket and the lock to hold, and what to exec on a client."""

    listen_fd: int
    lock_fd: int
    socket: str
    lazy_file: str
    main_pid: str
    argv: list[str]


@dataclasses.dataclass(frozen=True)
class ProxySpec(Spec):
    """ports/proxy.py: where the keeper's port manager listens, and the real docker-proxy."""

    manager: str
    docker_proxy: str
    # Connect to the container from a remote client's own address (IP_TRANSPARENT), once
    # this file exists: the child made it after routing replies back (ChildSpec).
    transparent: str | None = None


@dataclasses.dataclass(frozen=True)
class RuntimeSpec(Spec):
    """runtime.py: what each new container gets, and the runc it hands over to."""

    runc: str
    sysctls: dict[str, str]
    listener: str | None  # the acceleration agent's socket (--net-accel)
    # The controllers (memory, cpu, pids) whose limits cannot apply here: a container that
    # asks for one is refused, with why and the fix (dockerup/plan/cgroups.py: Cgroups.refused).
    refused: list[str] = dataclasses.field(default_factory=list)
    refused_why: str = ""
    # Dev containers' views (dockerup/views): where they are mounted (None: none), bindfs,
    # and the workspace user's own uid and gid (0 inside docker-up's default map).
    views: str | None = None
    bindfs: str = ""
    user_uid: int = 0
    user_gid: int = 0
