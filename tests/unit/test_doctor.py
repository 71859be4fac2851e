"""Every doctor check on given facts: ok, warn and fail where each exists."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from dockerup import doctor, results
from dockerup.accel.support import support_problems
from dockerup.doctor import DoctorFacts, Health
from dockerup.doctor.probe import EngineInfo
from dockerup.host.facts import IdRange, TunAccess
from dockerup.results import Doctor, envelope
from dockerup.verbs.running import daemon_of

from .given import BINS, CONTAINERD_21, DEBIAN13, DOCKERD_28, RUNNING, facts, pasta_facts, paths

RUNC_115 = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nlibseccomp: 2.5.4"
ACTIONS = "kill_process kill_thread trap errno user_notif trace log allow"

PASTA_HOST = pasta_facts()
# What facts.with_accel finds, from raw probe outputs: a kernel without user notification,
# and a runc too old to hand over a listener.
NO_NOTIF = tuple(support_problems("kill_process errno allow", RUNC_115, True))
OLD_RUNC = tuple(support_problems(ACTIONS, "runc version 1.0.3\nlibseccomp: 2.5.4", True))

VERSIONS = {
    "dockerd": "Docker version 20.10.24+dfsg1, build 5d6db84",
    "containerd": "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1",
    "runc": "runc version 1.1.5+ds1",
    "docker": "Docker version 28.2.2, build e6534b4",
    "slirp4netns": "slirp4netns version 1.2.0\ncommit: 656041d",
    "pasta": "pasta unknown version",
}


SOCKET = str(paths().socket)
STOPPED = results.Status(False, SOCKET, paths().docker_host)  # docker-up's own `status`
LAZY = replace(STOPPED, running=True, lazy=True, pid=7)  # socket activation: nothing runs yet
ENGINE = EngineInfo("20.10.24", 2, "overlay2")


def up(answering: bool = True, **daemon: Any) -> results.Status:
    """`status` of a running docker-up (pid 7, 2 restarts; its record otherwise RUNNING's)."""
    d = daemon_of(replace(RUNNING, pid=7, **daemon))
    return replace(STOPPED, running=True, pid=7, answering=answering, daemon=d)


# A machine whose limits all apply (Debian 13 after a login), and the same on cgroup v1.
V1_HOST = facts(
    binaries={
        **BINS,
        "docker": "/usr/bin/docker",
        "busctl": "/usr/bin/busctl",
        "bindfs": "/usr/bin/bindfs",
    }
)
V2_HOST = replace(V1_HOST, cgroups=DEBIAN13)


def good(**kw: Any) -> DoctorFacts:
    base = DoctorFacts(
        host=V2_HOST,
        paths=paths(),
        sysctls={"user.max_user_namespaces": "96365"},
        seccomp_actions="kill_process kill_thread trap errno user_notif trace log allow",
        netns_ok=True,
        netns_error="",
        versions=dict(VERSIONS),
        setuid={"newuidmap": True, "newgidmap": True},
        all_subuid="alice:100000:65536\nbob:165536:65536\n",
        all_subgid="alice:200000:65536\n",
        iptables={"nft": "", "legacy": "can't lock"},
        overlay_error=None,
        fuse_ok=True,
        free_bytes=50 * 2**30,
        docker_host_env="",
        other_daemon="",
        stale_socket=False,
        docker_up=STOPPED,
    )
    return replace(base, **kw)


def check(check_id: str, f: DoctorFacts) -> doctor.Finding:
    (c,) = [c for c in doctor.CHECKS if c.id == check_id]
    return c.run(f)


def test_a_good_machine_is_all_ok() -> None:
    report = doctor.run_checks(good())
    bad = [(c.id, r) for c, r in report.results if r.status not in (Health.ok, Health.skip)]
    assert bad == []
    assert not report.failed


CASES = [
    # id, facts change, status, words in detail or hint
    (
        "kernel.userns",
        {"sysctls": {"user.max_user_namespaces": "0"}},
        Health.fail,
        "max_user_namespaces=28633",
    ),
    (
        "kernel.userns",
        {"sysctls": {"kernel.unprivileged_userns_clone": "0"}},
        Health.fail,
        "unprivileged_userns_clone=1",
    ),
    (
        "kernel.userns",
        {"sysctls": {"kernel.apparmor_restrict_unprivileged_userns": "1"}},
        Health.fail,
        "apparmor_restrict_unprivileged_userns=0",
    ),
    (
        "kernel.netns",
        {"netns_ok": False, "netns_error": "Operation not permitted"},
        Health.fail,
        "seccomp=unconfined",
    ),
    ("kernel.seccomp", {"seccomp_actions": ""}, Health.warn, "without seccomp"),
    (
        "tun.access",
        {"host": facts(tun=TunAccess(True, False, "Permission denied"))},
        Health.fail,
        "chmod 0666 /dev/net/tun",
    ),
    (
        "tun.access",
        {"host": facts(tun=TunAccess(False, False, "missing"))},
        Health.fail,
        "mknod /dev/net/tun c 10 200",
    ),
    ("ids.subuid", {"host": facts(subuid=())}, Health.fail, "usermod --add-subuids 100000-165535"),
    ("ids.subgid", {"host": facts(subgid=())}, Health.fail, "/etc/subgid"),
    (
        "ids.subuid",
        {"all_subuid": "alice:100000:65536\nbob:120000:65536\n"},
        Health.fail,
        "overlaps bob",
    ),
    (
        "ids.subuid",
        {"host": facts(subuid=(IdRange(100000, 1000),))},
        Health.warn,
        "containers get uids 0-1000 only",
    ),
    ("ids.tools", {"setuid": {"newuidmap": False, "newgidmap": True}}, Health.fail, "chmod u+s"),
    # A missing program is the programs check's finding, with the one fix for all of them;
    # the checks that need it say so in a line (see test_a_missing_program_is_said_once).
    (
        "ids.tools",
        {"host": facts(binaries={**BINS, "newuidmap": None})},
        Health.skip,
        "newuidmap not installed (see programs)",
    ),
    (
        "programs",
        {"host": facts(binaries={**BINS, "dockerd": None})},
        Health.fail,
        "apt-get install docker.io",
    ),
    (
        "programs",
        {"host": facts(binaries={**BINS, "newuidmap": None})},
        Health.fail,
        "apt-get install uidmap",
    ),
    (
        "net.slirp4netns",
        {"host": facts(binaries={**BINS, "slirp4netns": None})},
        Health.skip,
        "slirp4netns not installed (see programs)",
    ),
    (
        "programs",
        {"host": facts(binaries={**BINS, "slirp4netns": None})},
        Health.fail,
        "apt-get install slirp4netns",
    ),
    (
        "net.slirp4netns",
        {"host": facts(slirp_help="-c, --configure\n--exit-fd\n--ready-fd\n")},
        Health.warn,
        "lacks api-socket, sandbox, seccomp",
    ),
    ("net.pasta", {}, Health.skip, "apt-get install passt"),
    ("net.pasta", {"net": "pasta"}, Health.skip, "pasta not installed (see programs)"),
    ("programs", {"net": "pasta"}, Health.fail, "apt-get install passt"),
    ("net.pasta", {"net": "pasta", "host": PASTA_HOST}, Health.ok, "passt 0.0~git20230309"),
    (
        "net.pasta",
        {"net": "pasta", "host": replace(PASTA_HOST, default_route=False)},
        Health.fail,
        "default route in the workspace",
    ),
    (
        "net.pasta",
        {"host": replace(PASTA_HOST, pasta_help="--pid\n")},
        Health.warn,
        "lacks --config-net",
    ),
    ("net.accel", {"net_accel": True}, Health.ok, "containers on, dockerd's own auto"),
    ("net.accel", {"net_accel": True}, Health.ok, "supported"),
    (
        "net.accel",
        {"net_accel": True, "host": facts(accel_problems=NO_NOTIF)},
        Health.fail,
        "unsupported here",
    ),
    (
        "net.accel",
        {"daemon_net_accel": True, "host": facts(accel_problems=NO_NOTIF)},
        Health.fail,
        "dockerd's own on; unsupported here",
    ),
    (
        "net.accel",
        {"net_accel": True, "host": facts(accel_problems=NO_NOTIF)},
        Health.fail,
        "drop --net-accel",
    ),
    (
        "net.accel",
        {"host": facts(accel_problems=OLD_RUNC)},
        Health.skip,
        "dockerd's own auto (on where supported); unsupported here",
    ),
    ("net.ipv6", {}, Health.ok, "off: the workspace has no IPv6 (no ::1 on lo)"),
    (
        "net.ipv6",
        {
            "host": facts(
                binaries={**BINS, "ip": "/usr/sbin/ip"},
                ipv6_loopback=True,
                ipv6_gateways=("fd79::2",),
            )
        },
        Health.ok,
        "on (auto): the workspace has an IPv6 default route",
    ),
    (
        "net.ipv6",
        {
            "host": facts(
                binaries={**BINS, "ip": "/usr/sbin/ip"},
                ipv6_loopback=True,
                ipv6_gateways=("fd00::1",),
                ipv6_overlap=True,
            )
        },
        Health.warn,
        "fd00::/64 network is hidden from containers",
    ),
    ("net.ipv6", {"ipv6": True}, Health.fail, "sysctl net.ipv6.conf.all.disable_ipv6=0"),
    (
        "net.driver",
        {"net": "pasta", "docker_up": up(net="slirp4netns")},
        Health.ok,
        "pasta (the running docker-up uses slirp4netns)",
    ),
    (
        "docker.dockerd",
        {"host": facts(dockerd_version="Docker version 19.03.1, b")},
        Health.fail,
        "needs 20.10",
    ),
    ("docker.dockerd", {"host": facts(dockerd_version="weird")}, Health.warn, "cannot read"),
    (
        "docker.dockerd",
        {"host": facts(dockerd_version=DOCKERD_28, containerd_version=CONTAINERD_21)},
        Health.ok,
        "dockerd 28.5.2, containerd 2.1.9 (/usr/sbin/dockerd); docker-up: serves a RootlessKit API",
    ),
    ("docker.dockerd", {}, Health.ok, "dockerd 20.10.24, containerd 1.6.20"),
    (
        "docker.runtime",
        {"host": facts(binaries={**BINS, "runc": None})},
        Health.skip,
        "runc not installed (see programs)",
    ),
    (
        "programs",
        {"host": facts(binaries={**BINS, "runc": None})},
        Health.fail,
        "apt-get install runc",
    ),
    ("docker.cli", {}, Health.warn, "no docker client"),
    (
        "iptables",
        {"iptables": {"nft": "no nf_tables", "legacy": "lock"}},
        Health.fail,
        "nft: no nf_tables",
    ),
    ("storage", {"overlay_error": "EPERM"}, Health.warn, "vfs"),
    ("cgroups", {"host": V1_HOST}, Health.warn, "cgroup v1"),
    ("views", {"fuse_ok": False}, Health.warn, "chmod 0666 /dev/fuse"),
    ("views", {"host": replace(V2_HOST, binaries=BINS)}, Health.warn, "apt-get install bindfs"),
    ("views", {"userns": "keep-id"}, Health.skip, "not needed"),
    (
        "cgroups",
        {"host": replace(V2_HOST, cgroups=replace(DEBIAN13, bus="", bus_error="refused"))},
        Health.warn,
        "apt-get install dbus-user-session",
    ),
    (
        "cgroups",
        {"host": replace(V2_HOST, cgroups=replace(DEBIAN13, manager_controllers=("pids",)))},
        Health.warn,
        "no memory or cpu limits",
    ),
    ("runtime.dir", {"runtime_foreign": True}, Health.fail, "not a directory owned by you"),
    ("runtime.dir", {"runtime_writable": False}, Health.fail, "set XDG_RUNTIME_DIR"),
    (
        "runtime.socket",
        {"paths": paths({"XDG_RUNTIME_DIR": "/" + "x" * 120})},
        Health.fail,
        "longer than 107 bytes",
    ),
    ("runtime.disk", {"free_bytes": 2**29}, Health.fail, "0.5 GiB"),
    ("runtime.disk", {"free_bytes": 3 * 2**30}, Health.warn, "3.0 GiB"),
    (
        "runtime.daemon",
        {"other_daemon": "unix:///run/docker.sock", "docker_host_env": "unix:///run/docker.sock"},
        Health.warn,
        "unset DOCKER_HOST",
    ),
    ("runtime.daemon", {"stale_socket": True}, Health.warn, "stale socket"),
    ("runtime.docker-up", {}, Health.ok, "not running"),
    ("runtime.docker-up", {"docker_up": None}, Health.ok, "not running"),  # not probed
    (
        "runtime.docker-up",
        {"docker_up": up(answering=False)},
        Health.warn,
        "running (pid 7) but the API does not answer",
    ),
    ("runtime.docker-up", {"docker_up": LAZY}, Health.warn, "does not answer"),
    (
        "runtime.docker-up",
        {"docker_up": up(), "engine": ENGINE},
        Health.ok,
        "running (pid 7), the API answers (Docker 20.10.24, 2 containers running, overlay2), "
        "2 restarts",
    ),
    (
        "runtime.docker-up",
        {"docker_up": up()},
        Health.ok,
        "running (pid 7), the API answers, 2 restarts",
    ),  # the daemon's own account failed
]


@pytest.mark.parametrize(("check_id", "change", "status", "words"), CASES)
def test_check(check_id: str, change: dict[str, Any], status: Health, words: str) -> None:
    f = good(**change)
    if check_id == "docker.cli":
        f = replace(f, host=facts())  # no docker client among the binaries
    r = check(check_id, f)
    assert r.status is status, r
    assert words in r.detail + " " + r.hint


def test_net_driver_names_the_running_daemons_only_where_it_differs() -> None:
    for own, said in (
        (up(net="slirp4netns"), "pasta (the running docker-up uses slirp4netns)"),
        (up(net="pasta"), "pasta"),
        (LAZY, "pasta"),
        (STOPPED, "pasta"),
        (None, "pasta"),
    ):
        assert check("net.driver", good(net="pasta", docker_up=own)).detail == said


class FakeClient:
    """The docker SDK's client, as probe_engine uses it: what /version and /info return."""

    answers: ClassVar[tuple[object, object]] = ({}, {})

    def __init__(self, base_url: str, timeout: int) -> None:
        assert base_url == "unix:///run/u/docker.sock"

    def version(self) -> object:
        return self.answers[0]

    def info(self) -> object:
        return self.answers[1]

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("version", "info", "engine"),
    [
        (
            {"Version": "28.5.2"},
            {"ContainersRunning": 3, "Driver": "overlay2"},
            EngineInfo("28.5.2", 3, "overlay2"),
        ),
        ({}, {}, EngineInfo("?", 0, "?")),  # an engine that says little
        ({"Version": 28}, {}, None),  # not the Engine API's documents: no account at all
        ({}, {"ContainersRunning": "3"}, None),
        ({}, {"ContainersRunning": True}, None),
        ([], {}, None),
    ],
)
def test_the_engines_account_is_typed_on_the_way_in(
    monkeypatch: pytest.MonkeyPatch, version: object, info: object, engine: EngineInfo | None
) -> None:
    from dockerup.doctor.probe import probe_engine

    monkeypatch.setattr(FakeClient, "answers", (version, info))
    monkeypatch.setitem(sys.modules, "docker", SimpleNamespace(DockerClient=FakeClient))
    assert probe_engine("unix:///run/u/docker.sock") == engine


