"""Run the real docker-up as an unprivileged user and look at what it leaves behind.

The tests run as root (CI is root) inside a network namespace that has only loopback (see
scripts/test); every docker-up is started as the test user, like a workspace user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dockerup.linux import procid

VENV = Path(os.environ.get("DOCKER_UP_VENV", "/opt/docker-up-venv"))
USER = os.environ.get("DOCKER_UP_TEST_USER", "dockerup-test")
DOCKER_CLI = shutil.which("docker") or "/usr/bin/docker"
# The driver suite: tests that take the `net` fixture run once per network driver.
NET_DRIVERS = ("slirp4netns", "pasta")


def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> object:
    """Poll a condition until it holds or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def nc_read(host: str, port: int | str, timeout: int = 10) -> str:
    """A container's shell line that prints what a TCP server sends, without closing its own
    side first: nc's stdin is a FIFO this shell holds open until nc is done (a half-close
    meeting the server's close is what Debian 12's pasta mishandles; no sleep needed)."""
    return (
        f"cd $(mktemp -d) && mkfifo f && {{ timeout {timeout} nc -w 3 {host} {port} <f & "
        "exec 3>f; wait $!; }"
    )


def reach_host_loopback(ws: Workspace, port: int) -> str:
    """What a container read from 10.0.2.2:PORT, the workspace's loopback ("" when refused).
    The container must have run for an empty answer to mean refused: otherwise the test
    fails here, not on a "" that a failed `docker run` prints too."""
    script = f"{nc_read('10.0.2.2', port)}; echo container-ran"
    r = ws.docker("run", "--rm", "bb:test", "sh", "-c", script, check=False)
    out = r.stdout.strip()
    assert out.endswith("container-ran"), f"the container did not run: {r.stderr}"
    return out.removesuffix("container-ran").strip()


# Held by whatever rewrites /etc/subuid or /etc/subgid (exclusive: useradd, usermod) and
# whatever breaks them with a bind mount (shared): machine-wide, as the files are.
SUBID_LOCK = Path("/run/lock/docker-up-tests-subids.lock")
SUBID_FILES = ("/etc/subuid", "/etc/subgid")


