"""What docker-up's processes say to each other while they run, as typed messages (stdlib
only). wire/specs.py holds what a program is started with; this, what it says and hears
afterwards: the namespace child's steps, the port proxy's request and the keeper's reply,
auto ports' hand-overs, and the background start's report. Each side builds and reads the
same classes, so a field renamed on one side is renamed on the other, mypy checks every read,
and a message that is not what it claims to be is refused where it arrives (SpecError)."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar, TypeVar

from dockerup.wire.specs import ChildSpec, Spec, SpecError

# -- the namespace child (namespace/child.py) and its parent (childlink.py) ------------------
# One JSON line per step: {"step": NAME, ...fields}. Parent: spec, mapped, go. Child:
# unshared, ready, verified, or error at any point.


@dataclasses.dataclass(frozen=True)
class Step(Spec):
    NAME: ClassVar[str]

    def line(self) -> bytes:
        return (json.dumps({"step": self.NAME, **dataclasses.asdict(self)}) + "\n").encode()


@dataclasses.dataclass(frozen=True)
class Start(Step):
    """What to do: the child may be started before docker-up has planned (early.py)."""

    NAME: ClassVar[str] = "spec"
    spec: ChildSpec


@dataclasses.dataclass(frozen=True)
class Unshared(Step):
    """The namespaces exist; the parent maps the ids. Times: the child's, for the timings."""

    NAME: ClassVar[str] = "unshared"
    t_started: float
    t_imported: float
    t_spec: float


@dataclasses.dataclass(frozen=True)
class Mapped(Step):
    NAME: ClassVar[str] = "mapped"


@dataclasses.dataclass(frozen=True)
class Rooted(Step):
    """userns keep-id: the child is root in its namespace, and dumpable again, so the
    network helper (the user's) may open its namespaces (linux.become_root)."""

    NAME: ClassVar[str] = "rooted"


@dataclasses.dataclass(frozen=True)
class Prepared(Step):
    """Mounts, sysctls, storage and iptables chosen, containerd started."""

    NAME: ClassVar[str] = "prepared"
    storage: str
    storage_reason: str
    iptables: str
    iptables_reason: str
    client_address: str  # "": published ports show clients' own addresses; else why not


@dataclasses.dataclass(frozen=True)
class Go(Step):
    """The network helper is up: check it, then exec dockerd."""

    NAME: ClassVar[str] = "go"


@dataclasses.dataclass(frozen=True)
class Verified(Step):
    NAME: ClassVar[str] = "verified"
    ok: bool
    problems: list[str]  # how the network differs from what the helper should have set
    watch: str  # "": dockerd's connects go to the acceleration agent (or are not asked to)


@dataclasses.dataclass(frozen=True)
class Failed(Step):
    NAME: ClassVar[str] = "error"
    error: str


class StepFailed(Exception):
    """The other side reported an error instead of the step asked for."""


STEPS: dict[str, type[Step]] = {
    k.NAME: k for k in (Start, Unshared, Mapped, Rooted, Prepared, Go, Verified, Failed)
}
T = TypeVar("T", bound=Step)


def read_step(line: str | bytes, kind: type[T]) -> T:
    """The step of this kind, or StepFailed (the sender's error), or SpecError."""
    try:
        doc = json.loads(line)
    except ValueError as e:
        raise SpecError(f"not a JSON line: {e}") from None
    if not isinstance(doc, dict) or doc.get("step") not in STEPS:
        raise SpecError(f"not a step: {str(line)[:80]!r}")
    msg = STEPS[doc.pop("step")].from_dict(doc)
    if isinstance(msg, Failed):
        raise StepFailed(msg.error)
    if not isinstance(msg, kind):
        raise SpecError(f"expected step {kind.NAME!r}, got {msg.NAME!r}")
    return msg


# -- the port proxy (ports/proxy.py) and the keeper's port manager (ports/manager.py) ---------


@dataclasses.dataclass(frozen=True)
class PortRequest(Spec):
    """One port dockerd publishes, as its docker-proxy was told (the namespace's side)."""

    proto: str  # "tcp" or "udp"
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int

    def label(self) -> str:
        return f"{self.host_ip}:{self.host_port}/{self.proto}"


@dataclasses.dataclass(frozen=True)
class PortReply(Spec):
    """The keeper's answer; the proxy exits with error when there is one."""

    error: str | None = None
    hand_over: bool = False  # connections come as fds on this socket (splice forwarder)
    udp_relay: bool = False  # the workspace's bound UDP socket comes next, as an fd
    rewrite_host_ip: str | None = None  # listen here instead (slirp4netns: the tap address)


def line(msg: Spec) -> bytes:
    return (msg.to_json() + "\n").encode()


# -- slirp4netns' API (ports.py's slirp forwarder): its own protocol, typed on our side ---------


@dataclasses.dataclass(frozen=True)
class HostFwd(Spec):
    """add_hostfwd's arguments: slirp4netns listens on host_addr:host_port in the workspace
    and delivers to guest_addr:guest_port in the namespace."""

    proto: str
    host_addr: str
    host_port: int
    guest_addr: str
    guest_port: int


@dataclasses.dataclass(frozen=True)
class HostFwdId(Spec):
    EXTRA_OK: ClassVar[bool] = True  # a newer slirp4netns may say more
    id: int


@dataclasses.dataclass(frozen=True)
class SlirpRefusal(Spec):
    EXTRA_OK: ClassVar[bool] = True
    desc: str = "(no description)"


# -- auto ports: the keeper (autoports/scanner.py) to its helper (autoports/inside.py) -------


@dataclasses.dataclass(frozen=True)
class Connect(Spec):
    """Sent with fds: TCP, the accepted client to connect to host:port inside; UDP, the
    workspace's bound socket and a stop socket, relayed to host:port until stop closes."""

    proto: str  # "tcp" or "udp"
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class OwnersQuery(Spec):
    """Which processes of the namespace hold these sockets (their inodes)? `id` pairs the
    answer with its question (a late answer to an earlier one is dropped)."""

    id: int
    inodes: list[int]


@dataclasses.dataclass(frozen=True)
class SocketOwner(Spec):
    inode: int
    pid: int
    command: str
    container: str | None
    own: bool


@dataclasses.dataclass(frozen=True)
class OwnersAnswer(Spec):
    id: int
    owners: list[SocketOwner]


# -- the background start (background.py): the detached docker-up's one report -------------


@dataclasses.dataclass(frozen=True)
class StartReport(Spec):
    docker_host: str = ""  # it runs and answers here
    already: bool = False  # another docker-up holds the lock
    error: str | None = None
    hint: str | None = None
    detail: str | None = None