def test_an_engine_that_does_not_answer_gives_no_account(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockerup.doctor.probe import probe_engine

    def refused(**_kw: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setitem(sys.modules, "docker", SimpleNamespace(DockerClient=refused))
    assert probe_engine("unix:///run/u/docker.sock") is None


def test_every_check_has_a_case_or_is_informational() -> None:
    covered = {c[0] for c in CASES} | {"mode", "kernel.apparmor"}  # says, never warns
    assert {c.id for c in doctor.CHECKS} <= covered


def test_checks_that_do_not_apply_to_root_are_skipped() -> None:
    root = good(host=facts(uid=0, initial_userns=True, net_admin=True, subuid=()))
    assert check("ids.subuid", root).status is Health.skip
    assert check("kernel.userns", root).status is Health.skip
    assert "privileged" in check("mode", root).detail


def test_report_json_is_versioned() -> None:
    doc = envelope(Doctor(doctor.run_checks(good(netns_ok=False))))
    assert doc["version"] == 1 and doc["kind"] == "doctor" and doc["ok"] is False
    json.dumps(doc)
    (netns,) = [c for c in doc["checks"] if c["id"] == "kernel.netns"]  # type: ignore[attr-defined]
    assert netns["status"] == "fail" and netns["fatal"] is True


def test_fixes_as_root() -> None:
    fixes = doctor.plan_fixes(0o600, ("carol", 1002), "alice:100000:65536\n", "", ["slirp4netns"])
    argvs = [f.argv for f in fixes]
    assert ("apt-get", "install", "-y", "-q", "slirp4netns") in argvs
    assert ("chmod", "0666", "/dev/net/tun") in argvs
    assert ("usermod", "--add-subuids", "165536-231071", "carol") in argvs
    assert ("usermod", "--add-subgids", "100000-165535", "carol") in argvs
    assert doctor.plan_fixes(0o666, ("alice", 1001), "alice:1:65536", "1001:1:65536", []) == []
    fuse = doctor.plan_fixes(0o666, None, "", "", [], fuse_mode=0o600)
    assert [f.argv for f in fuse] == [("chmod", "0666", "/dev/fuse")]
    assert doctor.plan_fixes(0o666, None, "", "", [], fuse_mode=None) == []
    missing = [f.argv for f in doctor.plan_fixes(None, None, "", "", [])]
    assert missing[1] == ("mknod", "/dev/net/tun", "c", "10", "200")


def test_free_subid_start_never_overlaps() -> None:
    assert doctor.free_subid_start("") == 100000
    assert doctor.free_subid_start("a:100000:65536\nb:300000:10\n") == 300010


def test_up_runs_every_fatal_check_that_is_cheap() -> None:
    """`up` used to run five hard-coded checks: a newuidmap that is not setuid, a foreign
    runtime dir or a sysctl forbidding user namespaces never stopped it."""
    assert (
        {c.id for c in doctor.UP_CHECKS}
        == {c.id for c in doctor.CHECKS if c.fatal and c.cheap}
        >= {"kernel.userns", "ids.tools", "runtime.dir", "tun.access", "runtime.socket"}
    )
    cheap = good()  # what doctor/facts.probe_cheap gives, the rest left at their defaults
    assert doctor.up_failures(cheap) == []
    for change, failing in (
        ({"setuid": {"newuidmap": False, "newgidmap": True}}, "ids.tools"),
        ({"runtime_foreign": True}, "runtime.dir"),
        ({"sysctls": {"user.max_user_namespaces": "0"}}, "kernel.userns"),
    ):
        assert [c.id for c, _ in doctor.up_failures(replace(cheap, **change))] == [failing]


def test_cheap_checks_read_only_cheap_facts() -> None:
    """A cheap check gives the same answer whatever the expensive facts say: `up` runs it
    without probing them."""
    from dockerup.doctor.probe import DoctorFacts

    fields = [f.name for f in dataclasses.fields(DoctorFacts)]
    expensive = fields[fields.index("seccomp_actions") :]
    bad = good(**{n: None for n in expensive})
    cheap = [c for c in doctor.CHECKS if c.cheap]
    # The checks `up` runs before starting (see up_failures above) are among them.
    assert {"tun.access", "ids.tools", "runtime.dir", "kernel.userns"} <= {c.id for c in cheap}
    for c in cheap:
        assert c.run(bad) == c.run(good()), c.id


def test_up_refuses_with_doctors_words_before_starting_anything() -> None:
    """make_plan runs the cheap fatal checks on the facts `up` probed: a tun device the
    user cannot open stops it with doctor's fix and the check's name."""
    from dockerup.errors import DockerUpError
    from dockerup.host.facts import TunAccess
    from dockerup.settings.config import Config
    from dockerup.verbs.resolve import make_plan

    closed = facts(tun=TunAccess(True, False, "Permission denied"))
    with pytest.raises(DockerUpError) as e:
        make_plan(Config(), closed)
    assert "cannot be opened" in e.value.message
    assert "chmod 0666 /dev/net/tun" in (e.value.hint or "")
    assert "check tun.access failed" in (e.value.hint or "")


# -- the text form ----------------------------------------------------------------------------

CLOSED = TunAccess(True, False, "Permission denied")
CLOSED_TUN = {"host": replace(V2_HOST, tun=CLOSED)}
CLOSED_TUN_V1 = {"host": replace(V1_HOST, tun=CLOSED)}  # and cgroup v1's warning


def text(width: int = 80, verbose: bool = False, **change: Any) -> list[str]:
    from dockerup.cli.doctor_text import doctor_lines

    report = doctor.run_checks(good(**change))
    return [line for _, line in doctor_lines(report.results, width, verbose)]


def test_a_passing_check_is_one_line_cut_to_the_width() -> None:
    lines = text(net_accel=None)
    (accel,) = [line for line in lines if line.startswith("✓ net.accel ")]
    assert len(accel) == 80 and accel.endswith("…")  # its finding is longer than the line
    assert "✓ kernel.userns     allowed (max 96365)" in lines
    assert len(lines) == len(doctor.CHECKS) + 1  # and the summary


def test_a_failing_check_gets_its_finding_and_the_exact_fix_below() -> None:
    lines = text(**CLOSED_TUN)
    at = next(i for i, line in enumerate(lines) if line.startswith("✗ tun.access "))
    below = []
    for line in lines[at + 1 :]:
        if not line.startswith("    "):
            break
        below.append(line)
    said = " ".join(w for line in [lines[at], *below] for w in line.split())
    assert "/dev/net/tun cannot be opened: Permission denied" in said
    assert "fix: as root: chmod 0666 /dev/net/tun" in said
    fix = "fix: as root: chmod 0666 /dev/net/tun (harmless: tap needs CAP_NET_ADMIN)"
    assert below[-1] == "    " + fix  # one line, the last below the finding


@pytest.mark.parametrize("width", [40, 80, 132])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    for verbose in (False, True):
        lines = text(width, verbose, netns_ok=False, **CLOSED_TUN_V1)
        assert [line for line in lines if len(line) > width] == []


def test_at_80_columns_a_check_takes_at_most_one_and_a_half_lines() -> None:
    """The measure of issue 28 on made-up facts with long findings: what fails and warns
    here (tun closed, cgroup v1, little disk, no docker client) still fits."""
    lines = text(free_bytes=3 * 2**30, **CLOSED_TUN_V1)
    assert len(lines) <= 1.5 * len(doctor.CHECKS), "\n".join(lines)


# A new machine before anything is set up: tun closed, no subordinate ids, no engine and no
# slirp4netns, cgroup v1.
NEW_MACHINE = {
    "host": facts(
        binaries={**BINS, "docker": "/usr/bin/docker", "dockerd": None, "slirp4netns": None},
        tun=TunAccess(True, False, "Permission denied"),
        subuid=(),
        subgid=(),
    ),
}


def test_on_a_new_machine_too_a_check_takes_at_most_one_and_a_half_lines() -> None:
    lines = text(**NEW_MACHINE)
    assert len(lines) <= 1.5 * len(doctor.CHECKS), "\n".join(lines)


def test_a_missing_program_is_said_once() -> None:
    """The programs check names every missing program and the one apt-get line; the checks
    that need one say so in a line, without a fix of their own."""
    lines = text(**NEW_MACHINE)
    fixes = [line for line in lines if line.lstrip().startswith("fix:") and "apt-get" in line]
    assert fixes == ["    fix: install it: sudo apt-get install docker.io slirp4netns"]
    assert "- docker.dockerd    dockerd not installed (see programs)" in lines
    assert "- net.slirp4netns   slirp4netns not installed (see programs)" in lines


def test_a_fix_already_shown_is_not_repeated() -> None:
    lines = text(**NEW_MACHINE)
    at = next(i for i, line in enumerate(lines) if line.startswith("✗ ids.subgid "))
    assert lines[at + 1] == "    fix: as for ids.subuid"
    assert sum("usermod --add-subuids" in line for line in lines) == 1
    # In full, each check says its own fix.
    assert sum("usermod --add-subuids" in line for line in text(verbose=True, **NEW_MACHINE)) == 2


def test_verbose_shows_every_check_in_full() -> None:
    lines = text(verbose=True, net_accel=None)
    at = lines.index("✓ net.accel         network acceleration")
    finding = " ".join(w for line in lines[at + 1 : at + 4] for w in line.split())
    assert finding.startswith("containers auto (on where supported), dockerd's own auto")
    assert "…" not in "".join(lines)


def test_the_summary_counts_and_says_whether_anything_fails() -> None:
    assert text()[-1] == "docker-up doctor: 25 ok, 2 skipped; nothing fails (--verbose: in full)"
    assert text(**CLOSED_TUN)[-1] == (
        "docker-up doctor: 1 fail, 24 ok, 2 skipped (--verbose: in full)"
    )


def test_the_text_has_no_colour_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dockerup.cli.render import emit

    monkeypatch.setenv("COLUMNS", "80")
    assert emit(Doctor(doctor.run_checks(good(**CLOSED_TUN)))) == 1
    out = capsys.readouterr().out
    assert "\x1b[" not in out and out.splitlines()[0].startswith("✓ mode ")
    assert max(len(line) for line in out.splitlines()) <= 80


def test_the_image_build_cache_is_not_the_users_business() -> None:
    """scripts/build-image checks its own cache; doctor has no image check."""
    assert [c.id for c in doctor.CHECKS if c.id.startswith("image")] == []


def test_apparmor_restriction_gets_a_profile_for_the_interpreter_that_unshares() -> None:
    """Ubuntu >= 23.10: Docker's rootless docs give rootlesskit a profile with `userns`;
    here the program that creates the user namespace is docker-up's Python."""
    f = good(
        sysctls={"kernel.apparmor_restrict_unprivileged_userns": "1"},
        interpreter="/usr/bin/python3.12",
    )
    r = check("kernel.userns", f)
    assert r.status is Health.fail
    assert "apparmor_restrict_unprivileged_userns = 1" in r.detail
    assert r.hint.startswith(
        "as root: printf 'abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile docker-up "
        '"/usr/bin/python3.12" flags=(unconfined) {\\n  userns,\\n'
    )
    assert "> /etc/apparmor.d/docker-up && apparmor_parser -r /etc/apparmor.d/docker-up" in r.hint
    assert check("kernel.userns", good(interpreter="/usr/bin/python3.12")).status is Health.ok


def test_apparmor_on_debian_13_is_said_and_does_not_fail() -> None:
    """Debian 13: AppArmor on, no restriction sysctl (vm-FACTS): containers run, unconfined."""
    assert check("kernel.apparmor", good()).status is Health.skip
    on = check("kernel.apparmor", good(apparmor=True))
    assert (on.status, on.detail) == (
        Health.ok,
        "on, not restricting user namespaces; containers run without AppArmor profiles",
    )
    restricted = good(apparmor=True, sysctls={"kernel.apparmor_restrict_unprivileged_userns": "1"})
    assert check("kernel.apparmor", restricted).status is Health.skip