@contextlib.contextmanager
def subid_files(exclusive: bool) -> Iterator[None]:
    """The subordinate id files held still. shadow's tools replace a file by a rename, and a
    rename over a file that is a mount point in another mount namespace detaches that mount
    there: a test's `mount --bind /dev/null /etc/subgid` vanished under a docker-up that was
    meant to find no ids, which then started a daemon instead (and the test timed out)."""
    fd = os.open(SUBID_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: it runs nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def live_pids_where(test: Callable[[Path], bool]) -> list[int]:
    """Live processes (not this one) whose /proc/PID directory passes the test; one that
    vanishes meanwhile does not count."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                if test(d) and pid_alive(int(d.name)):
                    found.append(int(d.name))
    return found


def processes_naming(root: Path) -> list[int]:
    """Processes whose command line names this directory: a workspace's docker-up, keeper,
    dockerd, containerd, helper and port proxies all do (their paths are under it)."""
    needle = str(root).encode()
    return live_pids_where(lambda d: needle in (d / "cmdline").read_bytes())


def end_strays(root: Path) -> list[int]:
    """Last resort after a test that failed half-way: what it started for this workspace
    and left running is ended, by PID (nothing else names the workspace's directory)."""
    strays = processes_naming(root)
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return strays


def processes_of(uid: int, comm: str | None = None) -> list[int]:
    """The user's live processes (those named `comm` only, if given). One that ends while
    it is read does not count: the user's dockerd and keeper start short-lived children."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (
                    d.stat().st_uid == uid
                    and (comm is None or (d / "comm").read_text().strip() == comm)
                    and pid_alive(int(d.name))
                ):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            continue
        # The state and where it sleeps tell a process still exiting from one living on.
        out.append(f"{pid} (parent {ppid}, {state} in {wchan or '-'}): {cmd[:200]}")
    return "; ".join(out)


def nothing_left(uid: int, what: str = "nothing left") -> None:
    """Every process of the user ends; if not, the failure names what is left."""
    try:
        wait_for(lambda: not processes_of(uid), 30, what)
    except AssertionError as e:
        raise AssertionError(f"{e}: {describe(processes_of(uid))}") from None


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port on the workspace's 127.0.0.1 whose listen backlog is full: new connections
    to it hang (their SYNs are dropped) until this ends."""
    full = socket.socket()
    fillers = [socket.socket() for _ in range(3)]
    try:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for f in fillers:
            f.setblocking(False)
            f.connect_ex(full.getsockname())
        yield int(full.getsockname()[1])
    finally:
        for f in fillers:
            f.close()
        full.close()


def listening(port: int) -> bool:
    """Does anything listen on this TCP port in this network namespace (any address)? From
    the kernel's table: a bind() test would also trip over other tests' connections."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # 0A: LISTEN
                return True
    return False


def kill_recorded(state: dict[str, object]) -> None:
    """SIGKILL each process state.json records (dockerd, the network helper) that is still
    the very process recorded: same PID and start time, checked through a pidfd."""
    procs = state.get("procs")
    for rec in procs.values() if isinstance(procs, dict) else ():
        with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
            pidfd = os.pidfd_open(rec["pid"])
            try:
                stat = Path(f"/proc/{rec['pid']}/stat").read_text()
                if procid.start_time(stat) == rec["start"]:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            finally:
                os.close(pidfd)


class Namespace:
    """A namespace of docker-up's, held open by an fd so that its members are recognised by
    inode. A name read once ("net:[4026532712]") is not enough: when the namespace ends,
    the kernel hands its inode number to the next new namespace, which may be another
    test's, whose processes would then look like this one's leftovers, and be killed."""

    def __init__(self, pid: int, kind: str) -> None:
        self.kind = kind
        self.fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        self.ino = os.fstat(self.fd).st_ino

    def has(self, pid: int | str) -> bool:
        return os.stat(f"/proc/{pid}/ns/{self.kind}").st_ino == self.ino

    def members(self) -> list[int]:
        return live_pids_where(lambda d: self.has(d.name))

    def kill_members(self) -> None:
        """SIGKILL every member, each through a pidfd checked to be a member still."""
        for pid in self.members():
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(pid)
                try:
                    if self.has(pid):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                finally:
                    os.close(pidfd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def get(cls, name: str = USER) -> User:
        pw = pwd.getpwnam(name)
        return cls(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))

    def mkdtemp(self, prefix: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chown(d, self.uid, self.gid)
        return d

    @property
    def subordinate_start(self) -> int:
        """The user's first subordinate uid: root inside docker-up's namespace under keep-id."""
        for line in Path("/etc/subuid").read_text().splitlines():
            name, start, _ = line.split(":")
            if name in (self.name, str(self.uid)):
                return int(start)
        raise AssertionError(f"{self.name} has no subordinate ids")


@dataclass
class Workspace:
    """One isolated docker-up home for one test: its own XDG dirs, so tests share nothing."""

    user: User
    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, user: User, prefix: str = "dockerup-ws-", **env: str) -> Workspace:
        """A new directory under /tmp with the user's run, data and config dirs in it."""
        root = user.mkdtemp(prefix)
        os.chmod(root, 0o755)
        for sub in ("run", "data", "config"):
            (root / sub).mkdir(mode=0o700)
            os.chown(root / sub, user.uid, user.gid)
        return cls(user, root, dict(env))

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    def env(self) -> dict[str, str]:
        env = {
            "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.user.home),
            "USER": self.user.name,
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        env.update(self.extra_env)
        return env

    def _as_user(self) -> dict[str, object]:
        return {
            "user": self.user.uid,
            "group": self.user.gid,
            "extra_groups": [],
            "env": self.env(),
            "cwd": str(self.root),
        }

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 120,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            **self._as_user(),
        )  # type: ignore[call-overload]
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def docker_up(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run([f"{VENV}/bin/docker-up", *args], timeout=timeout)

    def docker_up_on_broken_host(
        self, breakage: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run docker-up as the user in a private mount namespace where `breakage` (a root
        shell snippet: bind mounts over real files) has broken this machine for it alone."""
        still = any(f in breakage for f in SUBID_FILES)
        with subid_files(exclusive=False) if still else contextlib.nullcontext():
            return subprocess.run(
                self.broken_host_argv(breakage, *args),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=str(self.root),
            )

    def start_on_broken_host(self, breakage: str, *args: str) -> DockerUp:
        """As docker_up_on_broken_host, started: its PID is docker-up's own (each step
        execs the next)."""
        log = open(self.root / "docker-up.err", "w")  # noqa: SIM115 - closed by DockerUp.stop
        p = subprocess.Popen(
            self.broken_host_argv(breakage, *args),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=str(self.root),
        )
        return DockerUp(self, p, log)

    def broken_host_argv(self, breakage: str, *args: str) -> list[str]:
        env = [f"{k}={v}" for k, v in self.env().items()]
        script = (
            f"set -e; {breakage}; exec setpriv --reuid={self.user.uid} "
            f'--regid={self.user.gid} --clear-groups env -i "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *env,
            f"{VENV}/bin/docker-up",
            *args,
        ]

    def start(self, *args: str, prefix: Sequence[str] = ()) -> DockerUp:
        log = open(self.root / "docker-up.err", "w")  # noqa: SIM115 - closed by DockerUp.stop
        p = subprocess.Popen(
            [*prefix, f"{VENV}/bin/docker-up", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            **self._as_user(),
        )  # type: ignore[call-overload]
        return DockerUp(self, p, log)

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True, docker_host: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        host = docker_host or f"unix://{self.runtime_dir}/docker-up/docker.sock"
        saved = dict(self.extra_env)
        self.extra_env.update({"DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"})
        try:
            return self.run([DOCKER_CLI, *args], timeout=timeout, check=check)
        finally:
            self.extra_env = saved


@dataclass
class DockerUp:
    ws: Workspace
    p: subprocess.Popen[str]
    log: object
    docker_host: str = ""
    state: dict[str, object] = field(default_factory=dict)
    netns: Namespace | None = None

    def stderr(self) -> str:
        return (self.ws.root / "docker-up.err").read_text()

    def wait_ready(self, timeout: float = 90) -> DockerUp:
        """Read stdout until the export line: docker-up prints it only once the API answers."""
        assert self.p.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError(f"docker-up exited {self.p.wait()}:\n{self.stderr()}")
            if line.startswith("export DOCKER_HOST="):
                self.docker_host = line.strip().split("=", 1)[1]
                break
        else:
            raise AssertionError("docker-up did not print DOCKER_HOST in time")
        state_file = self.ws.runtime_dir / "docker-up" / "state.json"
        self.state = json.loads(state_file.read_text())
        self.netns = Namespace(int(self.state["dockerd_pid"]), "net")  # type: ignore[call-overload]
        return self

    def pids(self) -> list[int]:
        return [v for k in ("dockerd_pid", "net_pid") if isinstance(v := self.state.get(k), int)]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            code = self.p.wait(timeout)
        finally:
            self.log.close()  # type: ignore[attr-defined]
            if self.p.stdout:
                self.p.stdout.close()
        return code

    def leftovers(self) -> list[int]:
        """Everything of this stack still running: its helpers and anything in its netns."""
        left = [pid for pid in self.pids() if pid_alive(pid)]
        if self.netns:
            left += self.netns.members()
        return sorted(set(left))

    def kill_all(self) -> None:
        """Last-resort cleanup so one failed test cannot break the next: docker-up itself
        (our child: its PID is ours until we reap it), then what is left in its network
        namespace, through pidfds."""
        with contextlib.suppress(ProcessLookupError):
            self.p.kill()
        self.p.wait(10)
        kill_recorded(self.state)
        if self.netns:
            self.netns.kill_members()
            self.netns.close()


def up(ws: Workspace, started: list[DockerUp], *args: str) -> DockerUp:
    """docker-up in the foreground, ready; `started` (the fixture) ends it after the test."""
    s = ws.start(*args)
    started.append(s)
    return s.wait_ready()


def status(ws: Workspace) -> dict[str, object]:
    """`docker-up status --json`, read."""
    r = ws.docker_up("status", "--json")
    doc: dict[str, object] = json.loads(r.stdout)
    return doc


def detach(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-up --detach ARGS`: starts in the background, returns once it answers."""
    return ws.docker_up("--detach", *args, timeout=120)
