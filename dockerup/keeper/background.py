"""Process management beside the executor (keeper/supervise.py): starting docker-up in the
background, the lazy socket holder, and stopping whatever runs. Takes plans and paths;
returns facts, never prints, never exits the caller."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from dockerup.errors import DockerUpError
from dockerup.keeper import instance, state, supervise
from dockerup.keeper.state import LazyRecord
from dockerup.linux import procid
from dockerup.linux.exits import STOP_SIGNALS
from dockerup.linux.fdwait import readable
from dockerup.logs import tail
from dockerup.plan.data import Plan
from dockerup.settings.paths import Paths
from dockerup.wire import messages
from dockerup.wire.messages import StartReport
from dockerup.wire.specs import LazySpec, Spec


def lazy_file(paths: Paths) -> Path:
    return paths.runtime / "lazy.json"


def read_lazy(paths: Paths) -> LazyRecord | None:
    """The lazy holder's record: socket activation waits for its first client."""
    return state.read(lazy_file(paths), LazyRecord)


def wait_for_other(plan: Plan) -> str:
    """Another docker-up holds the lock: wait until its API answers; its DOCKER_HOST."""
    if not instance.wait_until_answering(plan.paths, plan.config.start_timeout):
        raise DockerUpError(
            "another docker-up holds the lock but its daemon does not answer",
            hint="see `docker-up status` and `docker-up logs`",
        )
    return plan.paths.docker_host


def start_detached(plan: Plan) -> tuple[str, bool]:
    """Start in the background; return (DOCKER_HOST, already running) once the daemon
    answers, or raise with the log's tail. A forked process does the start and becomes the
    keeper; it reports over a pipe: first who it is, then how the start went. A stop
    signal to this process before then stops the background start too (stop_background)."""
    instance.prepare_runtime(plan.paths)
    r, w = os.pipe()
    # Not between the fork and the child's own handling: an Interrupted raised in the child
    # there would run this function's caller's code in it. The parent's waits here.
    signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    pid = os.fork()
    if pid == 0:  # the background docker-up
        os.close(r)
        daemonize(plan.paths)
        report_and_run(plan, w)
    os.close(w)
    lines: list[str] = []
    try:
        report = Lines(r)
        try:
            lines.append(report.line())
            lines.append(report.line())
            # Its answer is in: a signal from now on is after the start (this process only
            # prints it); line() returns with the stop signals blocked.
        except supervise.Interrupted:
            stop_background(plan, report, lines)
            raise
        finally:
            os.close(r)
    finally:
        # The intermediate child exits once it has forked the real background process.
        os.waitpid(pid, 0)
    line = lines[1]
    if not line:
        raise DockerUpError(
            "the background docker-up died while starting",
            hint=f"see {plan.paths.log('docker-up')}",
            detail=tail(plan.paths.log("dockerd")),
        )
    try:
        msg = StartReport.from_json(line)
    except ValueError as e:
        raise DockerUpError(
            f"the background docker-up said what this one does not understand: {e}",
            hint="is another docker-up version installed beside this one?",
        ) from None
    if msg.error is not None:
        raise DockerUpError(msg.error, hint=msg.hint, detail=msg.detail)
    if msg.already:
        # Another docker-up's start (nothing of this one runs): waited for as before.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
        return wait_for_other(plan), True
    return msg.docker_host, False


class Lines:
    """The background start's pipe, a line at a time. Stop signals are let in only while it
    waits for data, never while it reads: one handled as a read returns raises Interrupted
    right after it, and the line that read took is lost. Losing who the background is, the
    front could not stop it, and it went on to a daemon nobody wanted (ci21, under load).
    (The mask is this thread's: it holds because the front runs no other thread.)"""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def line(self) -> str:
        """The next line, "" at the end; the stop signals are blocked on return."""
        while b"\n" not in self.buf:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
            try:
                readable([self.fd])  # a stop signal raises here, with nothing read
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
            chunk = os.read(self.fd, 4096)
            if not chunk:
                break
            self.buf += chunk
        line, end, self.buf = self.buf.partition(b"\n")
        return (line + end).decode()


def stop_background(plan: Plan, report: Lines, lines: list[str]) -> None:
    """The start was stopped: so is the background start, in order, wherever it is (its own
    handler unwinds it; once it is the keeper, the keeper stops), and this returns once it
    has ended. lines: what it has said so far."""
    if not lines:
        lines.append(report.line())  # it says who it is first thing: soon
    with contextlib.suppress(ValueError):
        procid.send(procid.ProcId.from_json(lines[0]), signal.SIGTERM)
    # To the end: it exited, or exec'd the keeper (close-on-exec).
    while line := report.line():
        lines.append(line)
    if len(lines) > 1 and lines[1]:
        # It had become (or was becoming) the keeper: the keeper's stop frees the lock.
        from dockerup.waiting import wait_until

        wait_until(lambda: not instance.is_locked(plan.paths), 60, period=0.05)


