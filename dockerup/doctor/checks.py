"""`docker-up doctor`: every prerequisite as a check, each a pure function of probed facts.

Facts are probed once (probe_doctor); the checks only read them, so unit tests feed them
made-up facts. The fatal checks are the same rules build_plan enforces (they call the same
require_* functions, so the messages cannot drift apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from dockerup import ipv6
from dockerup import plan as planning
from dockerup.engine import Engine
from dockerup.errors import DockerUpError
from dockerup.facts import DoctorFacts, IdRange, subid_lines
from dockerup.modes import Mode, resolve_mode
from dockerup.net import pasta, slirp4netns
from dockerup.paths import UNIX_SOCKET_MAX

MIN_SUBIDS = 65536
NOBODY = 65534  # the highest id images commonly use (nobody, nogroup)


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
class Check:
    id: str
    title: str
    run: Callable[[DoctorFacts], Result]
    # Fatal: docker-up cannot start while it fails. `up` itself runs the fatal checks that
    # are also cheap; the others (each needs a process: a namespace, a --version) fail in
    # `up` as it starts, with their own error.
    fatal: bool = False
    # Cheap: reads only what facts.probe_cheap gives (no process is started for it).
    cheap: bool = False


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
    """Other users whose subordinate ranges overlap ours."""
    return [
        name
        for name, o in subid_lines(all_text)
        if name not in (user, str(uid))
        and any(o.start < r.start + r.count and r.start < o.start + o.count for r in mine)
    ]


def _check_subids(f: DoctorFacts, kind: str) -> Result:
    if mode_of(f) is not Mode.rootless:
        return Result(Status.skip, "not needed: docker-up maps no ids here")
    file = f"/etc/sub{kind}"
    ranges = f.host.subuid if kind == "uid" else f.host.subgid
    text = f.all_subuid if kind == "uid" else f.all_subgid
    try:
        usable = planning.require_range(ranges, file, f.host)
    except DockerUpError as e:
        return Result(Status.fail, e.message, e.hint or "")
    total = 1 + sum(r.count for r in usable)  # containers get ids 0 .. total - 1
    spans = ", ".join(f"{r.start}+{r.count}" for r in usable)
    others = overlapping(ranges, text, f.host.user, f.host.uid)
    if others:
        return Result(
            Status.fail,
            f"{file}: {f.host.user}'s range overlaps {', '.join(others)}'s",
            f"give {f.host.user} a range of its own in {file}",
        )
    if total - 1 < NOBODY:  # images commonly have files of nobody's: the highest id needed
        return Result(
            Status.warn,
            f"{file}: containers get {kind}s 0-{total - 1} only ({spans}): an image with "
            f"files owned by a higher {kind} (nobody's is 65534) will not unpack",
            f"give {f.host.user} more subordinate ids in {file}",
        )
    return ok(f"{file}: containers get {kind}s 0-{total - 1} ({spans})")


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
    feats = slirp4netns.parse_features(f.host.slirp_help)
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
    r = from_require(lambda: planning.require_pasta(h), f"usable ({feats.version})")
    # Only a problem when pasta is chosen; otherwise a note about an option not taken.
    return r if chosen or r.status is Status.ok else replace(r, status=Status.warn)


def check_accel(f: DoctorFacts) -> Result:
    """--net-accel: seccomp user notification, usable by rootless runc. The same probe the
    planner uses (facts.with_accel), so doctor and `up` cannot disagree."""
    problems = f.host.accel_problems
    state = {True: "on", False: "off", None: "auto (on when host loopback is allowed)"}
    daemon = {True: "on", False: "off", None: "auto (on where supported)"}
    said = f"containers {state[f.net_accel]}, dockerd's own {daemon[f.daemon_net_accel]}"
    if problems:
        asked = f.net_accel or f.daemon_net_accel
        return Result(Status.fail if asked else Status.skip,
                      f"{said}; unsupported here: {'; '.join(problems)}",
                      "drop --net-accel and --daemon-net-accel")  # fmt: skip
    return ok(f"{said}; supported (seccomp user notification, runc 1.1+)")


def check_ipv6(f: DoctorFacts) -> Result:
    """IPv6 for containers: what `up` would do here (the planner's rule), and why."""
    from dockerup.config import Config

    config = Config(net=f.net, ipv6=f.ipv6)
    bins = {k: v for k, v in f.host.binaries.items() if v}
    try:
        on, reason = ipv6.resolve_ipv6(config, f.host, bins)
    except DockerUpError as e:
        return Result(Status.fail, e.message, e.hint or "")
    if on and f.host.ipv6_overlap:
        return Result(Status.warn, reason, "containers reach that network's hosts over IPv4 "
                      "only (slirp4netns 1.2 cannot move its IPv6 network)")  # fmt: skip
    return ok(reason)


def check_net_driver(f: DoctorFacts) -> Result:
    running = f.running.get("net") if f.running.get("running") else None
    now = f" (the running docker-up uses {running})" if running and running != f.net else ""
    return ok(f"{f.net}{now}")


def check_dockerd(f: DoctorFacts) -> Result:
    """The engine: its versions, and what docker-up does for it (engine.py, as `up`)."""
    dockerd = f.host.binaries.get("dockerd")
    if not dockerd:
        return Result(Status.fail, "dockerd not found", "sudo apt-get install docker.io "
                      "(or docker-up --dockerd PATH)")  # fmt: skip
    engine = Engine.probed(f.host.dockerd_version, f.host.containerd_version)
    if engine.dockerd is None:
        return Result(Status.warn, f"cannot read {dockerd}'s version: "
                      f"{f.host.dockerd_version.strip()!r}")  # fmt: skip
    found = from_require(lambda: engine.require_supported(dockerd), "")
    if found.status is not Status.ok:
        return found
    return ok(f"{engine.describe()} ({dockerd}); docker-up: {'; '.join(engine.differences())}")


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
        return ok(f"{working[0]} works in a fresh namespace (docker-up uses it)")
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
        return from_require(lambda: planning.require_own_runtime(f.paths, True), "")
    if not f.runtime_writable:
        return Result(Status.fail, f"{rt.parent} is not writable for you",
                      "set XDG_RUNTIME_DIR to a directory of your own")  # fmt: skip
    return ok(f"{rt} ({where})")


def check_socket_path(f: DoctorFacts) -> Result:
    n = len(str(f.paths.socket))
    return from_require(lambda: planning.require_socket_path(f.paths),
                        f"{n} of {UNIX_SOCKET_MAX} bytes")  # fmt: skip


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
    e = f.engine
    engine = (f" (Docker {e['version']}, {e['containers']} containers running, {e['storage']})"
              if e else "")  # fmt: skip
    return ok(f"running (pid {r.get('pid')}), the API answers{engine}, "
              f"{r.get('restarts', 0)} restarts")  # fmt: skip


def check_mode(f: DoctorFacts) -> Result:
    h = f.host
    try:
        mode, reason = resolve_mode(h.uid, h.initial_userns, h.net_admin, f.mode)
    except DockerUpError as e:
        return Result(Status.fail, e.message, e.hint or "")
    return ok(f"{mode}: {reason}")


CHECKS: tuple[Check, ...] = (
    Check("mode", "mode docker-up would choose", check_mode, cheap=True),
    Check("kernel.userns", "user namespaces", check_userns, fatal=True, cheap=True),
    Check("kernel.netns", "network namespaces", check_netns, fatal=True),
    Check("kernel.seccomp", "seccomp", check_seccomp),
    Check("tun.access", "/dev/net/tun", check_tun, fatal=True, cheap=True),
    Check("ids.subuid", "subordinate uids", check_subuid, fatal=True, cheap=True),
    Check("ids.subgid", "subordinate gids", check_subgid, fatal=True, cheap=True),
    Check("ids.tools", "newuidmap/newgidmap", check_idmap_tools, fatal=True, cheap=True),
    Check("programs", "required programs", check_programs, fatal=True, cheap=True),
    Check("net.driver", "network driver", check_net_driver),
    Check("net.accel", "network acceleration", check_accel, cheap=True),
    Check("net.ipv6", "IPv6 for containers", check_ipv6, cheap=True),
    Check("net.slirp4netns", "slirp4netns", check_slirp4netns, cheap=True),
    Check("net.pasta", "pasta", check_pasta, cheap=True),
    Check("docker.dockerd", "dockerd", check_dockerd, fatal=True),
    Check("docker.runtime", "containerd, runc", check_containerd_runc, fatal=True),
    Check("docker.cli", "docker client", check_docker_cli),
    Check("iptables", "iptables in a namespace", check_iptables, fatal=True),
    Check("storage", "storage driver", check_storage),
    Check("cgroups", "cgroups", check_cgroups),
    Check("runtime.dir", "runtime directory", check_runtime_dir, fatal=True, cheap=True),
    Check("runtime.socket", "socket path length", check_socket_path, fatal=True, cheap=True),
    Check("runtime.disk", "free disk", check_disk),
    Check("runtime.daemon", "other daemons", check_existing_daemon),
    Check("runtime.docker-up", "docker-up", check_running),
)


@dataclass(frozen=True)
class Report:
    results: tuple[tuple[Check, Result], ...]

    @property
    def failed(self) -> bool:
        return any(r.status is Status.fail for _, r in self.results)

    def as_json(self) -> dict[str, object]:
        return {
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


UP_CHECKS = tuple(c for c in CHECKS if c.fatal and c.cheap)


def up_failures(cheap: DoctorFacts) -> list[tuple[Check, Result]]:
    """What `up` runs before it starts anything: every fatal check that is cheap, on the
    cheap facts (facts.probe_cheap)."""
    report = run_checks(cheap, UP_CHECKS)
    return [(c, r) for c, r in report.results if r.status is Status.fail]
