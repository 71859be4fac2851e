"""`docker-up stop` returns only once the keeper has wholly exited, not when its lock is
free: the keeper frees the lock at the end of its shutdown and then still has to exit,
which on a loaded machine took long enough for CI's check, right after a stop, to find a
process of the user's still running (test_lifecycle::test_detach_status_logs_stop).

The window is forced: a stand-in keeper holds the lock as the keeper does, frees it on
SIGTERM, then waits for the test before it exits."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from dockerup.keeper import background, instance, state
from dockerup.keeper.state import LazyRecord
from dockerup.linux import procid
from dockerup.settings.paths import Paths
from dockerup.waiting import wait_until

STAND_IN = """
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("locked", flush=True)
signal.sigwait({signal.SIGTERM})
os.close(fd)
sys.stdin.read()  # exits once the test closes its stdin
"""


def test_stop_returns_once_the_keeper_has_exited_not_when_its_lock_is_free(
    tmp_path: Path,
) -> None:
    paths = Paths(tmp_path / "run", tmp_path / "data", tmp_path / "config", True)
    instance.prepare_runtime(paths)
    keeper = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(paths.lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert keeper.stdin is not None and keeper.stdout is not None
    try:
        assert keeper.stdout.readline() == "locked\n"
        ident = procid.identify(keeper.pid)
        state.write(background.lazy_file(paths), LazyRecord(keeper.pid, ident))
        returned: list[bool] = []
        stopping = threading.Thread(target=lambda: returned.append(background.stop(paths, 30)))
        stopping.start()

        assert wait_until(lambda: not instance.is_locked(paths), 10), "SIGTERM never came"
        # The lock is free, the process still runs: stop has not returned (it would within
        # its 50 ms poll if it waited on the lock alone).
        stopping.join(1.0)
        assert stopping.is_alive() and not returned

        keeper.stdin.close()
        stopping.join(10)
        assert returned == [True]
        assert keeper.poll() is not None
    finally:
        keeper.kill()
        keeper.wait()
