"""What doctor's checks read (DoctorFacts), and how it is probed: the cheap part from files
and stats (probe_cheap; `up` runs the cheap fatal checks on it before it starts anything),
the rest with processes (probe_doctor: a throwaway namespace, each program's --version, an
overlay mount, the running daemon's own account). The host's facts, which the planner
reads too, are dockerup/host/facts.py's."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dockerup import proc
from dockerup.files import read_text
from dockerup.host.facts import HostFacts, with_accel
from dockerup.lean import script
from dockerup.net.kinds import NET_DRIVERS, probe_all
from dockerup.plan.daemon import IPTABLES_BACKENDS
from dockerup.settings.paths import Paths
from dockerup.wire import ping as wire

if TYPE_CHECKING:
    from dockerup import results
    from dockerup.settings.config import Config


@dataclass(frozen=True)
class EngineInfo:
    """What the running daemon says of itself, through the Engine API (/version, /info)."""

    version: str  # "28.5.2"; "?" when it does not say
    containers: int  # running ones
    storage: str  # its storage driver; "?" when it does not say


@dataclass(frozen=True)
class DoctorFacts:
    """What doctor's checks read. The first fields are cheap (probe_cheap: file reads and
    stats, no process), so `up` can run the cheap fatal checks on them; the rest need
    processes (probe_doctor) and default to "fine" until probed."""

    host: HostFacts
    paths: Paths
    sysctls: dict[str, str] = field(default_factory=dict)  # only those this kernel has
    setuid: dict[str, bool] = field(default_factory=dict)  # newuidmap/newgidmap: setuid or caps
    all_subuid: str = ""  # the whole /etc/subuid, for overlaps
    all_subgid: str = ""
    runtime_writable: bool = True  # can we create the runtime dir (its parent is writable)
    runtime_foreign: bool = False  # it exists but is someone else's, or a symlink
    net: str = NET_DRIVERS[0]  # the network driver the configuration chooses
    net_accel: bool | None = None  # None: auto
    mode: str = "auto"  # the mode the configuration asks for
    userns: str = "default"  # the id map the configuration asks for (dockerup/plan/idmap.py)
    ipv6: bool | None = None  # None: auto
    daemon_net_accel: bool | None = None  # None: auto
    # The real path of the interpreter that creates the user namespace (child.py): what an
    # AppArmor profile attaches to.
    interpreter: str = ""
    apparmor: bool = False  # the AppArmor module is on (/sys/module/apparmor/parameters/enabled)
    # -- probed by doctor only
    seccomp_actions: str = ""
    netns_ok: bool = True
    netns_error: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # program -> its --version
    iptables: dict[str, str] = field(default_factory=dict)  # backend -> "" or its error
    overlay_error: str | None = None  # None: overlay mounts in a user namespace here
    fuse_ok: bool = False
    free_bytes: int = 0
    docker_host_env: str = ""
    other_daemon: str = ""  # a daemon answering on DOCKER_HOST that is not docker-up's
    stale_socket: bool = False
    docker_up: results.Status | None = None  # docker-up's own `status` (None: not probed)
    engine: EngineInfo | None = None  # None: no daemon of docker-up's answers


SYSCTLS = (
    "user.max_user_namespaces",
    "kernel.unprivileged_userns_clone",
    "kernel.apparmor_restrict_unprivileged_userns",
)


def probe_cheap(h: HostFacts, paths: Paths, config: Config) -> DoctorFacts:
    """Files and stats only: what `up` reads before it starts anything (with what the
    configuration chooses that the checks depend on)."""
    sysctls = {}
    for name in SYSCTLS:
        value = read_text("/proc/sys/" + name.replace(".", "/")).strip()
        if value:
            sysctls[name] = value
    return DoctorFacts(
        host=h,
        paths=paths,
        sysctls=sysctls,
        setuid={n: _setuid_or_caps(h.binaries.get(n)) for n in ("newuidmap", "newgidmap")},
        all_subuid=read_text("/etc/subuid"),
        all_subgid=read_text("/etc/subgid"),
        runtime_writable=paths.runtime.exists() or os.access(paths.runtime.parent, os.W_OK),
        runtime_foreign=_foreign(paths.runtime, h.uid),
        net=config.net,
        net_accel=config.net_accel,
        mode=config.mode,
        userns=config.userns,
        ipv6=config.ipv6,
        daemon_net_accel=config.daemon_net_accel,
        interpreter=os.path.realpath(h.python),
        apparmor=read_text("/sys/module/apparmor/parameters/enabled").startswith("Y"),
    )


def probe_doctor(cheap: DoctorFacts, docker_up: results.Status) -> DoctorFacts:
    """Everything doctor checks: the cheap facts, then what needs a process (a throwaway
    namespace, each program's --version, an overlay mount). docker_up: its `status`."""
    h = with_accel(probe_all(cheap.host))
    paths = cheap.paths
    netns = proc.probe(_in_fresh_ns(h, ["--net"], ["true"]))
    versions = {
        name: proc.first_line([path, "--version"])
        for name in ("dockerd", "containerd", "runc", "docker")
        if (path := h.binaries.get(name))
    }
    data_parent = paths.data if paths.data.exists() else Path(h.home)
    vfs = os.statvfs(data_parent) if data_parent.exists() else os.statvfs("/")
    docker_host = h.env.get("DOCKER_HOST", "")
    other = ""
    unix = docker_host.startswith("unix://") and docker_host != paths.docker_host
    if unix and wire.ping(Path(docker_host.removeprefix("unix://"))):
        other = docker_host
    stale = paths.socket.exists() and not docker_up.running and not wire.ping(paths.socket)
    return replace(
        cheap,
        host=h,
        seccomp_actions=read_text("/proc/sys/kernel/seccomp/actions_avail").strip(),
        netns_ok=netns.ok,
        netns_error=netns.output.strip(),
        versions=versions,
        iptables=probe_iptables(h),
        overlay_error=probe_overlay(h, paths),
        fuse_ok=os.access("/dev/fuse", os.R_OK | os.W_OK),
        free_bytes=vfs.f_bavail * vfs.f_frsize,
        docker_host_env=docker_host,
        other_daemon=other,
        stale_socket=stale,
        docker_up=docker_up,
        engine=probe_engine(paths.docker_host) if docker_up.answering else None,
    )


def probe_engine(docker_host: str) -> EngineInfo | None:
    """The running daemon's own account, through the Engine API (the docker SDK): its
    version, how many containers it runs, its storage driver. None when it does not
    answer, or answers with something else than the Engine API's documents."""
    import docker

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=5)
        try:
            info, version = client.info(), client.version()
        finally:
            client.close()
    except Exception:  # docker.errors.DockerException, or the transport's own errors
        return None
    return engine_info(version, info)


