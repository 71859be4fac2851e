"""Issue 32's product on the Debian 13 VM (scripts/vm; cgroup v2, systemd, AppArmor), as the
bed's user: what doctor says of this host; docker-up without the user's bus (containers run,
limits refused with the fix). `docker-up autostart enable --systemd` (limits, attacks on the
delegated cgroup and the bus, `disable`) is test_user_manager's stack. With the bed's helpers
(stack.py)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from .stack import BUSYBOX, USER, login, ok, status, wait_for

pytestmark = pytest.mark.skipif(
    not os.environ.get("DOCKER_UP_VM_USER"), reason="acts on a whole systemd host: the VM's"
)


def uid() -> int:
    return pwd.getpwnam(USER).pw_uid


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
