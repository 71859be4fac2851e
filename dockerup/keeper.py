"""What stays resident: the supervisor docker-up turns into once dockerd answers.

docker-up needs typer, rich, the docker SDK and pyroute2 to start (about 30 MB of Python);
none of them to keep watch. So once the daemon is ready, the CLI process execs this
stdlib-only script (`python -S`), which keeps the same PID, the same children (dockerd and
the network helper, still reapable) and the fds it needs: the instance lock and the pipe
whose closing tells slirp4netns to exit. It stops everything in order on SIGINT/SIGTERM/SIGHUP,
and when dockerd or the network helper dies on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from typing import Any


def log(msg: str) -> None:
    print(f"docker-up: {msg}", file=sys.stderr, flush=True)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


class Child:
    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.fd = os.pidfd_open(pid)
        self.status: int | None = None

    def reap(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is not None

    def stop(self, sig: int, timeout: float) -> None:
        """Signal, wait up to timeout, then SIGKILL."""
        if self.reap():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        deadline = time.monotonic() + timeout
        while not self.reap():
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.status = -signal.SIGKILL
                return
            select.select([self.fd], [], [], left)


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: None)
    # The CLI blocked these signals before exec so none could be lost in between.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

    dockerd = Child("dockerd", spec["dockerd_pid"])
    net = Child(spec["net_name"], spec["net_pid"])
    code = 0
    while True:
        ready, _, _ = select.select([wake_r, dockerd.fd, net.fd], [], [])
        if wake_r in ready:
            log("stopping")
            break
        if dockerd.fd in ready and dockerd.reap():
            log(f"dockerd {describe(dockerd.status or 0)} on its own; last lines of its log:")
            sys.stderr.write(tail(spec["dockerd_log"]))
            code = 1
            break
        if net.fd in ready and net.reap():
            log(f"{net.name} {describe(net.status or 0)}; the daemon has no network, stopping")
            code = 1
            break

    # Ignore further Ctrl-C: cleanup must finish, or processes and files are left behind.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    dockerd.stop(signal.SIGTERM, spec["stop_timeout"])
    os.close(spec["exit_fd"])  # slirp4netns' signal to exit
    net.stop(signal.SIGTERM, 5.0)
    for path in spec["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    os.close(spec["lock_fd"])
    return code


if __name__ == "__main__":
    sys.exit(main())
