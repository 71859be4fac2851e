"""`docker-up doctor`: every prerequisite as a check, each a pure function of probed facts.

Facts are probed once (probe_doctor); the checks only read them, so unit tests feed them
made-up facts. The fatal checks are the same rules build_plan enforces (they call the same
require_* functions, so the messages cannot drift apart).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from dockerup import facts as host
from dockerup import plan as planning
from dockerup import proc, wire
from dockerup.config import Config
from dockerup.errors import DockerUpError
from dockerup.facts import HostFacts, IdRange, parse_subid, read_text
from dockerup.modes import Mode, resolve_mode
from dockerup.net import pasta, slirp4netns
from dockerup.paths import UNIX_SOCKET_MAX, Paths

SCHEMA_VERSION = 1
MIN_SUBIDS = 65536


class Status(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"
    skip = "skip"


@dataclass(frozen=True)
class Result:
    status: Status
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class DoctorFacts:
    host: HostFacts
    paths: Paths
    sysctls: dict[str, str]  # name -> value, only those that exist on this kernel
    seccomp_actions: str
    netns_ok: bool
    netns_error: str
    versions: dict[str, str]  # program -> first line of its --version
    setuid: dict[str, bool]  # newuidmap/newgidmap: setuid root or file capabilities
    all_subuid: str  # the whole /etc/subuid, for overlaps
    all_subgid: str
    iptables: dict[str, str]  # backend -> "" if it works in a fresh namespace, else the error
    overlay_error: str | None  # None: overlay mounts in a user namespace here
    fuse_ok: bool
    cgroup2: bool
    cgroup_delegated: bool
    free_bytes: int
    docker_host_env: str
    other_daemon: str  # a daemon answering on DOCKER_HOST that is not docker-up's
    stale_socket: bool
    runtime_writable: bool = True  # can we create the runtime dir (its parent is writable)
    runtime_foreign: bool = False  # it exists but is someone else's, or a symlink
    running: dict[str, object] = field(default_factory=dict)  # docker-up's own status
    net: str = "slirp4netns"  # the network driver the configuration chooses
    net_accel: bool | None = None  # None: auto
    mode: str = "auto"  # the mode the configuration asks for
    image_base: str = ""  # where the workspace image's base tarball is (or would be) cached
    image_base_cached: bool = False


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    run: Callable[[DoctorFacts], Result]
    fatal: bool = False  # `up` refuses to start when it fails


def ok(detail: str) -> Result:
    return Result(Status.ok, detail)


def from_require(fn: Callable[[], object], detail: str) -> Result:
    """A require_* rule of the planner as a check: its error becomes the failure."""
    try:
        fn()
    except DockerUpError as e:
        return Result(Status.fail, e.message, e.hint or "")
    return ok(detail)


def mode_of(f: DoctorFacts) -> Mode:
    """The mode `up` would run in with this configuration (auto where what it asks for
    cannot work: check_mode reports that)."""
    h = f.host
    try:
        return resolve_mode(h.uid, h.initial_userns, h.net_admin, f.mode)[0]
    except DockerUpError:
        return resolve_mode(h.uid, h.initial_userns, h.net_admin, None)[0]


# -- kernel -------------------------------------------------------------------------------------


def check_userns(f: DoctorFacts) -> Result:
    if mode_of(f) is not Mode.rootless:
        return Result(Status.skip, "not needed: docker-up creates no user namespace here")
    s = f.sysctls
    if s.get("user.max_user_namespaces", "1") == "0":
        return Result(
            Status.fail,
            "user.max_user_namespaces is 0",
            "sudo sysctl -w user.max_user_namespaces=28633",
        )
    if s.get("kernel.unprivileged_userns_clone") == "0":
        return Result(
            Status.fail,
            "kernel.unprivileged_userns_clone is 0",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1",
        )
    if s.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return Result(
            Status.fail,
            "AppArmor restricts unprivileged user namespaces",
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 "
            "(or an AppArmor profile for docker-up's python, dockerd and runc)",
        )
    return ok(f"allowed (max {s.get('user.max_user_namespaces', '?')})")


def check_netns(f: DoctorFacts) -> Result:
    if f.netns_ok:
        return ok("a new network namespace was created")
    return Result(
        Status.fail,
        f"cannot create a network namespace: {f.netns_error}",
        "in a container: run it with --security-opt seccomp=unconfined "
        "--security-opt apparmor=unconfined",
    )


def check_seccomp(f: DoctorFacts) -> Result:
    if not f.seccomp_actions:
        return Result(
            Status.warn, "seccomp is not available", "containers will run without seccomp filters"
        )
    notify = "user_notif" in f.seccomp_actions.split()
    return ok(f"available ({'with' if notify else 'without'} user notification)")


def check_tun(f: DoctorFacts) -> Result:
    return from_require(lambda: planning.require_tun(f.host), "/dev/net/tun opens")


# -- ids ----------------------------------------------------------------------------------------


def overlapping(mine: tuple[IdRange, ...], all_text: str, user: str, uid: int) -> list[str]:
    out = []
    for line in all_text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if any(start < r.start + r.count and r.start < start + count for r in mine):
            out.append(fields[0])
    return out


def _check_subids(f: DoctorFacts, kind: str) -> Result:
    if mode_of(f) is not Mode.rootless:
        return Result(Status.skip, "not needed: docker-up maps no ids here")
    file = f"/etc/sub{kind}"
    ranges = f.host.subuid if kind == "uid" else f.host.subgid
    text = f.all_subuid if kind == "uid" else f.all_subgid
    try:
        best = planning.require_range(ranges, file, f.host)
    except DockerUpError as e:
        return Result(Status.fail, e.message, e.hint or "")
    others = overlapping(ranges, text, f.host.user, f.host.uid)
    if others:
        return Result(
            Status.fail,
            f"{file}: {f.host.user}'s range overlaps {', '.join(others)}'s",
            f"give {f.host.user} a range of its own in {file}",
        )
    if best.count < MIN_SUBIDS:
        return Result(
            Status.warn,
            f"{file}: only {best.count} ids (images may need 65536)",
            f"make the range {MIN_SUBIDS} long in {file}",
        )
    return ok(f"{file}: {best.start}+{best.count}")


def check_subuid(f: DoctorFacts) -> Result:
    return _check_subids(f, "uid")


def check_subgid(f: DoctorFacts) -> Result:
    return _check_subids(f, "gid")


def check_idmap_tools(f: DoctorFacts) -> Result:
    if mode_of(f) is not Mode.rootless:
        return Result(Status.skip, "not needed here")
    missing = [n for n in ("newuidmap", "newgidmap") if not f.host.binaries.get(n)]
    if missing:
        return Result(Status.fail, f"{', '.join(missing)} not found", "sudo apt-get install uidmap")
    weak = [n for n in ("newuidmap", "newgidmap") if not f.setuid.get(n)]
    if weak:
        return Result(
            Status.fail,
            f"{', '.join(weak)} neither setuid root nor with file caps",
            "sudo chmod u+s /usr/bin/newuidmap /usr/bin/newgidmap",
        )
    return ok("newuidmap and newgidmap are setuid")


# -- programs -----------------------------------------------------------------------------------


def check_programs(f: DoctorFacts) -> Result:
    mode = mode_of(f)
    return from_require(
        lambda: planning.require_programs(f.host, mode, f.net),
        f"dockerd, containerd, runc, {f.net}, iptables found",
    )


def _version(f: DoctorFacts, name: str) -> str:
    return f.versions.get(name, "").strip() or "?"


def check_slirp4netns(f: DoctorFacts) -> Result:
    if not f.host.binaries.get("slirp4netns"):
        status = Status.fail if f.net == "slirp4netns" else Status.skip
        return Result(status, "slirp4netns not found", "sudo apt-get install slirp4netns")
    feats = slirp4netns.parse_features(f.host.slirp_help, f.versions.get("slirp4netns", ""))
    have = [n for n, on in (("sandbox", feats.sandbox), ("seccomp", feats.seccomp),
                            ("api-socket", feats.api_socket), ("netns-by-path", feats.netns_type))
            if on]  # fmt: skip
    missing = {"sandbox", "seccomp", "api-socket"} - set(have)
    detail = f"{feats.version}: {', '.join(have) or 'no optional features'}"
    if missing:
        return Result(
            Status.warn,
            detail + f"; lacks {', '.join(sorted(missing))}",
            "a newer slirp4netns (1.0+) adds them",
        )
    return ok(detail)


def check_pasta(f: DoctorFacts) -> Result:
    h = f.host
    chosen = f.net == "pasta"
    if not h.binaries.get("pasta"):
        if chosen:
            return Result(Status.fail, "pasta not found", "sudo apt-get install passt")
        return Result(Status.skip, "not installed (optional: apt-get install passt)")
    feats = pasta.parse_features(h.pasta_help, h.pasta_version)
    lacks = feats.lacks()
    if lacks:
        return Result(Status.fail if chosen else Status.warn,
                      f"pasta ({feats.version}) lacks {', '.join(lacks)}",
                      "use --net slirp4netns, or a newer passt")  # fmt: skip
    if not h.default_route:
        return Result(Status.fail if chosen else Status.warn,
                      f"pasta ({feats.version}): no default route in this network namespace, "
                      "which this pasta needs", "use --net slirp4netns")  # fmt: skip
    return ok(f"usable ({feats.version})")


def check_accel(f: DoctorFacts) -> Result:
    """--net-accel: seccomp user notification, usable by rootless runc. The same probe the
    planner uses (facts.with_accel), so doctor and `up` cannot disagree."""
    problems = f.host.accel_problems
    state = {True: "on", False: "off", None: "auto (on when host loopback is allowed)"}
    if problems:
        status = Status.fail if f.net_accel else Status.skip
        return Result(status, f"{state[f.net_accel]}; unsupported here: {'; '.join(problems)}",
                      "drop --net-accel")  # fmt: skip
    return ok(f"{state[f.net_accel]}; supported (seccomp user notification, runc 1.1+)")


def check_net_driver(f: DoctorFacts) -> Result:
    running = f.running.get("net") if f.running.get("running") else None
    now = f" (the running docker-up uses {running})" if running and running != f.net else ""
    return ok(f"{f.net}{now}")


DOCKERD_MIN = (20, 10)


def check_dockerd(f: DoctorFacts) -> Result:
    v = f.versions.get("dockerd", "")
    m = re.search(r"version (\d+)\.(\d+)", v)
    if not f.host.binaries.get("dockerd"):
        return Result(Status.fail, "dockerd not found", "sudo apt-get install docker.io")
    if not m:
        return Result(Status.warn, f"cannot read dockerd's version: {v.strip()!r}")
    if (int(m.group(1)), int(m.group(2))) < DOCKERD_MIN:
        return Result(
            Status.fail,
            f"{v.strip()}: docker-up needs 20.10 or newer (--rootless, "
            "overlay2 in a user namespace)",
            "install a newer docker.io",
        )
    return ok(v.strip())


def check_containerd_runc(f: DoctorFacts) -> Result:
    parts = [
        f"{n} {_version(f, n).split()[2] if len(_version(f, n).split()) > 2 else '?'}"
        for n in ("containerd", "runc")
        if f.host.binaries.get(n)
    ]
    missing = [n for n in ("containerd", "runc") if not f.host.binaries.get(n)]
    if missing:
        return Result(
            Status.fail,
            f"{', '.join(missing)} not found",
            f"sudo apt-get install {' '.join(missing)}",
        )
    return ok(", ".join(parts))


def check_docker_cli(f: DoctorFacts) -> Result:
    if not f.host.binaries.get("docker"):
        return Result(Status.warn, "no docker client on PATH", "sudo apt-get install docker.io")
    return ok(_version(f, "docker"))


# -- iptables, storage, cgroups --------------------------------------------------------------------


def check_iptables(f: DoctorFacts) -> Result:
    working = [b for b, err in f.iptables.items() if not err]
    if working:
        return ok(f"{working[0]} works in a fresh namespace")
    errors = "; ".join(f"{b}: {e}" for b, e in f.iptables.items())
    return Result(
        Status.fail,
        f"no iptables backend works in a namespace: {errors}",
        "sudo apt-get install iptables (and the nf_tables kernel module)",
    )


def check_storage(f: DoctorFacts) -> Result:
    if f.overlay_error is None:
        return ok("overlay2: overlay mounts in a user namespace")
    if f.host.binaries.get("fuse-overlayfs") and f.fuse_ok:
        return Result(Status.ok, f"fuse-overlayfs (overlay failed: {f.overlay_error})")
    return Result(
        Status.warn,
        f"vfs: overlay failed ({f.overlay_error}) and fuse-overlayfs is "
        "unusable; vfs copies every layer in full",
        "apt-get install fuse-overlayfs and make /dev/fuse usable (chmod 0666)",
    )


def check_cgroups(f: DoctorFacts) -> Result:
    if f.cgroup2 and f.cgroup_delegated:
        return ok("cgroup v2 with delegation: resource limits apply")
    version = "v2 without delegation to you" if f.cgroup2 else "v1"
    return Result(
        Status.warn,
        f"cgroup {version}: rootless containers run without "
        "resource limits (--memory, --cpus are ignored)",
        "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) and delegate",
    )


# -- runtime ---------------------------------------------------------------------------------------


def check_runtime_dir(f: DoctorFacts) -> Result:
    rt = f.paths.runtime
    where = "XDG_RUNTIME_DIR" if f.paths.runtime_from_xdg else "fallback (no XDG_RUNTIME_DIR)"
    if f.runtime_foreign:
        return Result(Status.fail, f"{rt} exists and is not yours",
                      f"remove {rt}, or set XDG_RUNTIME_DIR to a directory of yours")  # fmt: skip
    if not f.runtime_writable:
        return Result(Status.fail, f"{rt.parent} is not writable for you",
                      "set XDG_RUNTIME_DIR to a directory of your own")  # fmt: skip
    return ok(f"{rt} ({where})")


def check_socket_path(f: DoctorFacts) -> Result:
    n = len(str(f.paths.socket))
    if n > UNIX_SOCKET_MAX:
        return Result(
            Status.fail,
            f"{f.paths.socket} is {n} bytes, over the {UNIX_SOCKET_MAX}-byte unix socket limit",
            "set XDG_RUNTIME_DIR to a shorter directory",
        )
    return ok(f"{n} of {UNIX_SOCKET_MAX} bytes")


def check_disk(f: DoctorFacts) -> Result:
    gib = f.free_bytes / 2**30
    if gib < 1:
        return Result(
            Status.fail,
            f"{gib:.1f} GiB free at {f.paths.data}",
            "free some disk space, or set XDG_DATA_HOME elsewhere",
        )
    if gib < 5:
        return Result(
            Status.warn,
            f"{gib:.1f} GiB free at {f.paths.data}",
            "images need room: 5 GiB or more is comfortable",
        )
    return ok(f"{gib:.0f} GiB free at {f.paths.data}")


def check_existing_daemon(f: DoctorFacts) -> Result:
    if f.other_daemon:
        return Result(
            Status.warn,
            f"another daemon answers on DOCKER_HOST={f.docker_host_env}",
            f"unset DOCKER_HOST, or export DOCKER_HOST={f.paths.docker_host}",
        )
    if f.stale_socket:
        return Result(
            Status.warn,
            f"stale socket {f.paths.socket} (nothing answers)",
            "docker-up removes it at its next start",
        )
    return ok("no other daemon in the way")


def check_running(f: DoctorFacts) -> Result:
    r = f.running
    if not r.get("running"):
        return ok("not running")
    if not r.get("answering"):
        return Result(
            Status.warn,
            f"running (pid {r.get('pid')}) but the API does not answer",
            "docker-up logs; docker-up stop && docker-up",
        )
    return ok(f"running (pid {r.get('pid')}), the API answers, {r.get('restarts', 0)} restarts")


def check_image_base(f: DoctorFacts) -> Result:
    """Only for building the workspace image (scripts/build-image), which reaches no
    network: its Debian base comes from a cache that scripts/prepare fills once."""
    if f.image_base_cached:
        return ok(f"cached at {f.image_base}: the image builds without any network")
    return Result(
        Status.skip,
        f"not cached at {f.image_base}: building the workspace image first needs a Debian "
        "mirror (the one apt uses here, or DOCKER_UP_MIRROR) for a debootstrap",
        "scripts/prepare (as root), where that mirror is reachable",
    )


def check_mode(f: DoctorFacts) -> Result:
    h = f.host
    try:
        mode, reason = resolve_mode(h.uid, h.initial_userns, h.net_admin, f.mode)
    except DockerUpError as e:
        return Result(Status.fail, e.message, e.hint or "")
    return ok(f"{mode}: {reason}")


CHECKS: tuple[Check, ...] = (
    Check("mode", "mode docker-up would choose", check_mode),
    Check("kernel.userns", "user namespaces", check_userns, fatal=True),
    Check("kernel.netns", "network namespaces", check_netns, fatal=True),
    Check("kernel.seccomp", "seccomp", check_seccomp),
    Check("tun.access", "/dev/net/tun", check_tun, fatal=True),
    Check("ids.subuid", "subordinate uids", check_subuid, fatal=True),
    Check("ids.subgid", "subordinate gids", check_subgid, fatal=True),
    Check("ids.tools", "newuidmap/newgidmap", check_idmap_tools, fatal=True),
    Check("programs", "required programs", check_programs, fatal=True),
    Check("net.driver", "network driver", check_net_driver),
    Check("net.accel", "network acceleration", check_accel),
    Check("net.slirp4netns", "slirp4netns", check_slirp4netns),
    Check("net.pasta", "pasta", check_pasta),
    Check("docker.dockerd", "dockerd", check_dockerd, fatal=True),
    Check("docker.runtime", "containerd, runc", check_containerd_runc, fatal=True),
    Check("docker.cli", "docker client", check_docker_cli),
    Check("iptables", "iptables in a namespace", check_iptables, fatal=True),
    Check("storage", "storage driver", check_storage),
    Check("cgroups", "cgroups", check_cgroups),
    Check("runtime.dir", "runtime directory", check_runtime_dir, fatal=True),
    Check("runtime.socket", "socket path length", check_socket_path, fatal=True),
    Check("runtime.disk", "free disk", check_disk),
    Check("runtime.daemon", "other daemons", check_existing_daemon),
    Check("runtime.docker-up", "docker-up", check_running),
    Check("image.base", "workspace image base", check_image_base),
)


@dataclass(frozen=True)
class Report:
    results: tuple[tuple[Check, Result], ...]

    @property
    def failed(self) -> bool:
        return any(r.status is Status.fail for _, r in self.results)

    def as_json(self) -> dict[str, object]:
        return {
            "version": SCHEMA_VERSION,
            "ok": not self.failed,
            "checks": [
                {
                    "id": c.id,
                    "title": c.title,
                    "status": str(r.status),
                    "detail": r.detail,
                    "hint": r.hint,
                    "fatal": c.fatal,
                }
                for c, r in self.results
            ],
        }


def run_checks(f: DoctorFacts, checks: tuple[Check, ...] = CHECKS) -> Report:
    return Report(tuple((c, c.run(f)) for c in checks))


# -- probing (the only I/O here) ----------------------------------------------------------------


SYSCTLS = (
    "user.max_user_namespaces",
    "kernel.unprivileged_userns_clone",
    "kernel.apparmor_restrict_unprivileged_userns",
)


def _in_fresh_ns(h: HostFacts, flags: str, command: list[str]) -> list[str]:
    """unshare argv for a throwaway namespace: a user namespace too unless we are root."""
    userns = ["--user", "--map-root-user"] if h.uid != 0 else []
    return ["unshare", *userns, flags, *command]


def _setuid_or_caps(path: str | None) -> bool:
    if not path:
        return False
    st = os.stat(path)
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return True
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def probe_doctor(config: Config | None = None, h: HostFacts | None = None) -> DoctorFacts:
    from dockerup import app

    h = h or host.probe()
    config = config or Config()
    mode = planning.resolve_mode_of(config, h)[0]  # as `up` would, with the configuration
    paths = planning.paths_for(mode, h, config)
    sysctls = {}
    for name in SYSCTLS:
        value = read_text("/proc/sys/" + name.replace(".", "/")).strip()
        if value:
            sysctls[name] = value
    netns = proc.probe(_in_fresh_ns(h, "--net", ["true"]))
    versions = {
        name: proc.first_line([path, "--version"])
        for name in ("dockerd", "containerd", "runc", "docker")
        if (path := h.binaries.get(name))
    }
    if slirp := h.binaries.get("slirp4netns"):
        versions["slirp4netns"] = proc.output([slirp, "--version"])
    h = host.with_accel(host.with_pasta(h))
    ipt_dir = Path(h.binaries.get("iptables") or "/usr/sbin/iptables").parent
    iptables = {}
    for backend in ("nft", "legacy"):
        binary = ipt_dir / f"iptables-{backend}"
        if not binary.exists():
            iptables[backend] = "not installed"
            continue
        # A fresh mount namespace with its own /run: legacy's lock must be writable there.
        r = proc.probe(_in_fresh_ns(h, "--net", ["--mount", "sh", "-c",
                       f"mount -t tmpfs tmpfs /run && {binary} -w -t nat -S"]))  # fmt: skip
        iptables[backend] = "" if r.ok else (r.output.strip().splitlines() or ["failed"])[-1]
    cg2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    delegated = cg2 and os.access("/sys/fs/cgroup/cgroup.subtree_control", os.W_OK)
    data_parent = paths.data if paths.data.exists() else Path(h.home)
    vfs = os.statvfs(data_parent) if data_parent.exists() else os.statvfs("/")
    docker_host = h.env.get("DOCKER_HOST", "")
    other = ""
    unix = docker_host.startswith("unix://") and docker_host != paths.docker_host
    if unix and wire.ping(Path(docker_host.removeprefix("unix://"))):
        other = docker_host
    running = app.status(paths)
    stale = paths.socket.exists() and not running.get("running") and not wire.ping(paths.socket)
    return DoctorFacts(
        host=h,
        paths=paths,
        sysctls=sysctls,
        seccomp_actions=read_text("/proc/sys/kernel/seccomp/actions_avail").strip(),
        netns_ok=netns.ok,
        netns_error=netns.output.strip(),
        versions=versions,
        setuid={n: _setuid_or_caps(h.binaries.get(n)) for n in ("newuidmap", "newgidmap")},
        all_subuid=read_text("/etc/subuid"),
        all_subgid=read_text("/etc/subgid"),
        iptables=iptables,
        overlay_error=probe_overlay(h, paths),
        fuse_ok=os.access("/dev/fuse", os.R_OK | os.W_OK),
        cgroup2=cg2,
        cgroup_delegated=delegated,
        free_bytes=vfs.f_bavail * vfs.f_frsize,
        docker_host_env=docker_host,
        other_daemon=other,
        stale_socket=stale,
        runtime_writable=paths.runtime.exists() or os.access(paths.runtime.parent, os.W_OK),
        runtime_foreign=_foreign(paths.runtime, h.uid),
        running=running,
        net=config.net,
        net_accel=config.net_accel,
        mode=config.mode,
        image_base=str(base := image_base_path(h.env)),
        image_base_cached=base.is_file() and base.stat().st_size > 0,
    )


def image_base_path(env: Mapping[str, str]) -> Path:
    """Where scripts/prepare caches the image base (DOCKER_UP_CACHE, as it reads it)."""
    return Path(env.get("DOCKER_UP_CACHE") or "/var/cache/docker-up") / "bookworm-base.tar"


def _foreign(path: Path, uid: int) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return st.st_uid != uid or stat.S_ISLNK(st.st_mode)


def probe_overlay(h: HostFacts, paths: Paths) -> str | None:
    """Mount an overlay in a throwaway user+mount namespace, on the data-root's filesystem."""
    base = paths.data if paths.data.exists() else Path(h.home)
    try:
        d = Path(tempfile.mkdtemp(prefix=".doctor-overlay-", dir=base))
    except OSError as e:
        return f"cannot make a probe directory in {base}: {e.strerror}"
    try:
        for sub in ("l", "u", "w", "m"):
            (d / sub).mkdir()
        opts = f"lowerdir={d}/l,upperdir={d}/u,workdir={d}/w"
        script = (
            f"mount -t overlay overlay -o {opts} {d}/m 2>/dev/null || "
            f"mount -t overlay overlay -o {opts},userxattr {d}/m"
        )
        r = proc.probe(_in_fresh_ns(h, "--mount", ["sh", "-c", script]))
        return None if r.ok else (r.output.strip() or "mount failed")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def fatal_failures(h: HostFacts, paths: Paths, net: str) -> list[tuple[Check, Result]]:
    """The cheap fatal checks, on the facts `up` probes anyway (no extra probing)."""
    f = replace(minimal_facts(h, paths), net=net)
    cheap = ("tun.access", "ids.subuid", "ids.subgid", "programs", "runtime.socket")
    report = run_checks(f, tuple(c for c in CHECKS if c.id in cheap))
    return [(c, r) for c, r in report.results if r.status is Status.fail]


