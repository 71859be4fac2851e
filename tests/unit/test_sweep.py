"""The keeper's last sweep ends everything in docker-up's user namespace and returns once
it has all exited, without going round forever on what is already dead."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dockerup.keeper import sweep
from dockerup.waiting import wait_until


def test_the_sweep_ends_a_tree_and_passes_over_its_zombies(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    # A shell in a user namespace of its own with two children; the shell stays this
    # process's child, so once killed it is a zombie until the end of the test.
    tree = subprocess.Popen(
        ["unshare", "--user", "--", "sh", "-c", f"sleep 300 & sleep 300 & touch {ready}; wait"]
    )
    try:
        assert wait_until(ready.exists, 10)
        userns = os.open(f"/proc/{tree.pid}/ns/user", os.O_RDONLY)
        try:
            killed, left = sweep.end_namespace(userns, set(), timeout=10)
        finally:
            os.close(userns)
        # Each once: the shell's zombie keeps its namespace link, and a sweep that counted
        # it would kill and list it again pass after pass until its deadline.
        assert sorted(n.split()[0] for n in killed) == ["sh", "sleep", "sleep"]
        assert left == []
        assert Path(f"/proc/{tree.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        tree.kill()
        tree.wait()
