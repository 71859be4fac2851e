"""Nothing outlives the process that started it, even when that process is gone before its
new child runs its first line (issue 33). PR_SET_PDEATHSIG only takes effect for a parent
that ends after the prctl: each launcher's child must see that its parent is no longer the
one that forked it, and end, instead of living on under init (containerd did, parent 1,
after a start whose dockerd exited at once on a loaded machine).

The window is forced, not hoped for: a fork hook holds the new child before its first
line, SIGKILLs its parent and waits until that parent is gone; only then does the
launcher's own code run in the child. A reaper process (PR_SET_CHILD_SUBREAPER) adopts the
child in init's place, so the test sees how it ends and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from dockerup import lean
from dockerup.keeper.resident import Keeper
from dockerup.linux import libc as linux
from dockerup.namespace import dockerd, netstart
from dockerup.ports import proxy as portproxy
from dockerup.wire.specs import Command

Launch = Callable[[list[str], Path], None]


def run_sh(marker: Path) -> list[str]:
    """A program that leaves a trace if it ever runs."""
    return ["/bin/sh", "-c", f"echo ran > {marker}"]


def containerd(argv: list[str], tmp: Path) -> None:
    dockerd.start_containerd(argv, {}, str(tmp / "containerd.pid"))


def keepers_dockerd(argv: list[str], tmp: Path) -> None:
    keeper = Keeper.__new__(Keeper)
    keeper.spec = types.SimpleNamespace(  # type: ignore[assignment]
        pidfile=str(tmp / "dockerd.pid"),
        dockerd_log=str(tmp / "dockerd.log"),
        ns_fds={},
        containerd=Command(argv=["/bin/true"], env={}),
        containerd_pidfile=str(tmp / "containerd.pid"),
        watch_connects=None,
        dockerd=Command(argv=argv, env={}),
        listen_fd=None,
    )
    keeper.spawn_dockerd()


def real_docker_proxy(argv: list[str], tmp: Path) -> None:
    portproxy.start_real_proxy(argv, ())


def network_helper(argv: list[str], tmp: Path) -> None:
    netstart.start_net(argv, 0, "", str(tmp / "net.log"))


LAUNCHERS: dict[str, Launch] = {
    "dockerd.start_containerd": containerd,
    "keeper.spawn_dockerd": keepers_dockerd,
    "portproxy.start_real_proxy": real_docker_proxy,
    "netstart.start_net": network_helper,
}


def reap_all(deadline: float) -> list[int]:
    """The exit statuses of every child of this (subreaper) process, until none is left."""
    statuses = []
    while time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid:
            statuses.append(status)
        else:
            time.sleep(0.01)
    raise AssertionError("a child outlived the deadline")


def orphaned_start(launch: Launch, tmp: Path) -> int:
    """In a reaper process: a parent starts a child through launch, and dies (SIGKILL)
    before the child's first line. The child's exit status as the reaper saw it."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
            parent = os.fork()
            if parent == 0:
                held = [False]
                gone = os.getpid()

                def hold() -> None:  # in the new child, before the launcher's code
                    if held[0]:
                        return  # a grandchild (the keeper's fork starts containerd)
                    held[0] = True
                    os.kill(gone, signal.SIGKILL)
                    # Until the kernel has given this process to the reaper: the parent's
                    # fds close earlier in its exit, a pipe's end of file would be too soon.
                    while os.getppid() == gone:
                        time.sleep(0.001)

                os.register_at_fork(after_in_child=hold)
                launch(run_sh(tmp / "ran"), tmp)
                time.sleep(30)  # the child's hook kills this process
                os._exit(0)
            os.waitpid(parent, 0)
            statuses = reap_all(time.monotonic() + 20)
            code = os.waitstatus_to_exitcode(statuses[0]) & 0xFF if statuses else 98
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_a_child_whose_parent_died_first_ends_at_once(name: str, tmp_path: Path) -> None:
    code = orphaned_start(LAUNCHERS[name], tmp_path)
    assert not (tmp_path / "ran").exists(), f"{name}: the program ran with its parent gone"
    assert code == 1, code  # die_with_parent's exit, before anything else ran


def test_a_child_whose_parent_lives_runs() -> None:
    """The check passes a living parent: the launcher's program runs as it should."""
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            linux.die_with_parent(signal.SIGKILL, parent)
            os.write(w, b"ran")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 3) == b"ran"
    os.close(r)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_auto_ports_inside_helper_whose_keeper_is_gone_ends(tmp_path: Path) -> None:
    """The inside helper is a program of its own: the keeper names itself on its command
    line. Started for a keeper that has already ended, it ends at once instead of serving
    (it would wait on its connection forever)."""
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    script = Path(lean.script("autoinside"))
    with ours, theirs:
        p = subprocess.run(
            [sys.executable, "-S", str(script), str(theirs.fileno()), "-1", "-1", str(gone)],
            pass_fds=[theirs.fileno()],
            timeout=10,
        )
    assert p.returncode == 1
