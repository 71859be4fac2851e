"""userns = "keep-id" (README: dev containers with a non-root user), for real: the user's own
uid is itself in docker-up's user namespace, root there a subordinate id. One docker-up for
the module, as the unprivileged test user, with DOCKER_UP_USERNS=keep-id and else docker-up's
defaults; the Dev Containers CLI from scripts/clients."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clienttools import (
    TESTS,
    copy_tree,
    devcontainer_round_trip,
    docker,
    http_get,
    started_with_plugins,
)
from .harness import User, Workspace, end_strays, pid_alive, processes_naming, wait_for


@pytest.fixture(scope="module")
def keep(user: User, busybox_tar: Path) -> Iterator[Workspace]:
    """docker-up -d with keep-id from the environment, buildx as the user's CLI plugin (the
    Dev Containers CLI builds with it, as with the default daemon in test_clients)."""
    with started_with_plugins(
        user, busybox_tar, "dockerup-keepid-", ("docker-buildx",), DOCKER_UP_USERNS="keep-id"
    ) as ws:
        yield ws


def test_devcontainer_with_a_non_root_remote_user_under_keep_id(keep: Workspace) -> None:
    """The goal test_clients states, with the opt-in: dev (the user's uid, by
    updateRemoteUserUID) writes the workspace folder; the user edits and deletes it."""
    devcontainer_round_trip(keep, copy_tree(keep, TESTS / "devcontainer" / "nonroot", "project"))


def test_status_shows_the_mapping_and_its_own_data_root(keep: Workspace) -> None:
    doc = json.loads(keep.docker_up("status", "--json").stdout)
    assert doc["userns"] == f"keep-id: you are uid {keep.user.uid} inside, root is a subordinate id"
    data = keep.root / "data" / "docker-up"
    assert doc["data_root"] == str(data / "docker-keep-id")
    text = keep.docker_up("status").stdout
    assert "user ids" in text and "keep-id" in text, text
    # The default's data-root is never made, let alone used.
    assert not (data / "docker").exists()
    # dockerd is root inside: a subordinate id outside; the socket is the user's group's.
    st = os.stat(keep.runtime_dir / "docker-up" / "docker.sock")
    # (dockerd sets the sticky bit: a runtime directory's cleaner leaves it alone)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode) & 0o777) == (
        keep.user.subordinate_start,
        keep.user.gid,
        0o660,
    )
    # Recorded by identity (pid, start, executable) for a later start's orphan check, though
    # another uid's: a process in the user namespace the user made.
    debug = json.loads(keep.docker_up("--debug", "status", "--json").stdout)["debug"]
    assert debug["procs"]["dockerd"]["pid"] == doc["dockerd_pid"], debug
    doctor = keep.docker_up("doctor")
    assert "keep-id" in doctor.stdout, doctor.stdout


def test_run_is_the_user_and_run_root_is_root_inside(keep: Workspace) -> None:
    """`docker-up run` programs are the user (their files too); --root is root inside, with
    the namespace's capabilities, though joining left the user its own id there."""
    made = keep.root / "from-run"
    out = keep.docker_up("run", "--", "sh", "-c", f"id -u; touch {made}", timeout=60)
    assert out.stdout.split() == [str(keep.user.uid)], out
    assert made.stat().st_uid == keep.user.uid
    # CAP_NET_ADMIN over docker-up's network namespace: an address on its loopback.
    add = "id -u; ip addr add 10.99.0.1/32 dev lo && ip addr del 10.99.0.1/32 dev lo"
    for how in (["run", "--root", "--"], ["exec", "--"]):  # exec: nsenter, root by default
        root = keep.docker_up(*how, "sh", "-c", add, timeout=60)
        assert root.returncode == 0 and root.stdout.split() == ["0"], root


