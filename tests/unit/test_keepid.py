"""userns = "keep-id": the user's own ids stay themselves in docker-up's user namespace
(dockerup/plan/idmap.py), with a data-root of its own; the default stays as it was."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest

from dockerup.cli import choices
from dockerup.errors import DockerUpError
from dockerup.host.facts import IdRange
from dockerup.linux import procid
from dockerup.plan.build import build_plan, paths_for
from dockerup.plan.idmap import USERNS_CHOICES, IdMap, describe
from dockerup.settings.config import Config, resolve
from dockerup.verbs.run import plan_run
from dockerup.wire.messages import Rooted, read_step

from .given import OUTSIDE, RUNNING, facts, paths

KEEP_ROOT = "/home/alice/.local/share/docker-up/docker-keep-id"


def test_keep_id_changes_the_maps_the_data_root_the_socket_group_and_the_child_only() -> None:
    """The whole plan, compared: keep-id is the default plan with its own data-root, plus
    exactly these differences."""
    f = facts()
    base = build_plan(Config(data_root=KEEP_ROOT), f, paths())
    keep = build_plan(Config(userns="keep-id"), f, paths())
    argv = [*base.dockerd_argv, "--group=1001"]
    assert keep == replace(
        base,
        config=Config(userns="keep-id"),
        uidmap=IdMap("/usr/bin/newuidmap", 1001, (IdRange(100000, 65536),), 1001),
        gidmap=IdMap("/usr/bin/newgidmap", 1001, (IdRange(200000, 65536),), 1001),
        dockerd_argv=tuple(argv),
        child=replace(base.child, become_root=True, dockerd=replace(base.child.dockerd, argv=argv)),
    )
    assert keep.paths.data_root == Path(KEEP_ROOT)
    assert keep.userns == "keep-id: you are uid 1001 inside, root is a subordinate id"


def test_keep_id_maps_the_users_ids_to_themselves_and_fills_around_them() -> None:
    keep = build_plan(Config(userns="keep-id"), facts(), paths())
    assert keep.uidmap is not None and keep.gidmap is not None
    assert keep.uidmap.argv(42) == [
        "/usr/bin/newuidmap",
        "42",
        *["0", "100000", "1001"],
        *["1001", "1001", "1"],
        *["1002", "101001", "64535"],
    ]
    assert keep.gidmap.argv(42)[2:] == [
        *["0", "200000", "1001"],
        *["1001", "1001", "1"],
        *["1002", "201001", "64535"],
    ]
    assert keep.uidmap.root == 100000 and keep.uidmap.count == 65537
    assert keep.child.sysctls["net/ipv4/ping_group_range"] == "0 65536"


def test_the_default_is_unchanged() -> None:
    plan = build_plan(Config(), facts(), paths())
    assert plan.uidmap is not None and plan.uidmap.inside_id == 0 and plan.uidmap.root == 1001
    assert not plan.child.become_root
    assert not any(a.startswith("--group") for a in plan.dockerd_argv)
    assert plan.paths.data_root == Path("/home/alice/.local/share/docker-up/docker")
    assert plan.userns == "default: you are root inside"


def test_keep_id_over_several_ranges_splits_the_one_that_covers_the_users_id() -> None:
    """A pod's namespace of 65536 ids, the user's 33333 in the middle (as in test_plan)."""
    pod = IdRange(0, 65536)
    f = facts(
        uid=33333,
        gid=33333,
        uid_map=(pod,),
        gid_map=(pod,),
        max_gid=65535,
        subuid=(IdRange(1, 33332), IdRange(33334, 32202)),
        subgid=(IdRange(1, 65535),),
    )
    plan = build_plan(Config(userns="keep-id"), f, paths())
    assert plan.uidmap is not None and plan.gidmap is not None
    # Root inside is 1 outside; 33333 is itself; the rest are shifted by one below it.
    want = [(0, 1, 33332), (33332, 33334, 1), (33333, 33333, 1), (33334, 33335, 32201)]
    assert plan.uidmap.lines() == want
    # The gid range holds the user's own gid: split around it first (usable_ranges), alike.
    assert plan.gidmap.lines() == plan.uidmap.lines()
    assert plan.uidmap.count == plan.gidmap.count == 65535


def test_a_user_id_above_the_subordinate_ids_leaves_a_gap() -> None:
    m = IdMap("newuidmap", 70000, (IdRange(100000, 65536),), 70000)
    assert m.lines() == [(0, 100000, 65536), (70000, 70000, 1)]
    assert m.count == 70001


def test_keep_id_needs_a_user_namespace_of_docker_ups() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(userns="keep-id", mode="userns-root"), facts(uid=0, gid=0), paths())
    assert "keep-id" in e.value.message and "rootless" in (e.value.hint or "")


def test_status_stop_and_doctor_find_the_keep_id_data_root() -> None:
    """Every command computes paths through paths_for: keep-id's data-root for all."""
    f = facts()
    p = paths_for(build_plan(Config(), f, paths()).mode, f, Config(userns="keep-id"))
    assert p.data_root == Path(KEEP_ROOT)
    # An explicit data-root wins: it is the user's choice.
    q = paths_for(
        build_plan(Config(), f, paths()).mode, f, Config(userns="keep-id", data_root="/x")
    )
    assert q.data_root == Path("/x")


