"""What stays resident: the supervisor docker-up turns into once dockerd answers.

The CLI needs typer, rich and tenacity (tens of MB of Python, the docker SDK for some verbs);
none of them to keep watch. So once the daemon is ready, the CLI process execs this
stdlib-only script (`python -S`), which keeps the same PID, the same children (dockerd and
the network helper, still reapable) and the fds it needs: the instance lock, the pipe whose
closing tells slirp4netns to exit, and the namespaces (an open namespace fd keeps it alive).

It stops everything in order on SIGINT/SIGTERM/SIGHUP. When dockerd dies, it starts a new one
in the same namespaces, with exponential backoff, and gives up after a burst of failures.
When slirp4netns dies, it attaches a new one to the same network namespace (through dockerd).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

# This package, without site-packages (python -S): see dockerup/lean.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup import logs as logfiles
from dockerup.keeper import state, sweep
from dockerup.linux import libc as linux
from dockerup.linux import procid
from dockerup.linux.exits import STOP_SIGNALS, describe_status
from dockerup.linux.fdwait import readable
from dockerup.logs import append_log, tail
from dockerup.namespace.dockerd import exec_dockerd, start_containerd
from dockerup.namespace.netstart import start_net, wait_ready
from dockerup.wire.ping import ping_answered, ping_request
from dockerup.wire.specs import KeeperSpec

if TYPE_CHECKING:
    from dockerup.autoports.scanner import AutoPorts
    from dockerup.ports.manager import Api

LOG_CHECK = 5.0  # seconds between looks at the logs' sizes
# A burst: this many dockerd failures within WINDOW seconds and the keeper gives up.
BURST, WINDOW = 8, 60.0
# Waits between restart attempts: doubling from FIRST_WAIT up to MAX_WAIT seconds.
FIRST_WAIT, MAX_WAIT = 0.25, 8.0


class Stop(Exception):
    """A stop signal arrived."""


class GiveUp(Exception):
    pass


class Keeper:
    def __init__(self, spec: KeeperSpec) -> None:
        self.spec = spec
        # Orphans of a dead dockerd (its containerd, say) become our children instead of
        # init's, and we reap them at once: a zombie containerd would make a new dockerd
        # believe the old one still runs, and wait for it forever.
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        self.exited: dict[int, int] = {}
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for s in (*STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(s, lambda *_: None)
        # The CLI blocked these before exec so that none could be lost in between.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
        self.dockerd = spec.dockerd_pid
        self.dockerd_fd = os.pidfd_open(self.dockerd)
        self.net: int | None = spec.net_pid
        self.net_fd = os.pidfd_open(self.net) if self.net else None
        self.exit_fd: int | None = spec.exit_fd
        self.failures: list[float] = []
        self.next_cap = 0.0
        self.restarts = 0
        self.ports = None
        self.auto: AutoPorts | None = None
        if spec.ports_fd is not None:
            from dockerup.ports.manager import PortManager, forwarder

            server = socket.socket(fileno=spec.ports_fd)
            fwd = forwarder(spec.port_forwarder, spec.net_api)
            self.ports = PortManager(
                server, fwd, self.log, self.rootlesskit_api(), spec.ports_table
            )
        if spec.accel_fd is not None:
            from dockerup.accel import agent as accel

            accel.start(spec.accel_fd, spec.allow_host_loopback, self.log, self.routes)
        if spec.auto_ports is not None and "net" in spec.ns_fds:
            from dockerup.autoports import scanner as autoports

            self.auto = autoports.start(spec.auto_ports, spec.ns_fds, self.log, lambda: self.ports)

    def rootlesskit_api(self) -> Api | None:
        """dockerd 28+: the RootlessKit API the CLI served while dockerd started."""
        spec = self.spec
        if spec.rlk_fd is None or spec.rlk_info is None:
            return None
        from dockerup.ports.manager import Api
        from dockerup.ports.rlkapi import RootlessKitApi

        table = RootlessKitApi.restore(spec.rlk_info, spec.rlk_ports)
        return Api(table, socket.socket(fileno=spec.rlk_fd))

    def routes(self) -> str:
        """The route table of docker-up's network namespace (for the acceleration agent)."""
        try:
            with open(f"/proc/{self.dockerd}/net/route") as f:
                return f.read()
        except OSError:
            return ""  # dockerd between restarts: the agent then bypasses nothing

    def log(self, msg: str) -> None:
        if self.spec.echo:
            sys.stderr.write(f"docker-up: {msg}\n")
            sys.stderr.flush()
        append_log(self.spec.log_file, msg)

    # -- waiting ---------------------------------------------------------------------------

    def stop_requested(self) -> bool:
        """Drain the signal pipe: reap on SIGCHLD, report a stop signal."""
        stop = False
        while True:
            try:
                data = os.read(self.wake_r, 64)
            except BlockingIOError:
                break
            stop = stop or any(b in data for b in STOP_SIGNALS)
        self.reap_orphans()
        return stop

    def reap_orphans(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited[pid] = status

    def sleep(self, seconds: float) -> None:
        """A sleep that a stop signal cuts short (between dockerd restarts)."""
        ready = readable([self.wake_r], seconds)
        if ready and self.stop_requested():
            raise Stop

    def cap_logs(self) -> None:
        """Every log docker-up writes stays under log_max (dockerup/logs.py)."""
        spec = self.spec
        for path in (spec.dockerd_log, spec.net_log, spec.log_file):
            if logfiles.cap(path, spec.log_max):
                self.log(
                    f"{os.path.basename(path)} reached {spec.log_max} bytes; "
                    f"the rest is in {os.path.basename(path)}.1"
                )

    def wait_serving(self, fds: list[int], timeout: float) -> set[int]:
        """The one way the keeper waits: until one of fds is readable or the time is up,
        answering the port manager meanwhile (the port proxies wait on it, whether dockerd
        is booting, running or stopping). Returns the ready fds among fds."""
        port_fds = self.ports.fds() if self.ports else []
        ready = readable([*fds, *port_fds], timeout)
        for fd in ready:
            if fd in port_fds and self.ports:
                self.ports.handle(fd)
        return ready - set(port_fds)

    def next_event(self) -> str:
        """What happens next: "stop" (a stop signal), "dockerd" or "net" (it ended)."""
        while True:
            fds = [self.wake_r, self.dockerd_fd] + ([self.net_fd] if self.net_fd else [])
            ready = self.wait_serving(fds, LOG_CHECK)
            if time.monotonic() >= self.next_cap:
                self.cap_logs()
                self.next_cap = time.monotonic() + LOG_CHECK
            if self.wake_r in ready and self.stop_requested():
                return "stop"
            if self.dockerd_fd in ready:
                return "dockerd"
            if self.net_fd in ready:
                return "net"

    # -- dockerd ----------------------------------------------------------------------------

    def reap(self, pid: int) -> str:
        status = self.exited.pop(pid, None)
        if status is None:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                return "gone"
        return describe_status(status)

    def spawn_dockerd(self) -> int:
        """A new dockerd in the same user/mount/network namespaces (entered by fd)."""
        spec = self.spec
        # The dead dockerd's pid file would stop the new one if that pid was reused.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec.pidfile)
        log = os.open(spec.dockerd_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        keeper = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: only async-signal-safe-ish work, then exec
            try:
                os.setsid()
                linux.die_with_parent(signal.SIGTERM, keeper)
                for kind in linux.NAMESPACES:
                    fd = spec.ns_fds.get(kind)
                    if fd is not None and linux.libc.setns(fd, 0) != 0:
                        os._exit(126)
                if spec.become_root:
                    linux.become_root()
                os.chdir("/")
                os.dup2(log, 1)
                os.dup2(log, 2)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                for s in (*STOP_SIGNALS, signal.SIGCHLD):
                    signal.signal(s, signal.SIG_DFL)
                # The old containerd ended with the old dockerd (clear_old_containerd
                # waited for it): a new one, in the same namespaces, for the new dockerd.
                start_containerd(spec.containerd.argv, spec.containerd.env, spec.containerd_pidfile)
                if spec.watch_connects:
                    from dockerup.accel.daemonfilter import watch_connects

                    watch_connects(spec.watch_connects)  # fails: exit 127, restart again
                exec_dockerd(spec.dockerd.argv, spec.dockerd.env, spec.listen_fd)
            finally:
                os._exit(127)
        os.close(log)
        return pid

    def wait_ready(self, pid: int, pidfd: int) -> None:
        deadline = time.monotonic() + self.spec.start_timeout
        while time.monotonic() < deadline:
            # A booting dockerd starts restart-policy containers and waits for their port
            # proxies, which wait for us: keep serving them meanwhile, also while it holds
            # a ping unanswered (a blocking ping made each of those proxies wait 2 s).
            s = ping_request(self.spec.socket)
            try:
                if self.serve_until(time.monotonic() + (2.0 if s else 0.05), pid, pidfd, s):
                    return
            finally:
                if s:
                    s.close()
        raise RuntimeError("dockerd did not answer in time")

    def serve_until(self, until: float, pid: int, pidfd: int, s: socket.socket | None) -> bool:
        """Serve the port manager until the time is up or the ping is answered (True if
        with 200). Raises on dockerd's death or a stop signal."""
        while (left := until - time.monotonic()) > 0:
            ready = self.wait_serving([self.wake_r, pidfd, *([s.fileno()] if s else [])], left)
            if pidfd in ready:
                raise RuntimeError(f"dockerd {self.reap(pid)}")
            if self.wake_r in ready and self.stop_requested():
                raise Stop
            if s and s.fileno() in ready:
                if ping_answered(s):
                    return True
                s, until = None, min(until, time.monotonic() + 0.05)  # not ready: a pause
        return False

    def restart_dockerd(self, why: str) -> None:
        self.log(f"dockerd {why}; restarting it (restart {self.restarts + 1})")
        self.note_failure()
        # Until it answers; note_failure() ends it: a burst of failures.
        for wait in backoff(FIRST_WAIT, MAX_WAIT):
            os.close(self.dockerd_fd)
            self.clear_old_containerd()
            if not self.spec.live_restore:
                # The dead dockerd's shims and containers: the new dockerd would stop them
                # anyway (without live-restore), but containerd 1.7 and 2.1 leave them
                # running, and 2.1 then cannot start the container again (moby#50040).
                self.end_the_rest(keep={self.net}, what="of the dead dockerd's containers")
            self.dockerd = self.spawn_dockerd()
            self.dockerd_fd = os.pidfd_open(self.dockerd)
            if self.ports and self.ports.api:
                self.ports.api.state.restarted(self.dockerd)
            try:
                self.wait_ready(self.dockerd, self.dockerd_fd)
                break
            except RuntimeError as e:
                self.log(f"restart failed: {e}")
                self.note_failure()
            self.sleep(wait)
        self.restarts += 1
        self.log(f"dockerd is back (pid {self.dockerd})")
        self.update_state()

    def clear_old_containerd(self) -> None:
        """A dead dockerd's containerd dies with it (parent-death signal) and becomes our
        zombie. Until it is reaped its pid looks alive, and a new dockerd that finds it in
        containerd.pid dials its dead socket for about 15 s instead of starting its own
        (with socket activation the keeper's readiness pings block on the backlog, so it
        may not have reaped yet). Wait for it, at most 2 s, then reap."""
        try:
            with open(self.spec.containerd_pidfile) as f:
                pid = int(f.read().strip())
            pidfd = os.pidfd_open(pid)
        except (OSError, ValueError):
            return  # no such file, or that process is gone already
        try:
            readable([pidfd], 2.0)
        finally:
            os.close(pidfd)
        self.reap_orphans()

    def note_failure(self) -> None:
        now = time.monotonic()
        self.failures = [t for t in self.failures if now - t < WINDOW] + [now]
        if len(self.failures) >= BURST:
            raise GiveUp(f"dockerd failed {BURST} times within {WINDOW:.0f} s; giving up")

    # -- network helper ----------------------------------------------------------------------

    def restart_net(self, why: str) -> None:
        spec = self.spec
        self.log(f"{spec.net_name} {why}; attaching a new one to the namespace")
        if self.exit_fd is not None:
            os.close(self.exit_fd)
        if self.net_fd is not None:
            os.close(self.net_fd)
        # The dead helper's API socket would make the new one fail to bind it.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec.net_api)
        assert spec.net_argv is not None  # a helper that died was started from it
        self.exit_fd = self.net_fd = None
        try:
            net = start_net(spec.net_argv, self.dockerd, spec.net_ready, spec.net_log)
        except OSError as e:
            raise GiveUp(f"cannot start a new {spec.net_name}: {e}") from e
        p, self.exit_fd = net.p, net.exit_w
        self.net, self.net_fd = p.pid, os.pidfd_open(p.pid)
        came_up = wait_ready(net.ready_r, self.net_fd, 30)
        os.close(net.ready_r)
        if came_up != "ready":
            raise GiveUp(f"a new {spec.net_name} did not come up; see {spec.net_log}")
        # Popen's own bookkeeping is not needed: we reap by pid.
        p.returncode = 0
        self.restarts += 1
        self.log(f"{spec.net_name} is back (pid {self.net})")
        self.update_state()

    # -- state and shutdown --------------------------------------------------------------------

    def update_state(self) -> None:
        running = state.read(self.spec.state_file, state.Running)
        if running is None:
            return
        # What a later `up` checks before it ends an orphan: the very processes now running.
        kept = {k: v for k, v in running.procs.items() if k not in ("dockerd", "net")}
        procs = kept | procid.identities({"dockerd": self.dockerd, "net": self.net})
        state.write(
            self.spec.state_file,
            dataclasses.replace(
                running,
                dockerd_pid=self.dockerd,
                net_pid=self.net,
                restarts=self.restarts,
                procs=procs,
            ),
        )

    def wait_exit(self, pidfd: int, timeout: float) -> bool:
        """Until the process ends (True) or the time is up. dockerd, stopping, may still
        start a port proxy (a restart-policy container it is bringing up), which waits for
        the port manager; unanswered, it would hold dockerd's stop for its 16 s and outlive
        it: the port manager keeps answering meanwhile."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if pidfd in self.wait_serving([pidfd], left):
                return True
        return False

    def stop_child(self, pid: int | None, pidfd: int | None, timeout: float) -> None:
        if pid is None or pidfd is None:
            return
        # Through the pidfd: it names our child, whatever happened to its PID meanwhile.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not self.wait_exit(pidfd, timeout):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        self.reap(pid)

    def shutdown(self) -> None:
        # Further signals must not cut the cleanup short.
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if self.auto:
            self.auto.stop()  # before the sweep below: its helper is no leftover of dockerd's
        self.stop_child(self.dockerd, self.dockerd_fd, self.spec.stop_timeout)
        # containerd got SIGTERM as dockerd ended (its parent-death signal): it is stopping
        # on its own, and the helper goes next; only then is anything left over.
        self.clear_old_containerd()
        if self.ports:
            self.ports.close()
            self.ports = None  # its sockets are closed: nothing more to watch or answer
        if self.exit_fd is not None:
            os.close(self.exit_fd)  # slirp4netns' signal to exit
        self.stop_child(self.net, self.net_fd, 5.0)
        self.end_the_rest()
        if self.spec.views:
            from dockerup.views.serve import clear

            clear(self.spec.views)
        for path in self.spec.remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(self.spec.lock_fd)

    def end_the_rest(
        self, keep: set[int | None] | None = None, what: str = "that dockerd left running"
    ) -> None:
        """dockerd stops its containers, shims and containerd; where it could not (a
        container that would not die in time, dockerd killed), what is left would outlive
        docker-up: whatever still runs in docker-up's user namespace ends now."""
        user_fd = self.spec.ns_fds.get("user")
        if user_fd is None:
            return  # modes without a user namespace of docker-up's own have no such scope
        names, left = sweep.end_namespace(user_fd, {p for p in keep or set() if p})
        if names:
            self.log(f"ended {len(names)} process(es) {what}: " + ", ".join(names))
        if left:
            self.log("still exiting after SIGKILL: " + ", ".join(left))
        self.reap_orphans()

    def run(self) -> int:
        code = 0
        try:
            while True:
                event = self.next_event()
                if event == "stop":
                    self.log("stopping")
                    break
                if event == "dockerd":
                    self.restart_dockerd(self.reap(self.dockerd))
                elif event == "net":
                    self.restart_net(self.reap(self.net or 0))
        except Stop:
            self.log("stopping")
        except GiveUp as e:
            self.log(f"{e}; last lines of dockerd's log:")
            self.log(tail(self.spec.dockerd_log))
            code = 1
        self.shutdown()
        return code


def backoff(first: float, most: float) -> Iterator[float]:
    """Waits that double from `first` up to `most`, without end."""
    wait = first
    while True:
        yield wait
        wait = min(wait * 2, most)


def main() -> int:
    return Keeper(KeeperSpec.from_json(sys.argv[1])).run()


if __name__ == "__main__":
    sys.exit(main())
