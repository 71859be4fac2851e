"""doctor on a machine really broken (in a private mount namespace, or a throwaway user)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import USER, VENV, User, Workspace, subid_files

# A real character device for tun at the mode a new machine has (0600, root's).
TUN_0600 = (
    "d=$(mktemp -d) && mknod $d/tun c 10 200 && chmod 0600 $d/tun && "
    "mount --bind $d/tun /dev/net/tun"
)


def verdicts(r: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    doc = json.loads(r.stdout)
    assert doc["version"] == 1
    return {c["id"]: c for c in doc["checks"]}


def test_doctor_on_this_machine_passes(workspace: Workspace) -> None:
    r = workspace.docker_up("doctor", "--json")
    assert r.returncode == 0, r.stdout
    v = verdicts(r)
    assert v["mode"]["detail"].startswith("rootless")
    assert v["iptables"]["status"] == "ok" and v["storage"]["status"] == "ok"
    # Each helper's version as the installed one says it (1.2's --help does not).
    assert re.match(r"\d+\.\d+", v["net.slirp4netns"]["detail"]), v["net.slirp4netns"]
    # The table renders without a TTY and with NO_COLOR.
    r = workspace.docker_up("doctor")
    assert r.returncode == 0 and "docker-up doctor" in r.stdout and "\x1b[" not in r.stdout


# A new machine before its set-up: tun 0600, no subordinate ids, no engine, no slirp4netns.
NEW_MACHINE = (
    f"{TUN_0600} && for f in /etc/subuid /etc/subgid /usr/sbin/dockerd /usr/bin/slirp4netns; "
    "do mount --bind /dev/null $f; done"
)


@pytest.mark.parametrize(
    "breakage", ["true", TUN_0600, NEW_MACHINE], ids=["fine", "tun-0600", "new-machine"]
)
def test_doctor_at_80_columns_takes_at_most_a_line_and_a_half_a_check(
    workspace: Workspace, breakage: str
) -> None:
    """A passing check is one line; what fails or warns gets its finding and fix below, and
    all of it fits 1.5 lines a check at 80 columns (it took 87 lines for 26 checks)."""
    workspace.extra_env["COLUMNS"] = "80"
    checks = len(verdicts(workspace.docker_up_on_broken_host(breakage, "doctor", "--json")))
    r = workspace.docker_up_on_broken_host(breakage, "doctor")
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, r.stdout
    assert len(lines) <= 1.5 * checks, r.stdout
    if breakage != "true":
        assert r.returncode == 1
        at = next(i for i, line in enumerate(lines) if line.startswith("✗ tun.access "))
        assert "fix: as root: chmod 0666 /dev/net/tun" in " ".join(lines[at : at + 4])
    else:
        assert r.returncode == 0
        assert sum(line.startswith("✓ ") for line in lines) >= checks - 3


def test_doctor_shows_the_chosen_driver(workspace: Workspace, net: str) -> None:
    v = verdicts(workspace.docker_up("doctor", "--json"))
    assert v["net.driver"]["detail"] == net
    assert v["net.pasta"]["status"] == "ok", v["net.pasta"]  # installed and usable here
    assert "passt 0.0~git" in v["net.pasta"]["detail"]  # Debian's pasta, named by package


@pytest.mark.parametrize(
    ("breakage", "check_id", "words"),
    [
        (TUN_0600, "tun.access", "chmod 0666 /dev/net/tun"),
        ("mount --bind /dev/null /etc/subuid", "ids.subuid", "usermod --add-subuids"),
        ("mount --bind /dev/null /usr/bin/slirp4netns", "programs", "apt-get install slirp4netns"),
        ("mount --bind /dev/null /usr/sbin/dockerd", "programs", "apt-get install docker.io"),
    ],
)
def test_doctor_names_the_problem_and_the_fix(
    workspace: Workspace, breakage: str, check_id: str, words: str
) -> None:
    r = workspace.docker_up_on_broken_host(breakage, "doctor", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    v = verdicts(r)[check_id]
    assert v["status"] == "fail"
    assert words in v["detail"] + v["hint"]
    # And `up` refuses with the same finding, pointing to doctor.
    r = workspace.docker_up_on_broken_host(breakage)
    assert r.returncode == 1 and "docker-up doctor" in r.stderr and "Traceback" not in r.stderr


def test_doctor_socket_path_too_long(workspace: Workspace) -> None:
    long_dir = workspace.root / ("x" * 90)
    long_dir.mkdir()
    os.chown(long_dir, workspace.user.uid, workspace.user.gid)
    workspace.extra_env["XDG_RUNTIME_DIR"] = str(long_dir)
    r = workspace.docker_up("doctor", "--json")
    assert r.returncode == 1
    assert verdicts(r)["runtime.socket"]["status"] == "fail"


def test_doctor_stale_socket(workspace: Workspace) -> None:
    d = workspace.runtime_dir / "docker-up"
    d.mkdir(mode=0o700)
    os.chown(d, workspace.user.uid, workspace.user.gid)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "docker.sock"))  # a socket nobody listens on any more
    s.close()
    r = workspace.docker_up("doctor", "--json")
    v = verdicts(r)["runtime.daemon"]
    assert v["status"] == "warn" and "stale socket" in v["detail"]


def test_doctor_sees_running_daemons(workspace: Workspace, user: User) -> None:
    other = Workspace(user, user.mkdtemp("dockerup-other-"))
    for sub in ("run", "data", "config"):
        (other.root / sub).mkdir(mode=0o700)
        os.chown(other.root / sub, user.uid, user.gid)
    try:
        assert workspace.docker_up("-d").returncode == 0
        assert other.docker_up("-d").returncode == 0
        workspace.extra_env["DOCKER_HOST"] = f"unix://{other.runtime_dir}/docker-up/docker.sock"
        v = verdicts(workspace.docker_up("doctor", "--json"))
        assert v["runtime.docker-up"]["status"] == "ok"
        # What the daemon itself says, through the Engine API (the docker SDK).
        assert "the API answers (Docker 20.10" in v["runtime.docker-up"]["detail"]
        assert v["runtime.daemon"]["status"] == "warn"
        assert "another daemon answers" in v["runtime.daemon"]["detail"]
    finally:
        workspace.docker_up("stop")
        other.docker_up("stop")
        shutil.rmtree(other.root, ignore_errors=True)


@pytest.fixture
def throwaway_user() -> Iterator[User]:
    """A user with no subordinate id range (useradd gives one by default on Debian). Named
    after this suite's test user: another suite on the machine (DOCKER_UP_TEST_USER differs)
    would otherwise userdel the very user this test is using."""
    name = f"{USER}-nosub"[:32]
    # useradd, doctor --fix and userdel rewrite /etc/subuid and /etc/subgid: not while
    # another test has them bind-mounted away (subid_files).
    with subid_files(exclusive=True):
        subprocess.run(["userdel", "-r", name], capture_output=True)
        subprocess.run(
            ["useradd", "-m", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name], check=True
        )
        try:
            yield User.get(name)
        finally:
            for flag in ("--del-subuids", "--del-subgids"):
                subprocess.run(["usermod", flag, "1-4294967294", name], capture_output=True)
            subprocess.run(["userdel", "-r", name], capture_output=True)


def test_doctor_fix_mends_tun_and_subuid(throwaway_user: User) -> None:
    u = throwaway_user
    assert u.name not in Path("/etc/subuid").read_text()
    env = f"env -i HOME={u.home} PATH={VENV}/bin:/usr/bin:/bin NO_COLOR=1"
    as_user = f"setpriv --reuid={u.uid} --regid={u.gid} --clear-groups {env}"
    script = f"""set -e
{TUN_0600}
{as_user} docker-up doctor --json > {u.home}/before.json || true
docker-up doctor --fix --user {u.name} > {u.home}/fix.out 2>&1 || true
{as_user} docker-up doctor --json > {u.home}/after.json && echo GREEN
stat -c %a /dev/net/tun
"""
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{VENV}/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    before = json.loads((u.home / "before.json").read_text())
    failing = {c["id"] for c in before["checks"] if c["status"] == "fail"}
    assert {"tun.access", "ids.subuid", "ids.subgid"} <= failing
    fix_out = (u.home / "fix.out").read_text()
    assert "let every user open /dev/net/tun" in fix_out
    assert f"give {u.name} subordinate uids" in fix_out
    assert "GREEN" in r.stdout, (r.stdout, r.stderr, (u.home / "after.json").read_text())
    assert r.stdout.split()[-1] == "666"
    assert f"{u.name}:" in Path("/etc/subuid").read_text()


def test_doctor_fix_without_root_prints_the_commands(workspace: Workspace) -> None:
    r = workspace.docker_up_on_broken_host(TUN_0600, "doctor", "--fix")
    assert "sudo chmod 0666 /dev/net/tun" in r.stdout
    assert r.returncode == 1
