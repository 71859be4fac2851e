"""Dev containers' views of the workspace's folders (dockerup/views): which mounts, bindfs'
command line, the plan that turns them on, and the runtime wrapper's fallback (pure, or on
files in a temporary directory)."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dockerup.accel.ociruntime import add_views, remove_views
from dockerup.plan.build import build_plan
from dockerup.settings.config import Config
from dockerup.views import choose, serve
from dockerup.views.choose import Candidate, View
from dockerup.wire.specs import RuntimeSpec

from .given import facts, paths

LABELS = {"devcontainer.local_folder": "/home/alice/project", "devcontainer.metadata": "[]"}
POINTS = {
    "/workspaces/project": {"Type": "bind", "Destination": "/workspaces/project"},
    "/data": {"Type": "volume", "Destination": "/data"},
    "/var/run/docker.sock": {"Type": "bind", "Destination": "/var/run/docker.sock"},
}
MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/etc/hostname", "type": "bind", "source": "/c/hostname", "options": ["rbind"]},
    {"destination": "/workspaces/project", "type": "bind", "source": "/home/alice/project"},
    {"destination": "/data", "type": "bind", "source": "/d/volumes/v/_data", "options": ["rbind"]},
    {"destination": "/var/run/docker.sock", "source": "/run/docker.sock", "options": ["rbind"]},
]


def test_only_containers_the_dev_containers_cli_made_get_views() -> None:
    assert choose.wanted(LABELS)
    assert not choose.wanted({"com.docker.compose.project": "x"})
    assert not choose.wanted(None)
    assert not choose.wanted({**LABELS, "docker-up.views": "off"})
    assert choose.wanted({**LABELS, "docker-up.views": "on"})


def test_only_the_containers_own_binds_are_candidates() -> None:
    """Volumes (binds from the data-root in the OCI spec) and dockerd's own files are not."""
    destinations = choose.bind_destinations({"MountPoints": POINTS})
    assert destinations == {"/workspaces/project", "/var/run/docker.sock"}
    assert choose.sources(MOUNTS, destinations) == [
        (2, "/home/alice/project"),
        (4, "/run/docker.sock"),
    ]
    assert choose.bind_destinations({}) == set()


def test_only_folders_of_the_workspace_user_get_a_view() -> None:
    found = [(2, "/home/alice/project"), (4, "/run/docker.sock"), (5, "/srv/other"), (6, "/gone")]
    probed = {
        "/home/alice/project": Candidate(is_dir=True, uid=0),
        "/run/docker.sock": Candidate(is_dir=False, uid=0),  # a socket: as it is
        "/srv/other": Candidate(is_dir=True, uid=65534),  # not the user's: as it is
    }
    assert choose.choose(found, probed) == [View(2, "/home/alice/project")]


def test_bindfs_shows_the_user_as_their_own_uid_and_stores_it_as_the_user() -> None:
    assert choose.bindfs_argv("/usr/bin/bindfs", 1001, 1002, "/src", "/v/c/0") == [
        "/usr/bin/bindfs",
        "-f",
        "-o",
        "nosuid,nodev",
        "--map=0/1001:@0/@1002",
        "/src",
        "/v/c/0",
    ]


def runtime(plan_files: Any, path: Path) -> tuple[list[str], RuntimeSpec]:
    (script,) = [f.content for f in plan_files if f.path == path]
    lines = script.splitlines()
    create = next(line for line in lines if '*" create "*)' in line)
    return lines, RuntimeSpec.from_json(shlex.split(create)[5])


def test_the_default_map_with_bindfs_turns_views_on_and_delete_unmounts_them() -> None:
    f = facts(binaries={**facts().binaries, "bindfs": "/usr/bin/bindfs"})
    plan = build_plan(Config(), f, paths())
    lines, spec = runtime(plan.files, plan.paths.runtime_script)
    assert (spec.views, spec.bindfs, spec.user_uid, spec.user_gid) == (
        "/tmp/docker-up-1001/views",
        "/usr/bin/bindfs",
        1001,
        1001,
    )
    assert lines[1] == "for id; do :; done"
    # delete pays for a Python start only for a container that has views.
    assert next(line for line in lines if "delete" in line).startswith(
        '  *" delete "*) [ -d /tmp/docker-up-1001/views/"$id" ] && exec /usr/bin/python3 -S '
    )