def test_what_a_root_container_writes_into_a_bind_mount(keep: Workspace) -> None:
    """README: a root container's files are a subordinate id's; the user deletes plain
    files in its own directories, not what is in a directory the container made; `docker-up
    run --root` (root inside) cleans that up."""
    folder = keep.root / "src"
    folder.mkdir()
    os.chown(folder, keep.user.uid, keep.user.gid)
    docker(
        keep,
        "run",
        "--rm",
        "-v",
        f"{folder}:/src",
        "bb:test",
        "sh",
        "-c",
        "echo out > /src/made && mkdir /src/build && echo obj > /src/build/o",
    )
    root_outside = keep.user.subordinate_start
    for p in (folder / "made", folder / "build", folder / "build" / "o"):
        assert p.stat().st_uid == root_outside, p
    edit = keep.run(["sh", "-c", f"echo more >> {folder / 'made'}"])
    assert edit.returncode != 0, "the user edited a root container's file"
    assert keep.run(["rm", "-f", str(folder / "build" / "o")]).returncode != 0
    keep.run(["rm", "-f", str(folder / "made")], check=True)  # its own directory
    keep.docker_up("run", "--root", "--", "rm", "-rf", str(folder / "build"), timeout=60)
    assert os.listdir(folder) == []


# A hostile image given only its project folder (/w). $1: a file of the user's outside it,
# $2: the default mapping's data-root (another daemon's images). It plants a link to each
# in /w and writes through it, and looks for them through every process's root.
ATTACK = r"""
ln -s "$1" /w/link-file && echo pwned >> /w/link-file 2>/dev/null && echo "WROTE-USER-FILE"
ln -s "$2" /w/link-data && touch /w/link-data/pwned 2>/dev/null && echo "WROTE-DEFAULT-DATA-ROOT"
for r in /proc/[0-9]*/root; do
  echo pwned >> "$r$1" 2>/dev/null && echo "WROTE-USER-FILE $r"
  ls "$r$2" >/dev/null 2>&1 && echo "READ-DEFAULT-DATA-ROOT $r"
done
mkdir -p /m && mount -t tmpfs none /m 2>/dev/null && echo MOUNTED
touch /w/mine && echo WROTE-OWN
"""


@pytest.mark.parametrize("who", ["root", "user"])
def test_a_hostile_container_reaches_only_its_bind_mount(keep: Workspace, who: str) -> None:
    """Under keep-id a container's root (here --privileged) is a subordinate id, and its
    user of the workspace user's uid is the user without any capability: neither writes the
    user's files outside what is mounted, nor reaches the default mapping's data-root.
    (`--pid host`, the way to other processes' roots, is refused by a rootless dockerd: the
    workspace's PID namespace is not the user namespace's to mount a /proc of.)"""
    precious = keep.root / "precious"
    precious.write_text("the user's\n")
    os.chown(precious, keep.user.uid, keep.user.gid)
    other = keep.root / "data" / "docker-up" / f"docker-{who}"  # as the default's data-root
    other.mkdir(mode=0o700)
    os.chown(other, keep.user.uid, keep.user.gid)
    w = keep.root / f"w-{who}"
    w.mkdir()
    os.chown(w, keep.user.uid, keep.user.gid)
    how = ["--privileged"] if who == "root" else ["--user", f"{keep.user.uid}:{keep.user.gid}"]
    try:
        out = docker(
            keep,
            "run",
            "--rm",
            *how,
            "-v",
            f"{w}:/w",
            "bb:test",
            "sh",
            "-c",
            ATTACK,
            "attack",
            str(precious),
            str(other),
        )
        assert "WROTE-OWN" in out, out
        for found in ("WROTE-USER-FILE", "READ-DEFAULT-DATA-ROOT", "WROTE-DEFAULT-DATA-ROOT"):
            assert found not in out, out
        # Root in the container may mount (in its own mount namespace): it is root there.
        assert ("MOUNTED" in out) == (who == "root"), out
        assert precious.read_text() == "the user's\n"
        assert os.listdir(other) == []
        want = keep.user.uid if who == "user" else keep.user.subordinate_start
        assert (w / "mine").stat().st_uid == want
    finally:
        shutil.rmtree(other)


WEB = "mkdir /www && echo hello-keep-id > /www/index.html && exec httpd -f -p 80 -h /www"


