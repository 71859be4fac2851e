"""A broken machine gets one clear line naming the problem and the fix, never a traceback.

Each test breaks the machine only inside a private mount namespace (bind mounts over real
files), so nothing outside the test changes.
"""

from __future__ import annotations

import os

import pytest

from .harness import Workspace


def assert_clean_failure(r: object, *needles: str) -> None:
    out = r.stdout + r.stderr  # type: ignore[attr-defined]
    assert r.returncode == 1, out  # type: ignore[attr-defined]
    assert "Traceback" not in out
    for n in needles:
        assert n in out, f"{n!r} not in:\n{out}"


@pytest.mark.parametrize(
    ("program", "package"),
    [
        ("/usr/sbin/dockerd", "docker.io"),
        ("/usr/bin/slirp4netns", "slirp4netns"),
        ("/usr/bin/newuidmap", "uidmap"),
        ("/usr/sbin/iptables", "iptables"),
    ],
)
def test_missing_program_names_the_package(
    workspace: Workspace, program: str, package: str
) -> None:
    # /dev/null is not executable, so the program is as good as missing.
    r = workspace.docker_up_on_broken_host(f"mount --bind /dev/null {program}")
    name = program.rsplit("/", 1)[1]
    assert_clean_failure(r, f"{name} not found", f"apt-get install {package}")


def test_tun_not_accessible(workspace: Workspace) -> None:
    # What a new machine here has: /dev/net/tun mode 0600, owned by root.
    r = workspace.docker_up_on_broken_host(
        "f=$(mktemp); chmod 0600 $f; mount --bind $f /dev/net/tun"
    )
    assert_clean_failure(
        r, "/dev/net/tun cannot be opened", "chmod 0666 /dev/net/tun", "docker-up doctor"
    )


def test_tun_missing(workspace: Workspace) -> None:
    r = workspace.docker_up_on_broken_host("mount -t tmpfs tmpfs /dev/net")
    assert_clean_failure(r, "/dev/net/tun is missing", "mknod /dev/net/tun c 10 200")


@pytest.mark.parametrize("file", ["/etc/subuid", "/etc/subgid"])
def test_no_subordinate_range(workspace: Workspace, file: str) -> None:
    r = workspace.docker_up_on_broken_host(f"mount --bind /dev/null {file}")
    assert_clean_failure(
        r,
        f"no subordinate ids for {workspace.user.name} in {file}",
        f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {workspace.user.name}",
    )


def test_nothing_left_after_a_failed_start(workspace: Workspace) -> None:
    # A dockerd that fails at once, after the namespaces and slirp4netns are up.
    # The fake in the test's own directory: another test (or worker) writing a fake of its
    # own to one path in /tmp would rewrite the very file this bind mount shows.
    fake = workspace.root / "fake-dockerd"
    r = workspace.docker_up_on_broken_host(
        f"printf '#!/bin/sh\\necho boom >&2\\nexit 3\\n' > {fake} && "
        f"chmod 755 {fake} && mount --bind {fake} /usr/sbin/dockerd"
    )
    assert_clean_failure(r, "dockerd exited with code 3", "boom")
    run_dir = workspace.runtime_dir / "docker-up"
    assert not (run_dir / "docker.sock").exists()
    assert not (run_dir / "state.json").exists()


def test_a_data_directory_of_another_id(workspace: Workspace) -> None:
    # What a pod meets on a volume another pod wrote first, under an id range of its own:
    # docker-up's 0700 directory there belongs to the overflow id. Seen with podman kube
    # play, whose emptyDir volumes are named after the manifest's volume, not the pod.
    data = workspace.root / "data"
    foreign = workspace.root / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    user = workspace.user
    r = workspace.docker_up_on_broken_host(
        f"install -d -o {user.uid} -g {user.gid} {data} {data}/docker-up && "
        f"mount --bind {foreign} {data}/docker-up"
    )
    assert_clean_failure(
        r,
        f"cannot create or change {data}/docker-up/",
        f"{data}/docker-up belongs to uid 65534 (mode 0700)",
        "a volume of its own",
    )
    # What docker-up did not create, it left as it was.
    st = foreign.stat()
    assert (st.st_uid, st.st_mode & 0o7777, list(foreign.iterdir())) == (65534, 0o700, [])


def test_install_deps_without_root_prints_the_command(workspace: Workspace) -> None:
    r = workspace.docker_up_on_broken_host(
        "mount --bind /dev/null /usr/bin/slirp4netns", "install-deps"
    )
    assert r.returncode == 1
    assert "sudo apt-get update && sudo apt-get install -y slirp4netns" in r.stdout
