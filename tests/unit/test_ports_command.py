"""`docker-up ports`: the keeper's typed tables (what it publishes, what it auto-exposes or
refuses), the rows built from them and from dockerd's container list, and both renderings.
(The real stack: tests/integration/test_autoports.py::test_the_ports_command.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.keeper import background, instance
from dockerup.keeper.state import LazyRecord
from dockerup.ports.tables import AutoPort, AutoTable, PublishedPort, PublishedTable
from dockerup.results import PORTS_SCHEMA, envelope
from dockerup.verbs import ports as verb

from .given import paths
from .loopback import MakeAutoPorts, MakePortManager, free_ports, request, serve_ready

PUBLISHED = PublishedTable(
    1,
    [
        PublishedPort("tcp", "0.0.0.0", 8080, "172.17.0.2", 80),
        PublishedPort("tcp", "::", 8080, "172.17.0.2", 80),
        PublishedPort("udp", "127.0.0.1", 5353, "172.17.0.3", 53),
    ],
)
AUTO = AutoTable(
    1,
    auto=[
        AutoPort(3000, "tcp", 40, "httpd -f -p 3000", "c0ffee" * 10, ["127.0.0.1", "::1"]),
        AutoPort(4000, "tcp", 41, "python3 -m http.server 4000", None, ["127.0.0.1"]),
    ],
    refused=[
        AutoPort(2000, "tcp", 42, "nc -l -p 2000", "beef" * 16, reason="in use in the workspace"),
    ],
)
# GET /containers/json, as dockerd answers (the fields read, and one more).
API = [
    {"Id": "c0ffee" * 10, "Names": ["/web"], "Ports": [], "State": "running"},
    {
        "Id": "ab" * 32,
        "Names": ["/pub"],
        "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 443, "Type": "tcp"},  # exposed, not published
        ],
    },
]


def test_the_tables_survive_json_and_refuse_fields_they_do_not_know() -> None:
    assert PublishedTable.from_json(PUBLISHED.to_json()) == PUBLISHED
    assert AutoTable.from_json(AUTO.to_json()) == AUTO
    doc = json.loads(AUTO.to_json())
    doc["refused"][0]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        AutoTable.from_dict(doc)


def test_rows_one_per_port_with_owner_how_and_reason() -> None:
    got = verb.rows(PUBLISHED, AUTO, verb.containers_from_api(API))
    assert [(r.port, r.proto, r.how, r.owner, r.reason) for r in got] == [
        (2000, "tcp", "auto", "beefbeefbeef", "in use in the workspace"),  # gone from dockerd
        (3000, "tcp", "auto", "web", None),
        (4000, "tcp", "auto", "python3 -m http.server 4000", None),
        (5353, "udp", "published", "172.17.0.3:53", None),  # no container answers for it
        (8080, "tcp", "published", "pub", None),
    ]
    by_port = {r.port: r for r in got}
    assert by_port[8080].addresses == ["0.0.0.0", "::"]  # one row for both families
    assert (by_port[8080].container, by_port[8080].target) == ("pub", "172.17.0.2:80")
    assert (by_port[3000].container, by_port[3000].pid) == ("web", 40)
    assert by_port[4000].container is None
    assert by_port[2000].addresses == []


def test_without_tables_or_dockerd_there_are_no_rows_and_no_names() -> None:
    assert verb.rows(None, None, []) == []
    (row,) = verb.rows(None, AutoTable(1, AUTO.auto[:1], []), [])
    assert row.owner == "c0ffeec0ffee"


def test_a_table_of_another_version_or_shape_is_an_error_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    assert verb.read_table(path, AutoTable) is None  # none written: nothing to list
    path.write_text(json.dumps(dataclasses.asdict(AUTO) | {"version": 2}))
    with pytest.raises(DockerUpError, match="version 2") as e:
        verb.read_table(path, AutoTable)
    assert "docker-up stop" in (e.value.hint or "")
    path.write_text(json.dumps({"version": 1, "rows": []}))
    with pytest.raises(DockerUpError, match="not a table"):
        verb.read_table(path, PublishedTable)


def test_not_running_is_an_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instance, "check_runtime", lambda _p: None)
    monkeypatch.setattr(instance, "is_locked", lambda _p: False)
    with pytest.raises(DockerUpError, match="not running") as e:
        verb.ports(paths())
    assert e.value.hint == "start it: docker-up -d"
    monkeypatch.setattr(instance, "is_locked", lambda _p: True)  # the lazy holder
    monkeypatch.setattr(instance, "read_state", lambda _p: None)
    monkeypatch.setattr(background, "read_lazy", lambda _p: LazyRecord(5, None))
    with pytest.raises(DockerUpError, match="socket activation"):
        verb.ports(paths())


def result() -> verb.Ports:
    return verb.Ports(verb.rows(PUBLISHED, AUTO, verb.containers_from_api(API)))


def test_json_is_the_versioned_envelope() -> None:
    doc = envelope(result())
    assert (doc["version"], doc["kind"], doc["schema"]) == (1, "ports", PORTS_SCHEMA)
    assert set(doc["ports"][0]) == {
        "port",
        "proto",
        "addresses",
        "how",
        "owner",
        "container",
        "pid",
        "target",
        "reason",
    }
    assert doc["ports"][0]["reason"] == "in use in the workspace"
    json.dumps(doc)


def test_the_table_names_refusals_and_their_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockerup.cli.render import emit

    monkeypatch.setenv("COLUMNS", "160")
    assert emit(result()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PORT", "PROTO", "ADDRESS", "HOW", "OWNER", "NOTE"]
    refused = next(line for line in lines if line.split()[0] == "2000")
    assert "refused" in refused and "in use in the workspace" in refused
    published = next(line for line in lines if line.split()[0] == "8080")
    assert "0.0.0.0, ::" in published and "pub" in published and "172.17.0.2:80" in published
    assert emit(verb.Ports([])) == 0
    assert "no port" in capsys.readouterr().out


# -- the keeper writes them ----------------------------------------------------------------


def test_the_port_manager_lists_what_it_publishes(
    tmp_path: Path, port_manager: MakePortManager
) -> None:
    table = tmp_path / "published-ports.json"
    m, address, _ = port_manager(table=str(table))
    (port,) = free_ports(1)
    proxy = request(address, host_port=port)
    serve_ready(m)
    assert PublishedTable.from_json(table.read_text()).ports == [
        PublishedPort("tcp", "127.0.0.1", port, "172.17.0.2", 80)
    ]
    assert oct(table.stat().st_mode & 0o777) == "0o600"
    proxy.close()
    serve_ready(m)  # the proxy went: so did the port
    assert PublishedTable.from_json(table.read_text()).ports == []


def test_auto_ports_writes_its_typed_table(auto_ports: MakeAutoPorts) -> None:
    from dockerup.autoports.rules import Listener

    auto = auto_ports(cap=1)
    a, b = sorted(free_ports(2))
    auto.inside = [Listener("127.0.0.1", a, 1), Listener("127.0.0.1", b, 2)]
    auto.poll()
    table = AutoTable.from_json(Path(auto.spec.table).read_text())
    assert [(x.port, x.addresses) for x in table.auto] == [(a, ["127.0.0.1"])]
    assert [x.port for x in table.refused] == [b]
    assert "cap of 1" in table.refused[0].reason


def test_the_readme_names_every_field() -> None:
    import re

    import dockerup

    readme = Path(dockerup.__file__).parent.parent / "README.md"
    if not readme.exists():
        pytest.skip("an installed copy: no README beside it")
    text = readme.read_text().split("`ports --json` prints", 1)[1].split("\n\n", 1)[0]
    fields = {f.name for f in dataclasses.fields(verb.PortRow)}
    assert fields <= set(re.findall(r"`(\w+)`", text))
