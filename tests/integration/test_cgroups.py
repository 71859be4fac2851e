"""The cgroup decision against the real dockerd, on whatever host this runs (cgroup v1 here,
cgroup v2 with systemd in the Debian 13 VM): status says the driver dockerd really uses, the
start says once which limits do not apply, and `docker run --memory` either gets its limit
or a clear answer, never a silent run without it."""

from __future__ import annotations

import json
from pathlib import Path

from .harness import DockerUp, Workspace, up


def test_the_drivers_status_start_notice_and_memory_limit_agree_with_dockerd(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path
) -> None:
    s = up(workspace, started)
    doc = json.loads(workspace.docker_up("status", "--json").stdout)
    info = workspace.docker("info", "--format", "{{.CgroupDriver}} {{.CgroupVersion}}")
    driver, version = info.stdout.split()
    assert doc["cgroup_driver"] == driver, doc
    assert set(doc["cgroup_limits"]) <= {"memory", "cpu", "pids"}
    (line,) = [x for x in workspace.docker_up("status").stdout.splitlines() if "cgroups" in x]
    assert line.split()[:2] == ["cgroups", driver], line
    said = s.stderr()
    notice = "do not apply to containers here: "
    if set(doc["cgroup_limits"]) == {"memory", "cpu", "pids"}:
        assert notice not in said
    else:
        assert said.count(notice) == 1, said  # once, with the reason and the fix
        assert doc["cgroup_reason"] in said and doc["cgroup_fix"] in said

    workspace.docker("import", str(busybox_tar), "bb:test")
    # A plain container runs on every host, limits or none.
    assert workspace.docker("run", "--rm", "bb:test", "echo", "ok").stdout.strip() == "ok"
    memory = ["run", "--rm", "--memory", "64m", "bb:test"]
    if "memory" in doc["cgroup_limits"]:
        r = workspace.docker(*memory, "cat", "/sys/fs/cgroup/memory.max")
        assert r.stdout.strip() == "67108864"
    elif version == "2":  # docker-up pinned the driver: dockerd would drop it without a word
        r = workspace.docker(*memory, "true", check=False)
        assert r.returncode != 0
        assert "docker-up: --memory cannot apply here: " in r.stderr, r.stderr
        assert doc["cgroup_fix"] in r.stderr
    else:  # cgroup v1: dockerd's own behaviour, as before docker-up knew cgroup v2
        assert workspace.docker(*memory, "echo", "ran").stdout.strip() == "ran"