def test_stop_ends_everything_of_the_namespace(
    workspace: Workspace, net: str, busybox_tar: Path
) -> None:
    """With each network driver: a published port answers on the workspace's loopback;
    dockerd, containerd, the shims and a container's processes run as subordinate ids, and
    stop still ends them all; a new start finds no orphan."""
    ws = workspace
    ws.extra_env["DOCKER_UP_USERNS"] = "keep-id"
    assert ws.docker_up("-d").returncode == 0
    ws.docker("import", str(busybox_tar), "bb:test")
    ws.docker("run", "-d", "--name", "web", "-p", "127.0.0.1::80", "bb:test", "sh", "-c", WEB)
    port = ws.docker("port", "web", "80").stdout.strip().rsplit(":", 1)[1]
    wait_for(lambda: "hello-keep-id" in http_get("127.0.0.1", int(port)), 30, "the web page")
    web = int(ws.docker("inspect", "-f", "{{.State.Pid}}", "web").stdout)
    ours = {*processes_naming(ws.root), web}
    root_outside = ws.user.subordinate_start
    assert os.stat(f"/proc/{web}").st_uid == root_outside
    assert ws.docker_up("stop", timeout=90).returncode == 0
    wait_for(lambda: not [p for p in ours if pid_alive(p)], 30, "nothing left")
    assert not processes_naming(ws.root)
    again = ws.docker_up("-d")
    assert again.returncode == 0 and "orphan" not in again.stderr, again.stderr
    assert ws.docker_up("stop", timeout=90).returncode == 0
    wait_for(lambda: not processes_naming(ws.root), 30, "nothing left")


def test_switching_maps_leaves_the_default_data_root_alone(
    workspace: Workspace, busybox_tar: Path
) -> None:
    """default -> keep-id -> default: keep-id neither sees nor changes the default's
    images and files, and the default daemon finds them again as they were."""
    ws = workspace
    data = ws.root / "data" / "docker-up"
    assert ws.docker_up("-d").returncode == 0
    ws.docker("import", str(busybox_tar), "bb:default")
    assert ws.docker_up("stop", timeout=90).returncode == 0
    before = tree(data / "docker")
    ws.extra_env["DOCKER_UP_USERNS"] = "keep-id"
    assert ws.docker_up("-d").returncode == 0
    assert "bb:default" not in ws.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert ws.docker_up("stop", timeout=90).returncode == 0
    assert tree(data / "docker") == before
    del ws.extra_env["DOCKER_UP_USERNS"]
    assert ws.docker_up("-d").returncode == 0
    assert "bb:default" in ws.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    ws.docker("run", "--rm", "bb:default", "true")
    assert ws.docker_up("stop", timeout=90).returncode == 0


def tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path under root with its owner, group, mode and mtime (ns)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(d, name))
            out[os.path.join(d, name)] = (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns)
    return out


def test_lazy_start_and_a_restarted_dockerd_under_keep_id(user: User, busybox_tar: Path) -> None:
    """The shell snippet's way (lazy-start: the holder's socket, the user's, handed to
    dockerd) works under keep-id, and a killed dockerd comes back root in the namespace
    (the keeper's new one becomes root there, as the child did)."""
    ws = Workspace.create(user, "dockerup-keepid-lazy-", DOCKER_UP_USERNS="keep-id")
    try:
        assert ws.docker_up("up", "--lazy").returncode == 0
        assert ws.docker("info", "--format", "{{.ID}}").stdout.strip()
        doc = json.loads(ws.docker_up("status", "--json").stdout)
        assert doc["userns"].startswith("keep-id") and doc["answering"] is True
        first = int(doc["dockerd_pid"])
        assert os.stat(f"/proc/{first}").st_uid == user.subordinate_start
        os.kill(first, 9)
        wait_for(
            lambda: (
                ws.docker("info", check=False, timeout=20).returncode == 0
                and json.loads(ws.docker_up("status", "--json").stdout)["dockerd_pid"] != first
            ),
            90,
            "dockerd restarted under keep-id",
        )
        log = (ws.runtime_dir / "docker-up" / "logs" / "docker-up.log").read_text()
        assert "dockerd is back" in log, log[-1500:]
        again = int(json.loads(ws.docker_up("status", "--json").stdout)["dockerd_pid"])
        assert os.stat(f"/proc/{again}").st_uid == user.subordinate_start
        # It still sets up a container's network and published port (iptables, root inside).
        ws.docker("import", str(busybox_tar), "bb:test")
        ws.docker("run", "--rm", "-p", "127.0.0.1::80", "bb:test", "true")
        assert ws.docker_up("stop", timeout=90).returncode == 0
        wait_for(lambda: not processes_naming(ws.root), 30, "nothing left")
    finally:
        ws.docker_up("stop", timeout=90)
        end_strays(ws.root)
        shutil.rmtree(ws.root, ignore_errors=True)
