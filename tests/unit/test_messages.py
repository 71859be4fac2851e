"""What docker-up's processes say to each other (wire/messages.py) and the typed
reading under it (specs.Spec): every message survives its wire, and one that is not what
it claims to be is refused where it arrives, by name."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from dockerup import lean as programs
from dockerup.plan.build import build_plan
from dockerup.ports.tables import PublishedPort, PublishedTable
from dockerup.settings.config import Config
from dockerup.wire import messages as m
from dockerup.wire.specs import Command, KeeperSpec, PortSpec, Spec, SpecError

from .given import facts, paths

STEPS: list[m.Step] = [
    m.Unshared(1.5, 2.5, 3.0),
    m.Mapped(),
    m.Go(),
    m.Verified(True, [], ""),
    m.Prepared("overlay2", "overlay mounts", "nft", "it works", ""),
]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: type(s).__name__)
def test_each_step_survives_its_line(step: m.Step) -> None:
    line = step.line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert m.read_step(line, type(step)) == step


def test_the_spec_step_carries_the_child_spec_typed() -> None:
    spec = build_plan(Config(), facts(), paths()).child
    got = m.read_step(m.Start(spec).line(), m.Start).spec
    assert got == spec and isinstance(got.dockerd, Command)


def test_a_step_out_of_order_or_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(SpecError, match="expected step 'verified', got 'go'"):
        m.read_step(m.Go().line(), m.Verified)
    with pytest.raises(SpecError, match=r"Verified\.ok: expected bool"):
        m.read_step(b'{"step": "verified", "ok": "yes", "problems": [], "watch": ""}', m.Verified)
    with pytest.raises(SpecError, match=r"Verified\.problems"):
        m.read_step(b'{"step": "verified", "ok": true, "problems": [1], "watch": ""}', m.Verified)
    with pytest.raises(SpecError, match="unknown fields"):
        m.read_step(b'{"step": "mapped", "extra": 1}', m.Mapped)
    for garbage in (b"", b"[1]", b'{"step": "launch"}', b"{not json"):
        with pytest.raises(SpecError):
            m.read_step(garbage, m.Go)


def test_the_childs_error_is_its_own_exception() -> None:
    with pytest.raises(m.StepFailed, match="mount: EPERM"):
        m.read_step(m.Failed("mount: EPERM").line(), m.Prepared)


def test_port_messages_survive_and_refuse_wrong_types() -> None:
    req = m.PortRequest("tcp", "0.0.0.0", 8080, "172.17.0.2", 80)
    assert m.PortRequest.from_json(m.line(req)) == req
    for reply in (
        m.PortReply(),
        m.PortReply(error="in use"),
        m.PortReply(hand_over=True),
        m.PortReply(udp_relay=True),
        m.PortReply(rewrite_host_ip="0.0.0.0"),
    ):
        assert m.PortReply.from_json(m.line(reply)) == reply
    doc = dataclasses.asdict(req)
    with pytest.raises(SpecError, match="host_port: expected int, got str"):
        m.PortRequest.from_dict(doc | {"host_port": "8080"})
    with pytest.raises(SpecError, match="missing"):
        m.PortRequest.from_dict({k: v for k, v in doc.items() if k != "proto"})
    with pytest.raises(SpecError, match="rewrite_host_ip"):
        m.PortReply.from_dict({"rewrite_host_ip": 0})
    assert m.Connect.from_json(m.Connect("udp", "127.0.0.1", 53).to_json()).proto == "udp"


def test_nested_specs_are_built_from_their_annotations() -> None:
    table = PublishedTable(1, [PublishedPort("tcp", "0.0.0.0", 1, "10.0.0.2", 2)])
    assert PublishedTable.from_json(table.to_json()) == table
    doc = {"version": 1, "ports": [{"proto": "tcp"}]}
    with pytest.raises(SpecError, match="PublishedPort"):
        PublishedTable.from_dict(doc)


def test_a_keepers_port_table_is_typed_across_the_exec() -> None:
    """The RootlessKit API's forwards, handed from the CLI to the keeper in its spec."""
    spec = plan_keeper_spec({"3": PortSpec("tcp4", "0.0.0.0", 8080, "127.0.0.1", 8080)})
    back = KeeperSpec.from_json(spec.to_json())
    assert back == spec and isinstance(back.rlk_ports["3"], PortSpec)