def engine_info(version: object, info: object) -> EngineInfo | None:
    """The Engine API's /version and /info documents, checked: the SDK hands over whatever
    JSON came back (None when it is not what the Engine API publishes)."""
    if not isinstance(version, dict) or not isinstance(info, dict):
        return None
    running, release = info.get("ContainersRunning", 0), version.get("Version", "?")
    storage = info.get("Driver", "?")
    if not isinstance(running, int) or isinstance(running, bool):
        return None
    if not isinstance(release, str) or not isinstance(storage, str):
        return None
    return EngineInfo(release, running, storage)


def probe_iptables(h: HostFacts) -> dict[str, str]:
    ipt_dir = Path(h.binaries.get("iptables") or "/usr/sbin/iptables").parent
    iptables = {}
    for backend in IPTABLES_BACKENDS:  # in `up`'s order: the first that works is used
        binary = ipt_dir / f"iptables-{backend}"
        if not binary.exists():
            iptables[backend] = "not installed"
            continue
        iptables[backend] = child_probe(h, ["--net", "--mount"], "iptables", str(binary))
    return iptables


def child_probe(h: HostFacts, namespaces: list[str], what: str, arg: str) -> str:
    """Run the probe `up` runs (dockerup/namespace/child.py) in a throwaway namespace: ""
    when it works, else why not."""
    argv = [h.python, "-S", script("child"), "probe", what, arg]
    r = proc.probe(_in_fresh_ns(h, namespaces, argv))
    if not r.ok:
        return r.output.strip().splitlines()[-1] if r.output.strip() else "the probe failed"
    return r.output.strip()


def _in_fresh_ns(h: HostFacts, flags: list[str], command: list[str]) -> list[str]:
    """unshare argv for a throwaway namespace: a user namespace too unless we are root."""
    userns = ["--user", "--map-root-user"] if h.uid != 0 else []
    return ["unshare", *userns, *flags, "--", *command]


def _setuid_or_caps(path: str | None) -> bool:
    if not path:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return True
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def _foreign(path: Path, uid: int) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return st.st_uid != uid or stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode)


def probe_overlay(h: HostFacts, paths: Paths) -> str | None:
    """Mount an overlay in a throwaway user+mount namespace, on the data-root's filesystem."""
    import tempfile  # doctor only

    base = paths.data if paths.data.exists() else Path(h.home)
    try:
        d = Path(tempfile.mkdtemp(prefix=".doctor-overlay-", dir=base))
    except OSError as e:
        return f"cannot make a probe directory in {base}: {e.strerror}"
    try:
        return child_probe(h, ["--mount"], "overlay", str(d / "probe")) or None
    finally:
        shutil.rmtree(d, ignore_errors=True)
