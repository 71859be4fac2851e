"""`status --json`: a documented, versioned document with fields chosen on purpose, not
the state file; timings and identity records only with --debug."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import dockerup
from dockerup import instance
from dockerup.programs.procid import ProcId
from dockerup.results import STATUS_SCHEMA, Status, envelope
from dockerup.verbs import running

from .test_plan import paths

RUNNING = instance.Running(
    pid=10,
    dockerd_pid=11,
    net_pid=12,
    socket="/run/u/docker-up/docker.sock",
    docker_host="unix:///run/u/docker-up/docker.sock",
    mode="rootless",
    mode_reason="auto: uid 1001 is not root",
    data_root="/home/a/.local/share/docker-up/data",
    storage="overlay2",
    storage_reason="overlay mounts",
    iptables="legacy",
    iptables_reason="legacy works",
    net="slirp4netns",
    net_options=["sandbox", "mtu=65520"],
    mtu=65520,
    started_at=1000.0,
    restarts=2,
    ipv6="on (auto): the workspace has an IPv6 default route",
    engine="dockerd 20.10.24, containerd 1.6.20",
    timings={"total": 0.45},
    procs={"keeper": ProcId(pid=10, start=5, exe="/usr/bin/python3")},
)

PUBLISHED = {
    "schema",
    "running",
    "state",
    "lazy",
    "socket",
    "docker_host",
    "pid",
    "dockerd_pid",
    "net_pid",
    "answering",
    "mode",
    "mode_reason",
    "net",
    "net_options",
    "mtu",
    "ipv6",
    "ipv6_reason",
    "storage",
    "storage_reason",
    "data_root",
    "iptables",
    "iptables_reason",
    "engine",
    "cgroup_driver",
    "cgroup_limits",
    "cgroup_reason",
    "cgroup_fix",
    "userns",
    "started_at",
    "uptime_s",
    "restarts",
}


def running_status(monkeypatch: pytest.MonkeyPatch, debug: bool = False) -> Status:
    # As read back from the file.
    state = instance.Running.from_json(json.dumps(dataclasses.asdict(RUNNING)))
    monkeypatch.setattr(instance, "check_runtime", lambda _p: None)
    monkeypatch.setattr(instance, "read_state", lambda _p: state)
    monkeypatch.setattr(instance, "is_locked", lambda _p: True)
    monkeypatch.setattr(running.wire, "ping", lambda _s: True)
    monkeypatch.setattr(running.time, "time", lambda: 1060.0)
    return running.status(paths(), debug=debug)


def test_the_document_has_the_published_fields_only(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = envelope(running_status(monkeypatch))
    assert (doc.pop("version"), doc.pop("kind")) == (1, "status")
    assert set(doc) == PUBLISHED  # no timings, no identity records, no raw state
    assert doc["schema"] == STATUS_SCHEMA == "docker-up.status/1"
    assert (doc["state"], doc["running"], doc["answering"]) == ("running", True, True)
    assert (doc["pid"], doc["dockerd_pid"], doc["net_pid"]) == (10, 11, 12)
    assert (doc["ipv6"], doc["uptime_s"], doc["restarts"]) == (True, 60.0, 2)
    assert doc["engine"] == "dockerd 20.10.24, containerd 1.6.20"
    json.dumps(doc)


def test_debug_adds_the_timings_and_identity_records(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = envelope(running_status(monkeypatch, debug=True))
    assert set(doc) - PUBLISHED == {"version", "kind", "debug"}
    procs = {"keeper": {"pid": 10, "start": 5, "exe": "/usr/bin/python3"}}
    assert doc["debug"] == {"timings": RUNNING.timings, "procs": procs}


def test_ipv6_off_is_false_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    d = running.daemon_of(dataclasses.replace(RUNNING, ipv6="off (--no-ipv6)"))
    assert (d.ipv6, d.ipv6_reason) == (False, "off (--no-ipv6)")


def read_back(tmp_path: Path, doc: object) -> instance.Running | None:
    """What every reader of state.json gets for a file holding doc."""
    p = dataclasses.replace(paths(), runtime=tmp_path)
    p.state_file.write_text(json.dumps(doc))
    return instance.read_state(p)


def test_a_state_file_of_an_older_docker_up_still_reads(tmp_path: Path) -> None:
    """Fields added later (engine, ipv6) are empty, not a KeyError."""
    doc = dataclasses.asdict(RUNNING)
    for late in ("engine", "ipv6", "timings", "procs"):
        del doc[late]
    state = read_back(tmp_path, doc)
    assert state is not None
    d = running.daemon_of(state)
    assert (d.engine, d.ipv6, d.ipv6_reason) == ("", False, "")


def test_a_state_file_that_is_no_record_reads_as_none(tmp_path: Path) -> None:
    """Typed on the way in: a field of the wrong type, a missing one, or no object at all is
    no running daemon (never a KeyError or a traceback further on); a newer field is
    ignored."""
    doc = dataclasses.asdict(RUNNING)
    assert read_back(tmp_path, doc) == RUNNING
    assert read_back(tmp_path, doc | {"added_later": 1}) == RUNNING
    assert read_back(tmp_path, doc | {"dockerd_pid": "11"}) is None
    assert read_back(tmp_path, doc | {"mtu": True}) is None
    assert read_back(tmp_path, doc | {"net_options": [1]}) is None
    assert read_back(tmp_path, doc | {"procs": {"keeper": {"pid": 10}}}) is None
    assert read_back(tmp_path, {k: v for k, v in doc.items() if k != "mode"}) is None
    assert read_back(tmp_path, [doc]) is None


def test_read_state_of_garbage_is_none(tmp_path: Path) -> None:
    p = dataclasses.replace(paths(), runtime=tmp_path)
    assert instance.read_state(p) is None  # no file
    for text in ("", "{", "[]", '{"pid": 1}'):
        p.state_file.write_text(text)
        assert instance.read_state(p) is None, text


def test_stopped_and_lazy() -> None:
    stopped = envelope(Status(False, "/s", "unix:///s"))
    assert stopped == {
        "version": 1,
        "kind": "status",
        "schema": STATUS_SCHEMA,
        "running": False,
        "state": "stopped",
        "lazy": False,
        "socket": "/s",
        "docker_host": "unix:///s",
    }
    lazy = envelope(Status(True, "/s", "unix:///s", lazy=True, pid=7))
    assert (lazy["state"], lazy["lazy"], lazy["pid"]) == ("lazy", True, 7)
    assert "dockerd_pid" not in lazy


def test_the_readme_documents_every_field() -> None:
    readme = Path(dockerup.__file__).parent.parent / "README.md"
    if not readme.exists():
        pytest.skip("an installed copy: no README beside it")
    table = readme.read_text().split("`status --json` prints one document", 1)[1]
    rows = [line for line in table.splitlines()[:40] if line.startswith("| `")]
    named = {n for row in rows for n in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert named == PUBLISHED | {"debug"}


def test_the_text_form_reads_the_typed_fields(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dockerup.cli.render import emit

    assert emit(running_status(monkeypatch)) == 0
    out = capsys.readouterr().out
    assert "rootless (auto: uid 1001 is not root)" in out
    assert "dockerd 20.10.24, containerd 1.6.20" in out
    assert "docker-up 10, dockerd 11, slirp4netns 12" in out
