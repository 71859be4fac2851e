"""Checks of what the kernel and the machine's configuration allow: namespaces, seccomp,
/dev/net/tun, subordinate ids and the tools that map them, storage, cgroups."""

from __future__ import annotations

from dockerup.doctor.model import Finding, Health, from_require, mode_of, ok, see_programs
from dockerup.doctor.probe import DoctorFacts
from dockerup.errors import DockerUpError
from dockerup.host.facts import IdRange, subid_lines
from dockerup.plan import require
from dockerup.plan.cgroups import LIMITS, decide
from dockerup.settings.modes import Mode

MIN_SUBIDS = 65536


NOBODY = 65534  # the highest id images commonly use (nobody, nogroup)


def check_userns(f: DoctorFacts) -> Finding:
    if mode_of(f) is not Mode.rootless:
        return Finding(Health.skip, "not needed: docker-up creates no user namespace here")
    s = f.sysctls
    if s.get("user.max_user_namespaces", "1") == "0":
        return Finding(
            Health.fail,
            "user.max_user_namespaces is 0",
            "sudo sysctl -w user.max_user_namespaces=28633",
        )
    if s.get("kernel.unprivileged_userns_clone") == "0":
        return Finding(
            Health.fail,
            "kernel.unprivileged_userns_clone is 0",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1",
        )
    if s.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return Finding(
            Health.fail,
            "AppArmor restricts unprivileged user namespaces "
            "(kernel.apparmor_restrict_unprivileged_userns = 1)",
            apparmor_fix(f.interpreter or f.host.python),
        )
    return ok(f"allowed (max {s.get('user.max_user_namespaces', '?')})")


APPARMOR_PROFILE = "/etc/apparmor.d/docker-up"


def apparmor_profile(interpreter: str) -> str:
    """What Docker's rootless docs give rootlesskit, for the program that creates docker-up's
    user namespace: the Python interpreter that runs it (the profile attaches to the
    interpreter's real path, so every script it runs may then create user namespaces)."""
    return (
        "abi <abi/4.0>,\ninclude <tunables/global>\n"
        f'profile docker-up "{interpreter}" flags=(unconfined) {{\n  userns,\n'
        "  include if exists <local/docker-up>\n}\n"
    )


def apparmor_fix(interpreter: str) -> str:
    profile = apparmor_profile(interpreter).replace("\n", "\\n")
    return (
        f"as root: printf '{profile}' > {APPARMOR_PROFILE} && apparmor_parser -r "
        f"{APPARMOR_PROFILE} (README: AppArmor; or, for every program: sysctl -w "
        "kernel.apparmor_restrict_unprivileged_userns=0)"
    )


def check_apparmor(f: DoctorFacts) -> Finding:
    """What AppArmor does to docker-up here. Where it restricts user namespaces (Ubuntu's
    sysctl) kernel.userns fails with the fix. Where it is merely on (Debian 13: no such
    sysctl), dockerd would try to load its docker-default profile, which a user namespace
    may not: docker-up's namespace has a sysfs of its own, without securityfs, so dockerd
    sees no AppArmor and containers run without a profile, as in Docker's rootless mode."""
    if not f.apparmor:
        return Finding(Health.skip, "AppArmor is off")
    if f.sysctls.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return Finding(Health.skip, "it restricts user namespaces (see kernel.userns)")
    return ok("on, not restricting user namespaces; containers run without AppArmor profiles")


def check_netns(f: DoctorFacts) -> Finding:
    if f.netns_ok:
        return ok("a new network namespace was created")
    return Finding(
        Health.fail,
        f"cannot create a network namespace: {f.netns_error}",
        "in a container: run it with --security-opt seccomp=unconfined "
        "--security-opt apparmor=unconfined",
    )


def check_seccomp(f: DoctorFacts) -> Finding:
    if not f.seccomp_actions:
        return Finding(
            Health.warn, "seccomp is not available", "containers will run without seccomp filters"
        )
    notify = "user_notif" in f.seccomp_actions.split()
    return ok(f"available ({'with' if notify else 'without'} user notification)")


def check_tun(f: DoctorFacts) -> Finding:
    return from_require(lambda: require.require_tun(f.host), "/dev/net/tun opens")


def overlapping(mine: tuple[IdRange, ...], all_text: str, user: str, uid: int) -> list[str]:
    """Other users whose subordinate ranges overlap ours."""
    return [
        name
        for name, o in subid_lines(all_text)
        if name not in (user, str(uid))
        and any(o.start < r.start + r.count and r.start < o.start + o.count for r in mine)
    ]