def test_no_views_without_bindfs_or_under_keep_id() -> None:
    with_bindfs = facts(binaries={**facts().binaries, "bindfs": "/usr/bin/bindfs"})
    for config, f in ((Config(), facts()), (Config(userns="keep-id"), with_bindfs)):
        plan = build_plan(config, f, paths())
        lines, spec = runtime(plan.files, plan.paths.runtime_script)
        assert spec.views is None
        assert not [line for line in lines if "delete" in line]


def dev_container(tmp_path: Path, source: Path) -> dict[str, Any]:
    (tmp_path / "config.v2.json").write_text(
        json.dumps({"Config": {"Labels": LABELS}, "MountPoints": POINTS})
    )
    return {
        "mounts": [
            {"destination": "/etc/hostname", "source": str(tmp_path / "hostname")},
            {"destination": "/workspaces/project", "type": "bind", "source": str(source)},
        ]
    }


def test_a_view_that_cannot_be_made_leaves_the_mount_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never keep a container from starting: bindfs failing (here: false, run confined as
    bindfs would be, in a mount namespace of its own) keeps the raw bind mount, and says
    why on runc's stderr."""
    folder = tmp_path / "project"
    folder.mkdir()
    spec = dev_container(tmp_path, folder)
    defaults = RuntimeSpec(
        "/usr/sbin/runc", {}, None, views=str(tmp_path / "views"), bindfs="/bin/false"
    )
    # The unit tests run as root: the folder is 0's, as the user's is inside the namespace.
    assert not add_views(spec, defaults, "abc123")
    assert spec["mounts"][1]["source"] == str(folder)
    assert (
        capsys.readouterr().err == f"docker-up runtime: {folder} mounted as it is: bindfs ended\n"
    )
    assert (tmp_path / "views").stat().st_mode & 0o777 == 0o700
    # ... and runc's delete removes what is left of it.
    remove_views(["--root", "/r", "delete", "--force", "abc123"], defaults)
    assert list((tmp_path / "views").iterdir()) == []


def test_other_containers_and_other_maps_are_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    spec = dev_container(tmp_path, folder)
    on = RuntimeSpec("/usr/sbin/runc", {}, None, views=str(tmp_path / "v"), bindfs="/bin/false")
    assert not add_views(spec, replace(on, views=None), "abc123")
    (tmp_path / "config.v2.json").write_text(json.dumps({"Config": {"Labels": {}}}))
    assert not add_views(spec, on, "abc123")
    assert not (tmp_path / "v").exists()


def test_a_container_id_never_leaves_the_views_directory() -> None:
    assert serve.container_dir("/v", "0a1b") == "/v/0a1b"
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            serve.container_dir("/v", bad)


def test_what_runc_never_deleted_goes_at_stop_but_nothing_with_content(tmp_path: Path) -> None:
    """The keeper's clear (dockerd killed: no delete came): empty directories and logs go;
    a directory with something in it stays, whatever it is."""
    views = tmp_path / "views"
    (views / "gone" / "0").mkdir(parents=True)
    (views / "gone" / "0.root").mkdir()
    (views / "gone" / "0.log").write_text("bindfs said\n")
    (views / "odd" / "0").mkdir(parents=True)
    (views / "odd" / "0" / "precious").write_text("x")
    serve.clear(str(views))
    assert sorted(str(p.relative_to(views)) for p in views.rglob("*")) == [
        "odd",
        "odd/0",
        "odd/0/precious",
    ]
    serve.clear(str(tmp_path / "none"))  # no views at all: nothing to do