def plan_keeper_spec(ports: dict[str, PortSpec]) -> KeeperSpec:
    cmd = Command(["/usr/sbin/dockerd"], {})
    return KeeperSpec(
        dockerd_pid=1,
        dockerd=cmd,
        containerd=cmd,
        dockerd_log="/l",
        net_pid=None,
        net_name="slirp4netns",
        net_argv=None,
        net_ready="",
        net_log="/l",
        net_api="/a",
        exit_fd=None,
        ns_fds={"net": 5},
        lock_fd=3,
        listen_fd=None,
        ports_fd=None,
        accel_fd=None,
        allow_host_loopback=False,
        watch_connects=None,
        port_forwarder="splice",
        socket="/s",
        pidfile="/p",
        containerd_pidfile="/c",
        state_file="/st",
        log_file="/l",
        log_max=1,
        echo=False,
        stop_timeout=1.0,
        start_timeout=2,
        remove=[],
        rlk_ports=ports,
    )


def test_plain_types_are_json_types() -> None:
    """A bool is no int, an int is a float (JSON has one number), None only where declared."""

    @dataclasses.dataclass(frozen=True)
    class Sample(Spec):
        n: int
        x: float
        name: str | None

    assert Sample.from_dict({"n": 1, "x": 2, "name": None}) == Sample(1, 2.0, None)
    for wrong in ({"n": True}, {"x": "1"}, {"name": 3}, {"n": None}):
        with pytest.raises(SpecError):
            Sample.from_dict({"n": 1, "x": 2.0, "name": "a"} | wrong)


# Where docker-up reads JSON: its own documents only through Spec.from_json (typed, checked);
# the rest are other programs' documents, each read by a parser of its own.
OTHERS_JSON = {
    "wire/specs.py": "Spec.from_json itself",
    "wire/messages.py": "read_step: the step name, then Spec.from_dict",
    "accel/ociruntime.py": "the OCI bundle's config.json that runc is given",
    "ports/rlkapi.py": "dockerd's POST /v1/ports body, then parse_port",
    "ports/manager.py": "slirp4netns' API reply",
}


def test_json_is_read_into_typed_documents_only() -> None:
    pkg = Path(programs.__file__).parent
    readers = set()
    for path in pkg.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "loads")
                and isinstance(node.value, ast.Name)
                and node.value.id == "json"
            ):
                readers.add(str(path.relative_to(pkg)))
    assert readers == set(OTHERS_JSON)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (b'{"return": {"id": 5}}', 5),
        (b'{"error": {"desc": "bad request: port in use"}}', "port in use"),
        (b'{"return": {"id": "5"}}', SpecError),
        (b"[]", SpecError),
        (b"{not json", ValueError),
    ],
)
def test_slirp4netns_answers_are_read_typed(tmp_path: Path, answer: bytes, outcome: object) -> None:
    """The slirp forwarder's calls (ports.slirp_api) against a stand-in API socket."""
    import socket
    import threading

    from dockerup.ports.manager import PortError, slirp_api

    path = str(tmp_path / "api.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    asked: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            asked.append(data)
            conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    fwd = m.HostFwd("tcp", "127.0.0.1", 8080, "10.0.2.100", 8080)
    try:
        if isinstance(outcome, int):
            assert slirp_api(path, "add_hostfwd", fwd).id == outcome
        elif isinstance(outcome, str):
            with pytest.raises(PortError, match=outcome):
                slirp_api(path, "add_hostfwd", fwd)
        else:
            with pytest.raises(outcome):  # type: ignore[call-overload]
                slirp_api(path, "add_hostfwd", fwd)
    finally:
        t.join(5)
        server.close()
    assert json.loads(asked[0]) == {"execute": "add_hostfwd", "arguments": dataclasses.asdict(fwd)}
