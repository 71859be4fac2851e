"""Issue 32's product on the Debian 13 VM (scripts/vm; cgroup v2, systemd, AppArmor), as the
bed's user: what doctor says of this host; docker-up without the user's bus (containers run,
limits refused with the fix); `docker-up autostart enable --systemd` (limits reach the
containers' cgroups) and what a container or another local user can do with the delegated
cgroup and the bus; `disable` leaves the home as it was. With the bed's helpers (stack.py)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .stack import BUSYBOX, SLOW, USER, login, ok, wait_for

pytestmark = pytest.mark.skipif(
    not os.environ.get("DOCKER_UP_VM_USER"), reason="acts on a whole systemd host: the VM's"
)
OTHER = "du-other"  # another local user, who must get nothing of USER's
UNIT = "docker-up.service"


def uid() -> int:
    return pwd.getpwnam(USER).pw_uid


def status() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok("docker-up status --json || true"))
    return doc


def leftovers() -> list[str]:
    """The user's processes but its manager's and its bus's."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or d.stat().st_uid not in (uid(), *range(100000, 165536)):
                continue
            cgroup = (d / "cgroup").read_text().strip()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmd and not cgroup.endswith(("/init.scope", "/dbus.service", "/dbus-broker.service")):
            found.append(f"{d.name} {cgroup} {cmd}")
    return found


def home_files() -> dict[str, tuple[int, bytes | str]]:
    """Every path in the home but docker-up's own data and cache: mode and content."""
    home = Path(pwd.getpwnam(USER).pw_dir)
    own = (home / ".local/share/docker-up", home / ".cache/docker-up")
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(home):
        dirs[:] = [x for x in dirs if Path(dirpath, x) not in own]
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = (st.st_mode, os.readlink(p))
            else:
                out[str(p)] = (st.st_mode, b"" if p.is_dir() else p.read_bytes())
    return out


def test_doctor_says_what_this_host_allows() -> None:
    doc = json.loads(login("docker-up doctor --json").stdout)
    checks = {c["id"]: c for c in doc["checks"]}
    sysctl = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if sysctl.exists() and sysctl.read_text().strip() == "1":
        assert checks["kernel.userns"]["status"] == "fail"
        assert "apparmor_parser -r /etc/apparmor.d/docker-up" in checks["kernel.userns"]["hint"]
    else:  # Debian 13: AppArmor on, unprivileged user namespaces not restricted
        assert checks["kernel.userns"]["status"] == "ok", checks["kernel.userns"]
    cg = checks["cgroups"]
    assert (cg["status"], cg["detail"].split(":")[0]) == (
        "ok",
        "systemd driver",
    ), cg


def test_without_the_users_bus_containers_run_and_limits_are_refused() -> None:
    """issue 32's failure: dockerd saw systemd and every container failed. Without a bus to
    reach the user manager, docker-up pins the driver: containers run, a limit is refused."""
    assert not leftovers()
    nobus = "export DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent/bus\n"
    r = login(nobus + "docker-up --detach")
    assert r.returncode == 0, r.stderr
    try:
        assert "--memory, --cpus, --pids-limit do not apply to containers here" in r.stderr
        s = status()
        assert (s["cgroup_driver"], s["cgroup_limits"]) == ("none", [])
        assert ok("docker info --format '{{.CgroupDriver}}'").strip() == "none"
        ok(f"docker import {BUSYBOX} bb:test >/dev/null")
        assert ok("docker run --rm bb:test echo ran").strip() == "ran"
        refused = login("docker run --rm --memory 64m bb:test true")
        assert refused.returncode != 0
        assert "docker-up: --memory cannot apply here: " in refused.stderr, refused.stderr
        assert "dbus-user-session" in refused.stderr
    finally:
        ok("docker-up stop")
    wait_for(lambda: not leftovers(), 60, "nothing of the user's left running")


def test_the_unit_applies_limits_resists_others_and_leaves_the_home_as_it_was() -> None:
    assert not leftovers()
    before = home_files()
    ok("docker-up autostart enable --systemd")
    try:
        wait_for(lambda: status().get("answering"), SLOW, "docker-up's unit to answer")
        s = status()
        assert (s["cgroup_driver"], sorted(s["cgroup_limits"])) == (
            "systemd",
            ["cpu", "memory", "pids"],
        ), s
        ok(f"docker import {BUSYBOX} bb:test >/dev/null")
        for option, file, want in (
            ("--memory 64m", "memory.max", "67108864"),
            ("--cpus 0.5", "cpu.max", "50000 100000"),
            ("--pids-limit 100", "pids.max", "100"),
        ):
            out = ok(f"docker run --rm {option} bb:test cat /sys/fs/cgroup/{file}")
            assert out.strip() == want, option
        attacks_on_the_delegated_cgroup_and_the_bus()
    finally:
        ok("docker-up autostart disable --systemd")
    wait_for(lambda: not leftovers(), 60, "nothing of the user's left running")
    assert login(f"systemctl --user is-active {UNIT}").returncode != 0
    assert home_files() == before


def attacks_on_the_delegated_cgroup_and_the_bus() -> None:
    cid = ok("docker run -d --memory 64m bb:test sleep 600").strip()
    try:
        # The container itself: its cgroup files are read-only to it.
        r = login(f"docker exec {cid} sh -c 'echo max > /sys/fs/cgroup/memory.max'")
        assert r.returncode != 0, r.stdout
        # ... and the user's bus is not in it (not: the exec failed).
        r = login(f"docker exec {cid} ls /run/user/{uid()}/bus")
        assert r.returncode != 0 and "No such file or directory" in r.stderr, r.stderr
        (scope,) = Path("/sys/fs/cgroup").glob(f"user.slice/**/docker-{cid}.scope")
        assert (scope / "memory.max").read_text().strip() == "67108864"
        if subprocess.run(["id", OTHER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", OTHER], check=True)
        # Another local user: neither the container's cgroup nor the bus.
        bus = f"/run/user/{uid()}/bus"
        other = [
            f"echo max > {scope}/memory.max",
            f"echo $$ > {scope}/cgroup.procs",
            f"python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"{bus}\")'",
        ]
        for attempt in other:
            r = subprocess.run(
                ["runuser", "-u", OTHER, "--", "sh", "-c", attempt],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            # Refused for being someone else (not: runuser or the shell failed).
            assert r.returncode != 0, f"{OTHER} could: {attempt}"
            assert "Permission denied" in r.stderr, r.stderr
        assert (scope / "memory.max").read_text().strip() == "67108864"
    finally:
        login(f"docker rm -f {cid}")
