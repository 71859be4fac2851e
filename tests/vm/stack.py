"""The bed's helpers: docker-up on a real systemd host (Debian 13: cgroup v2, logind,
AppArmor), as an unprivileged user with a subordinate range, started the two ways users start
it: from a login session (a PAM login through `runuser -l`, which opens a logind session) and
as a service of the user's systemd manager (`systemd-run --user -p Delegate=yes`, as Docker's
rootless unit). Runs as root inside the VM scripts/vm boots, acting as $DOCKER_UP_VM_USER.

Each test module starts one stack (a module fixture, `stack_fixture`); its tests then look at
one behaviour each (CoreChecks), and the module's last test stops it and looks for leftovers
(`stop_leaves_nothing`)."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER = os.environ.get("DOCKER_UP_VM_USER", "du-vm")
BUSYBOX = os.environ.get("DOCKER_UP_VM_BUSYBOX", "/vm/busybox.tar")
SUBIDS = range(100000, 165536)
# Under TCG a first container or a build takes seconds, not milliseconds; on a machine
# shared with other VMs and suites (load 20) a container start took a minute and docker-up's
# start over three. START matches the start-timeout scripts/vm-guest configures.
SLOW = 300
START = 600


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    """Poll a condition until it holds or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def login(script: str, timeout: float = SLOW) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a fresh PAM login session of the user, as a user who logs in and
    types it would: `runuser -l` runs PAM's session stack, where pam_systemd registers the
    session with logind (session-cN.scope, XDG_RUNTIME_DIR, the user's bus). Class "user",
    as an ssh or console login gets: without a TTY logind would file it as "background"."""
    uid = pwd.getpwnam(USER).pw_uid
    env = f"export DOCKER_HOST=unix:///run/user/{uid}/docker-up/docker.sock\n"
    return subprocess.run(
        ["runuser", "-l", USER, "-c", env + script],
        env={**os.environ, "XDG_SESSION_CLASS": "user"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(script: str, timeout: float = SLOW) -> str:
    """login(), which must succeed: its output, else a failure showing what it said."""
    r = login(script, timeout)
    assert r.returncode == 0, f"{script!r} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def status() -> dict[str, Any]:
    """`docker-up status --json` as the user (it exits non-zero when nothing runs)."""
    doc: dict[str, Any] = json.loads(ok("docker-up status --json || true"))
    return doc


def users_processes(uid: int) -> list[str]:
    """What runs as the user or as one of its subordinate ids, apart from its systemd manager
    (user@UID.service's init.scope) and the session bus it activates: "pid cgroup cmdline"."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            owner = d.stat().st_uid
            cgroup = (d / "cgroup").read_text().strip()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if owner != uid and owner not in SUBIDS:
            continue
        if cgroup.endswith(("/init.scope", "/dbus.service")) and f"user@{uid}.service" in cgroup:
            continue
        if cmd:  # a zombie has none and runs nothing
            found.append(f"{d.name} {cgroup} {cmd}")
    return found


@dataclass
class Stack:
    context: str
    uid: int
    stop: Callable[[], None]


def start_in_login_session(uid: int) -> Stack:
    ok("docker-up --detach", START + 30)
    return Stack("login", uid, lambda: ok("docker-up stop"))


def stack_fixture(start: Callable[[int], Stack]) -> Iterator[Stack]:
    """Start the user's stack one way, import the test image; after the module, end whatever
    a failed stop left."""
    uid = pwd.getpwnam(USER).pw_uid
    assert not users_processes(uid), "the user runs something before the test"
    s = start(uid)
    ok(f"docker import {BUSYBOX} bb:test >/dev/null")
    yield s
    if users_processes(uid):
        login("docker-up stop", timeout=60)


def stop_leaves_nothing(stack: Stack) -> None:
    stack.stop()
    try:
        wait_for(lambda: not users_processes(stack.uid), 60, "the user's processes to end")
    except AssertionError:
        left = users_processes(stack.uid)
        raise AssertionError("left running after docker-up stop:\n" + "\n".join(left)) from None


class CoreChecks:
    """What every way of starting docker-up must give (test classes inherit it)."""

    def test_docker_run(self, stack: Stack) -> None:
        out = ok("docker run --rm bb:test echo hi from a container")
        assert out.strip() == "hi from a container"

    def test_published_port_answers_on_the_hosts_loopback(self, stack: Stack) -> None:
        try:
            # (In the try: a failed run may still leave the container created.)
            ok(
                "docker run -d --name web -p 127.0.0.1:18080:80 bb:test "
                "sh -c 'mkdir -p /www && echo served-from-the-container > /www/index.html "
                "&& exec httpd -f -p 80 -h /www'"
            )
            body = wait_for(
                fetch_local_18080, 60, "the published port to answer on 127.0.0.1:18080"
            )
            assert body == "served-from-the-container\n"
        finally:
            login("docker rm -f web")

    def test_docker_build_runs_a_step(self, stack: Stack) -> None:
        dockerfile = 'FROM bb:test\nRUN echo built-here > /built\nCMD ["cat", "/built"]\n'
        # The context outside the home: test_user_manager compares the home before and after.
        ok(
            f"ctx=$(mktemp -d) && printf %s {shlex.quote(dockerfile)} > $ctx/Dockerfile "
            '&& docker build -q -t bb:built $ctx; rc=$?; rm -rf "$ctx"; exit $rc'
        )
        assert ok("docker run --rm bb:built").strip() == "built-here"


def fetch_local_18080() -> str:
    try:
        with urllib.request.urlopen("http://127.0.0.1:18080/", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""
