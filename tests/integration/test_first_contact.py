"""What a new user meets, as that user with the installed command: --version, -h,
completion, and `status --json` of a real daemon (the published document, not the state
file)."""

from __future__ import annotations

import json

from tests.unit.given import PUBLISHED

from .harness import Workspace

# The status document's published fields: the unit test's list, checked here on a real daemon.


def test_version_help_and_completion(workspace: Workspace) -> None:
    r = workspace.docker_up("--version")
    assert (r.returncode, r.stdout.split()[0]) == (0, "docker-up"), r.stderr
    for args in (["-h"], ["status", "-h"]):
        r = workspace.docker_up(*args)
        assert r.returncode == 0 and "Usage: docker-up" in r.stdout, r.stderr
    r = workspace.docker_up("--show-completion", "bash")
    assert r.returncode == 0 and "complete -o default -F _docker_up_completion" in r.stdout


def test_status_json_is_the_published_document(workspace: Workspace) -> None:
    assert workspace.docker_up("-d").returncode == 0
    try:
        doc = json.loads(workspace.docker_up("status", "--json").stdout)
        assert (doc.pop("version"), doc.pop("kind")) == (1, "status")
        assert set(doc) == PUBLISHED  # no timings, no identity records
        assert (doc["schema"], doc["state"], doc["answering"]) == (
            "docker-up.status/1",
            "running",
            True,
        )
        assert doc["engine"].startswith("dockerd 20.10")
        debug = json.loads(workspace.docker_up("status", "--json", "--debug").stdout)
        assert debug["debug"]["timings"]["total"] > 0
        assert {"keeper", "dockerd"} <= set(debug["debug"]["procs"])
    finally:
        assert workspace.docker_up("stop").returncode == 0
    stopped = json.loads(workspace.docker_up("status", "--json").stdout)
    assert (stopped["running"], stopped["state"]) == (False, "stopped")