def _check_subids(f: DoctorFacts, kind: str) -> Finding:
    if mode_of(f) is not Mode.rootless:
        return Finding(Health.skip, "not needed: docker-up maps no ids here")
    file = f"/etc/sub{kind}"
    ranges = f.host.subuid if kind == "uid" else f.host.subgid
    text = f.all_subuid if kind == "uid" else f.all_subgid
    try:
        usable = require.require_range(ranges, file, f.host)
    except DockerUpError as e:
        return Finding(Health.fail, e.message, e.hint or "")
    total = 1 + sum(r.count for r in usable)  # containers get ids 0 .. total - 1
    spans = ", ".join(f"{r.start}+{r.count}" for r in usable)
    others = overlapping(ranges, text, f.host.user, f.host.uid)
    if others:
        return Finding(
            Health.fail,
            f"{file}: {f.host.user}'s range overlaps {', '.join(others)}'s",
            f"give {f.host.user} a range of its own in {file}",
        )
    if total - 1 < NOBODY:  # images commonly have files of nobody's: the highest id needed
        return Finding(
            Health.warn,
            f"{file}: containers get {kind}s 0-{total - 1} only ({spans}): an image with "
            f"files owned by a higher {kind} (nobody's is 65534) will not unpack",
            f"give {f.host.user} more subordinate ids in {file}",
        )
    return ok(f"{file}: containers get {kind}s 0-{total - 1} ({spans})")


def check_subuid(f: DoctorFacts) -> Finding:
    return _check_subids(f, "uid")


def check_subgid(f: DoctorFacts) -> Finding:
    return _check_subids(f, "gid")


def check_idmap_tools(f: DoctorFacts) -> Finding:
    if mode_of(f) is not Mode.rootless:
        return Finding(Health.skip, "not needed here")
    missing = [n for n in ("newuidmap", "newgidmap") if not f.host.binaries.get(n)]
    if missing:
        return see_programs(missing)
    weak = [n for n in ("newuidmap", "newgidmap") if not f.setuid.get(n)]
    if weak:
        return Finding(
            Health.fail,
            f"{', '.join(weak)} neither setuid root nor with file caps",
            "sudo chmod u+s /usr/bin/newuidmap /usr/bin/newgidmap",
        )
    return ok("newuidmap and newgidmap are setuid")


def check_storage(f: DoctorFacts) -> Finding:
    if f.overlay_error is None:
        return ok("overlay2: overlay mounts in a user namespace")
    if f.host.binaries.get("fuse-overlayfs") and f.fuse_ok:
        return Finding(Health.ok, f"fuse-overlayfs (overlay failed: {f.overlay_error})")
    return Finding(
        Health.warn,
        f"vfs: overlay failed ({f.overlay_error}) and fuse-overlayfs is "
        "unusable; vfs copies every layer in full",
        "apt-get install fuse-overlayfs and make /dev/fuse usable (chmod 0666)",
    )


def check_views(f: DoctorFacts) -> Finding:
    """Dev containers' views of the workspace's folders (dockerup/views): what a dev
    container's non-root user needs to write the folder under the default map. Optional:
    without them containers run as before."""
    if mode_of(f) is not Mode.rootless or f.userns != "default":
        return Finding(Health.skip, "not needed: your ids are not mapped to root inside")
    cost = "a dev container's non-root user cannot write the workspace folder"
    if not f.host.binaries.get("bindfs"):
        return Finding(Health.warn, f"bindfs not installed (apt-get install bindfs): {cost}")
    if not f.fuse_ok:
        return Finding(
            Health.warn,
            f"/dev/fuse does not open: {cost}",
            "as root: chmod 0666 /dev/fuse (a FUSE mount made in your namespace lets no "
            "process outside it in)",
        )
    return ok("a dev container's non-root user writes the workspace folder (bindfs views)")


def check_cgroups(f: DoctorFacts) -> Finding:
    """The plan's own decision (cgroups.decide), so doctor and `up` cannot disagree."""
    h = f.host
    c = decide(h.cgroups, mode_of(f), h.uid, h.binaries.get("busctl"))
    if not c.notice:
        return ok(f"{c.driver} driver: {', '.join(c.limits)} limits apply ({c.reason})")
    missing = [x for x in LIMITS if x not in c.limits]
    what = "no limits apply" if not c.limits else f"no {' or '.join(missing)} limits"
    return Finding(Health.warn, f"{c.driver} driver, {what}: {c.reason}", c.fix)