def test_the_setting_from_file_env_and_cli() -> None:
    config, src = resolve({}, {"DOCKER_UP_USERNS": "keep-id"}, None)
    assert (config.userns, src["userns"]) == ("keep-id", "env")
    config, src = resolve({"userns": "default"}, {}, 'userns = "keep-id"\n')
    assert (config.userns, src["userns"]) == ("default", "cli")
    with pytest.raises(DockerUpError) as e:
        resolve({}, {}, 'userns = "keepid"\n')
    assert "must be one of: default, keep-id" in e.value.message
    assert get_args(choices.UsernsName) == USERNS_CHOICES


def test_the_rooted_step_survives_the_wire() -> None:
    assert read_step(Rooted().line(), Rooted) == Rooted()


def test_describe() -> None:
    assert describe("keep-id", 7) == "keep-id: you are uid 7 inside, root is a subordinate id"


def test_run_root_becomes_root_after_joining_under_keep_id_only() -> None:
    """Joining keep-id's namespace leaves the user its own id: --root must change it to 0
    there, or the program keeps no capability across its exec."""
    keep = dataclasses.replace(RUNNING, userns=describe("keep-id", 1000))
    args = {"uid": 1000, "gid": 1000, "cwd": "/", "env": {}}
    assert plan_run(keep, OUTSIDE, ["id"], root=True, **args).become_root  # type: ignore[arg-type]
    assert not plan_run(keep, OUTSIDE, ["id"], root=False, **args).become_root  # type: ignore[arg-type]
    assert not plan_run(RUNNING, OUTSIDE, ["id"], root=True, **args).become_root  # type: ignore[arg-type]


def test_doctor_shows_keep_id_and_refuses_it_without_a_namespace_of_docker_ups() -> None:
    from dockerup.doctor.account import check_mode
    from dockerup.doctor.model import Health
    from dockerup.doctor.probe import DoctorFacts

    got = check_mode(DoctorFacts(host=facts(), paths=paths(), userns="keep-id"))
    assert got.status is Health.ok and got.detail.endswith(
        "; user ids keep-id: you are uid 1001 inside, root is a subordinate id"
    )
    assert "user ids" not in check_mode(DoctorFacts(host=facts(), paths=paths())).detail
    root = DoctorFacts(host=facts(uid=0, gid=0), paths=paths(), userns="keep-id")
    assert check_mode(replace(root, mode="userns-root")).status is Health.fail


def test_a_process_of_the_callers_own_user_namespace_is_not_one_it_made() -> None:
    """procid's widening for keep-id's dockerd: only namespaces the caller made count."""
    assert not procid.in_own_userns(os.getpid())
    assert not procid.in_own_userns(2**22 + 1)  # no such process
