"""One docker-up per user: its lock, its runtime directory, its state file, and what a
stopped or killed one leaves behind. Every verb that looks at a running docker-up (status,
stop, logs, exec) and the executor that starts one use these."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from dockerup.keeper import state
from dockerup.keeper.state import Running as Running
from dockerup.linux import procid
from dockerup.plan.require import require_own_runtime
from dockerup.settings.paths import Paths
from dockerup.wire.ping import ping

Progress = Callable[[str], None]


class AlreadyRunning(Exception):
    pass


def take_lock(paths: Paths) -> int | None:
    """One docker-up per user: the fd holding the lock, or None when another holds it. The
    lock lives as long as its open file, which the keeper (or the lazy holder) inherits."""
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def instance_lock(paths: Paths) -> Iterator[int]:
    """The lock for one start; a second docker-up must not disturb the first."""
    fd = take_lock(paths)
    if fd is None:
        raise AlreadyRunning(paths.docker_host)
    try:
        yield fd
    finally:
        os.close(fd)


def is_locked(paths: Paths) -> bool:
    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def prepare_runtime(paths: Paths) -> None:
    """The runtime directory holds the Docker socket: it must be ours and closed to others."""
    paths.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_runtime(paths)
    os.chmod(paths.runtime, 0o700)


def check_runtime(paths: Paths) -> None:
    """Every command that reads or writes the runtime directory (the socket, the state, the
    logs) first makes sure it is a directory of ours: the fallback under /tmp can be made
    by anyone first, who would then receive the user's Docker API traffic."""
    try:
        st = paths.runtime.lstat()
    except FileNotFoundError:
        return
    foreign = st.st_uid != os.getuid() or stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode)
    require_own_runtime(paths, foreign)


def read_state(paths: Paths) -> Running | None:
    """The running daemon's record (typed); None when there is none or it is unreadable."""
    return state.read(paths.state_file, Running)


def end_orphans(paths: Paths, progress: Progress, keep_socket: bool = False) -> None:
    """Under the lock nothing of ours runs: whatever state.json names and still runs is an
    orphan of a docker-up that was killed. End it, but only if it is the very process that
    was recorded (pid, start time, executable); a PID alone may be anyone's by now."""
    record = read_state(paths)
    procs = record.procs if record else {}  # none recorded: nothing is signalled
    for name in ("dockerd", "net", "keeper"):
        ident = procs.get(name)
        if ident and procid.identify(ident.pid) == ident:
            progress(f"ending orphaned {name} (pid {ident.pid}) of an earlier docker-up")
            procid.terminate(ident, 15)
    remove_stale(paths, keep_socket)


def stale_files(paths: Paths, keep_socket: bool = False) -> tuple[Path, ...]:
    """What a stopped docker-up leaves behind. With socket activation the socket is ours,
    bound by the lazy holder, not a leftover."""
    files = (
        paths.pidfile,
        paths.slirp_api,
        paths.state_file,
        paths.ports_sock,
        paths.main_pid,
        paths.accel_sock,
        paths.rootlesskit_api,
        paths.published_ports_table,
        paths.net_ready,
    )
    return files if keep_socket else (paths.socket, *files)


def remove_stale(paths: Paths, keep_socket: bool = False) -> None:
    for p in stale_files(paths, keep_socket):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def wait_until_answering(paths: Paths, timeout: float) -> bool:
    """For a second docker-up: the first may still be starting. Wait for its API (a raw
    /_ping over the socket), as long as it still holds the lock."""
    from dockerup.waiting import wait_until

    gone = []

    def answers_or_gone() -> bool:
        if ping(paths.socket):
            return True
        if not is_locked(paths):
            gone.append(True)
            return True
        return False

    return wait_until(answers_or_gone, timeout) and not gone


def write_state(paths: Paths, running: Running) -> None:
    state.write(paths.state_file, running)