def minimal_facts(h: HostFacts, paths: Paths) -> DoctorFacts:
    return DoctorFacts(
        host=h, paths=paths, sysctls={}, seccomp_actions="", netns_ok=True, netns_error="",
        versions={}, setuid={}, all_subuid="", all_subgid="", iptables={}, overlay_error=None,
        fuse_ok=False, cgroup2=False, cgroup_delegated=False, free_bytes=0,
        docker_host_env="", other_daemon="", stale_socket=False,
    )  # fmt: skip


__all__ = ["CHECKS", "Check", "DoctorFacts", "Report", "Result", "Status"]


# -- fixes (planned purely, carried out by the CLI's executor) -----------------------------------


@dataclass(frozen=True)
class Fix:
    what: str
    argv: tuple[str, ...]


def free_subid_start(all_text: str, count: int = MIN_SUBIDS) -> int:
    """The first start at or above 100000 that overlaps nobody's range."""
    ends = [100000]
    for line in all_text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            ends.append(int(fields[1]) + int(fields[2]))
    return max(ends)


def package_fixes(packages: list[str]) -> list[Fix]:
    if not packages:
        return []
    return [
        Fix("update the package lists", ("apt-get", "update", "-q")),
        Fix(f"install {' '.join(packages)}", ("apt-get", "install", "-y", "-q", *packages)),
    ]


def plan_fixes(
    tun_mode: int | None,
    user: tuple[str, int] | None,
    subuid_text: str,
    subgid_text: str,
    missing_packages: list[str],
) -> list[Fix]:
    """What `doctor --fix` does as root: only changes that are safe on any machine.
    tun_mode: /dev/net/tun's permission bits, None when it is missing."""
    fixes = package_fixes(missing_packages)
    if tun_mode is None:
        fixes.append(Fix("create /dev/net/tun", ("mkdir", "-p", "/dev/net")))
        fixes.append(Fix("", ("mknod", "/dev/net/tun", "c", "10", "200")))
    if tun_mode is None or tun_mode & 0o666 != 0o666:
        fixes.append(Fix("let every user open /dev/net/tun", ("chmod", "0666", "/dev/net/tun")))
    if user:
        name, uid = user
        for kind, text in (("uids", subuid_text), ("gids", subgid_text)):
            if not parse_subid(text, name, uid):
                start = free_subid_start(text)
                span = f"{start}-{start + MIN_SUBIDS - 1}"
                fixes.append(Fix(f"give {name} subordinate {kind} {span}",
                                 ("usermod", f"--add-sub{kind}", span, name)))  # fmt: skip
    return fixes