def daemonize(paths: Paths) -> None:
    # Double fork: the background process is nobody's child and has no terminal.
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    paths.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = os.open(paths.log("docker-up"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)


def report_and_run(plan: Plan, w: int) -> None:
    def send(report: Spec) -> None:
        with contextlib.suppress(OSError):
            os.write(w, messages.line(report))

    code = 1
    try:
        ident = procid.identify(os.getpid())
        assert ident is not None  # this process, alive, of its own user
        send(ident)
        # Its front's handler (early.stop_on_signals), inherited: a stop signal from here
        # on unwinds this start in order (the front sends one when it is stopped).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
        # on_ready reports before the exec into the keeper; w is close-on-exec.
        code = supervise.run(
            plan,
            lambda _msg: None,
            lambda r: send(StartReport(docker_host=r.docker_host)),
            foreground=False,
        )
    except supervise.Interrupted:
        code = 130
    except instance.AlreadyRunning:
        send(StartReport(already=True))
        code = 0
    except DockerUpError as e:
        send(StartReport(error=e.message, hint=e.hint, detail=e.detail))
    except BaseException as e:
        send(StartReport(error=f"internal error: {type(e).__name__}: {e}"))
    finally:
        os._exit(code)


def hold_socket(plan: Plan, docker_up: str) -> bool:
    """Socket activation: bind the socket and take the lock, then leave a lean holder
    (keeper/lazy.py) in the background, which execs `docker-up up` on the first client.
    False: another docker-up holds the lock already."""
    paths = plan.paths
    instance.prepare_runtime(paths)
    lock = instance.take_lock(paths)
    if lock is None:
        return False
    # What a killed docker-up left (its state names processes that are gone): cleared here
    # as `up` does, or `stop` would later find the old records instead of this holder's.
    instance.end_orphans(paths, lambda _msg: None)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(paths.socket))
    os.chmod(paths.socket, 0o600)
    server.listen(128)
    pid = os.fork()
    if pid == 0:
        daemonize(paths)
        state.write(lazy_file(paths), LazyRecord(os.getpid(), procid.identify(os.getpid())))
        paths.main_pid.write_text(str(os.getpid()))
        for fd in (lock, server.fileno()):
            os.set_inheritable(fd, True)
        spec = LazySpec(
            listen_fd=server.fileno(),
            lock_fd=lock,
            socket=str(paths.socket),
            lazy_file=str(lazy_file(paths)),
            main_pid=str(paths.main_pid),
            argv=[docker_up, "up"],
        )
        argv = plan.program_argv("lazy", spec.to_json())
        os.execv(argv[0], argv)
    os.waitpid(pid, 0)
    return True


def stop(paths: Paths, timeout: float = 60.0) -> bool:
    """Ask the keeper (or the lazy holder) to stop and wait until it has ended: its lock
    free and its process gone. False: nothing was running."""
    instance.check_runtime(paths)
    if not instance.is_locked(paths):
        return False
    # The lazy holder (until its first client) or the keeper: whichever the records name
    # and still runs as recorded.
    running = instance.read_state(paths)
    lazy = read_lazy(paths)
    candidates = [lazy.id if lazy else None, running.procs.get("keeper") if running else None]
    pidfds = (procid.signalled(i, signal.SIGTERM) for i in candidates if i is not None)
    pidfd = next((fd for fd in pidfds if fd is not None), None)
    if pidfd is None:
        raise DockerUpError(
            "docker-up is starting or its state is unreadable; cannot tell which process to stop",
            hint="try again in a moment",
        )
    try:
        return wait_ended(paths, pidfd, timeout)
    finally:
        os.close(pidfd)


def wait_ended(paths: Paths, pidfd: int, timeout: float) -> bool:
    """The keeper frees its lock once all it started has ended, then exits; a stop that
    returned at the lock alone could leave the user a process still exiting (seen in CI
    under load). The pidfd turns readable only once the process has wholly exited."""
    from dockerup.waiting import wait_until

    deadline = time.monotonic() + timeout
    if not wait_until(lambda: not instance.is_locked(paths), timeout, period=0.05) or not (
        readable([pidfd], max(0.0, deadline - time.monotonic()))
    ):
        raise DockerUpError(f"docker-up did not stop in {timeout:.0f} s")
    return True


def docker_up_path() -> str:
    """The docker-up that the shell snippet and the lazy holder run: this one, by path."""
    import shutil

    beside = Path(sys.executable).parent / "docker-up"
    return str(beside) if beside.exists() else shutil.which("docker-up") or "docker-up"
