"""What the CLI side tells each lean program, as typed data (stdlib only).

Both sides use these classes: the planner and the executor build a spec and pass
`spec.to_json()` on the command line; the program reads it back with `Spec.from_json()`. A
field renamed on one side is renamed on the other, and mypy checks every read.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Spec")


@dataclasses.dataclass(frozen=True)
class Spec:
    # Fields that hold another spec (or None), or a list of them: how from_json rebuilds them.
    NESTED: ClassVar[dict[str, type[Spec]]] = {}
    NESTED_LISTS: ClassVar[dict[str, type[Spec]]] = {}

    def to_json(self) -> str:
        # Field and key order as written: some carry meaning (preference order).
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[S], doc: dict[str, Any]) -> S:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(doc) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        values = dict(doc)
        for name, kind in cls.NESTED.items():
            if values.get(name) is not None:
                values[name] = kind.from_dict(values[name])
        for name, kind in cls.NESTED_LISTS.items():
            if isinstance(values.get(name), list):
                values[name] = [kind.from_dict(v) for v in values[name]]
        return cls(**values)

    @classmethod
    def from_json(cls: type[S], text: str) -> S:
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class Command(Spec):
    argv: list[str]
    env: dict[str, str]


@dataclasses.dataclass(frozen=True)
class NetCheck(Spec):
    """What the network helper must have set up (programs/netcheck.py checks it)."""

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

    NESTED: ClassVar[dict[str, type[Spec]]] = {
        "verify": NetCheck, "dockerd": Command, "containerd": Command,
    }  # fmt: skip
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
    # The acceleration agent's socket: dockerd's own IPv4 connects go to it (watch.py).
    watch_connects: str | None = None


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
class KeeperSpec(Spec):
    """keeper.py: the running processes, the fds it inherits, and how to restart them."""

    NESTED: ClassVar[dict[str, type[Spec]]] = {
        "dockerd": Command, "containerd": Command, "rlk_info": ApiInfo,
        "auto_ports": AutoPortsSpec,
    }  # fmt: skip
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
    watch_connects: str | None  # a new dockerd's connects go to the agent too (watch.py)
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
    rlk_fd: int | None = None
    rlk_info: ApiInfo | None = None
    rlk_ports: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Every TCP listener in the namespace answers on the workspace's loopback (None: off).
    auto_ports: AutoPortsSpec | None = None
    ports_table: str | None = None  # where the published ports are listed (porttables.py)


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
    """portproxy.py: where the keeper's port manager listens, and the real docker-proxy."""

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
