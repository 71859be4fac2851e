"""Under the user's systemd manager, as issue 32's product runs it: `docker-up autostart
enable --systemd` (its unit: `docker-up up` as the main process, Delegate=yes, KillMode=mixed,
as Docker's rootless unit runs dockerd). Then the core checks; the resource limits a
container asks for, seen in its own cgroup (status says the systemd driver with every limit);
what a container or another local user can do with the delegated cgroup and the user's bus;
`docker-up stop` ends the unit for good (not restarted) and leaves nothing of the user's
running; `autostart disable` stops a running unit, leaves nothing running and the home as it
was before enabling. One start of the unit serves them all (under TCG a start costs tens of
seconds); the disable check starts it again, as the user manager would at the next boot."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import (
    START,
    USER,
    CoreChecks,
    Stack,
    login,
    ok,
    stack_fixture,
    status,
    stop_leaves_nothing,
    users_processes,
    wait_for,
)

UNIT = "docker-up.service"  # the unit `docker-up autostart enable --systemd` writes
OTHER = "du-other"  # another local user, who must get nothing of USER's
LIMITS = [
    ("--memory 64m", "memory.max", "67108864"),
    ("--cpus 0.5", "cpu.max", "50000 100000"),
    ("--pids-limit 100", "pids.max", "100"),
]


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


HOME_BEFORE: dict[str, tuple[int, bytes | str]] = {}


def wait_answering() -> None:
    try:
        wait_for(lambda: status().get("answering"), START, "docker-up's unit to answer")
        ok(
            f"timeout {START} sh -c 'until docker version >/dev/null 2>&1; do sleep 0.5; done'",
            START + 30,
        )
    except AssertionError:
        journal = login(f"journalctl --user -u {UNIT} --no-pager -n 40")
        raise AssertionError(f"docker-up's unit:\n{journal.stdout}") from None


def start_with_the_unit(uid: int) -> Stack:
    HOME_BEFORE.update(home_files())
    ok("docker-up autostart enable --systemd")
    wait_answering()

    def stop() -> None:
        ok("docker-up stop")
        # Ended for good: Restart=on-failure must not bring back a docker-up that was stopped.
        wait_for(
            lambda: login(f"systemctl --user is-active -q {UNIT}").returncode != 0,
            60,
            f"{UNIT} to end after docker-up stop",
        )

    return Stack("manager", uid, stop)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    try:
        yield from stack_fixture(start_with_the_unit)
    finally:
        # Whatever a failed test left: the unit, then what enabling wrote.
        login("docker-up autostart disable --systemd", timeout=120)


class TestUserManager(CoreChecks):
    def test_status_says_the_systemd_driver_with_every_limit(self, stack: Stack) -> None:
        s = status()
        assert (s["cgroup_driver"], sorted(s["cgroup_limits"])) == (
            "systemd",
            ["cpu", "memory", "pids"],
        ), s

    @pytest.mark.parametrize(("option", "file", "want"), LIMITS, ids=[x[1] for x in LIMITS])
    def test_resource_limit_reaches_the_containers_cgroup(
        self, stack: Stack, option: str, file: str, want: str
    ) -> None:
        out = ok(f"docker run --rm {option} bb:test cat /sys/fs/cgroup/{file}")
        assert out.strip() == want

    def test_attacks_on_the_delegated_cgroup_and_the_bus(self, stack: Stack) -> None:
        cid = ok("docker run -d --memory 64m bb:test sleep 600").strip()
        try:
            # The container itself: its cgroup files are read-only to it.
            r = login(f"docker exec {cid} sh -c 'echo max > /sys/fs/cgroup/memory.max'")
            assert r.returncode != 0, r.stdout
            # ... and the user's bus is not in it (not: the exec failed).
            r = login(f"docker exec {cid} ls /run/user/{stack.uid}/bus")
            assert r.returncode != 0 and "No such file or directory" in r.stderr, r.stderr
            (scope,) = Path("/sys/fs/cgroup").glob(f"user.slice/**/docker-{cid}.scope")
            assert (scope / "memory.max").read_text().strip() == "67108864"
            if subprocess.run(["id", OTHER], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "-m", OTHER], check=True)
            # Another local user: neither the container's cgroup nor the bus.
            bus = f"/run/user/{stack.uid}/bus"
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


def test_stop_leaves_nothing(stack: Stack) -> None:
    stop_leaves_nothing(stack)


def test_disable_stops_the_running_unit_and_leaves_the_home_as_it_was(stack: Stack) -> None:
    ok(f"systemctl --user start {UNIT}")
    wait_answering()
    ok("docker-up autostart disable --systemd")
    wait_for(lambda: not users_processes(stack.uid), 60, "nothing of the user's left running")
    assert login(f"systemctl --user is-active {UNIT}").returncode != 0
    assert home_files() == HOME_BEFORE
