"""The cgroup driver dockerd gets, and why: decided once, purely, from the host's cgroup
facts (facts.CgroupFacts) and the mode. The plan carries the decision (Plan.cgroups); the
start says it, `status` shows it, doctor reports it with its fix.

What moby does (daemon/daemon_unix.go, daemon/oci_linux.go):
- cgroupDriver(): "systemd" when native.cgroupdriver=systemd is set, or when it is unset on a
  cgroup v2 host where /run/systemd/system is a directory; otherwise "none" for --rootless.
  A rootless dockerd has no cgroupfs driver: `native.cgroupdriver=cgroupfs` gives "none".
- withRootless(): with the systemd driver it needs $ROOTLESSKIT_PARENT_EUID (every container
  fails without it: issue 32) and reads user.slice/user-EUID.slice/cgroup.controllers; the
  spec keeps the limits of those controllers only. With "none" every limit is dropped.
- runc's systemd driver asks the user's systemd manager over the user's D-Bus for each
  container's scope; inside a user namespace it first runs `busctl --user status` to learn
  the uid to authenticate as (libcontainer/cgroups/systemd/user.go DetectUID).
So limits apply to a rootless dockerd only through the user's systemd manager; everywhere
else docker-up pins the driver (cgroupfs, which dockerd turns into "none") so that dockerd
never picks a systemd driver it cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockerup.host.facts import CgroupFacts
from dockerup.settings.modes import Mode

# The controllers `docker run --memory`, `--cpus` and `--pids-limit` need.
LIMITS = ("memory", "cpu", "pids")
LIMIT_FLAGS = "--memory, --cpus, --pids-limit"
SYSTEMD, NONE, CGROUPFS = "systemd", "none", "cgroupfs"
UNIT_FIX = "run docker-up under your systemd user manager: `docker-up autostart --systemd`"
DELEGATE_FIX = (
    "as root: mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\n"
    "Delegate=cpu cpuset io memory pids\\n' > /etc/systemd/system/user@.service.d/"
    "delegate.conf && systemctl daemon-reload, then log in again"
)


@dataclass(frozen=True)
class Cgroups:
    driver: str  # what dockerd uses, in its own words (docker info's CgroupDriver)
    reason: str
    limits: tuple[str, ...] = ()  # the controllers of LIMITS whose limits apply
    fix: str = ""  # how to get the limits that do not apply ("": they all do)
    exec_opt: str | None = None  # daemon.json exec-opts (None: dockerd's own default)
    env: dict[str, str] = field(default_factory=dict)  # what dockerd, containerd, runc need

    @property
    def notice(self) -> str:
        return limits_notice(self.limits, self.reason, self.fix)

    @property
    def refused(self) -> tuple[str, ...]:
        """The controllers whose limits a container asking for them is refused (docker-up's
        runtime says why and the fix): where docker-up pinned the driver and dockerd would
        drop them without a word (withRootless keeps only the delegated controllers'; with
        "none", none). Not on cgroup v1 nor for real root: dockerd decides there, as
        before."""
        if self.exec_opt is None:
            return ()
        return tuple(c for c in LIMITS if c not in self.limits)

    def describe(self) -> str:
        """One line for `status`: the driver, what applies, and why."""
        applies = ", ".join(self.limits) if self.limits else "no limits"
        return f"{self.driver} ({applies}): {self.reason}"


def limits_notice(limits: tuple[str, ...] | list[str], reason: str, fix: str) -> str:
    """What a start says once where some limit does not apply ("" where all do)."""
    missing = [c for c in LIMITS if c not in limits]
    if not missing:
        return ""
    what = LIMIT_FLAGS if len(missing) == len(LIMITS) else " and ".join(missing) + " limits"
    return f"{what} do not apply to containers here: {reason}. Fix: {fix}"


def decide(c: CgroupFacts, mode: Mode, uid: int, busctl: str | None) -> Cgroups:
    """busctl: where it is installed (None: it is not). A user cannot pass --exec-opt
    (config.DOCKERD_FLAGS_ALLOWED), so daemon.json's exec-opts are the plan's alone."""
    if mode is Mode.privileged:
        # A real root dockerd: not --rootless, it has every driver and picks its own.
        driver = SYSTEMD if c.version == 2 and c.systemd else CGROUPFS
        return Cgroups(driver, "real root: dockerd's own choice", LIMITS)
    if c.version == 0:
        return Cgroups(NONE, "no cgroup filesystem at /sys/fs/cgroup", fix="mount cgroup2 there")
    if c.version == 1:
        # Unchanged from before cgroup v2 support: dockerd decides (it says "none").
        return Cgroups(
            NONE,
            "cgroup v1: a rootless dockerd applies limits only on cgroup v2 with systemd",
            fix="boot the host with cgroup v2 (systemd.unified_cgroup_hierarchy=1), then "
            + UNIT_FIX,
        )
    pinned = f"native.cgroupdriver={CGROUPFS}"  # dockerd makes it "none" in rootless mode
    if mode is not Mode.rootless:
        return Cgroups(
            NONE,
            "cgroup v2, uid 0 in a user namespace: no systemd user manager of yours to ask",
            fix="limits need a host with systemd: run docker-up there as your own user, "
            "under your user manager (`docker-up autostart --systemd`)",
            exec_opt=pinned,
        )
    if not c.systemd:
        where = f"your cgroup {c.own or '?'} " + (
            "is delegated to you" if c.own_writable else "is not delegated to you"
        )
        return Cgroups(
            NONE,
            f"cgroup v2 without systemd ({where}): a rootless dockerd applies limits only "
            "through a systemd user manager",
            fix="run docker-up on a host with systemd, " + UNIT_FIX.removeprefix("run docker-up "),
            exec_opt=pinned,
        )
    if not c.bus:
        return Cgroups(
            NONE,
            f"cgroup v2 with systemd, but your D-Bus session bus does not answer "
            f"({c.bus_error or 'not found'}): runc's systemd driver needs it",
            fix="as root: apt-get install dbus-user-session; then log in again (or "
            "`systemctl --user start dbus`); `loginctl enable-linger` keeps it without a login",
            exec_opt=pinned,
        )
    if not busctl:
        return Cgroups(
            NONE,
            "cgroup v2 with systemd, but busctl is not installed: runc's systemd driver runs "
            "it in a user namespace to learn who it is on your bus",
            fix="as root: apt-get install systemd (it has busctl)",
            exec_opt=pinned,
        )
    limits = tuple(x for x in LIMITS if x in c.manager_controllers)
    if not limits:
        return Cgroups(
            NONE,
            "cgroup v2 with systemd, but your user manager has no controllers delegated "
            f"(user@{uid}.service's cgroup.controllers: "
            f"{' '.join(c.manager_controllers) or 'empty'})",
            fix=DELEGATE_FIX,
            exec_opt=pinned,
        )
    return Cgroups(
        SYSTEMD,
        f"cgroup v2 with systemd; your user manager answers on {c.bus} and delegates "
        + " ".join(c.manager_controllers),
        limits,
        fix="" if limits == LIMITS else DELEGATE_FIX,
        exec_opt=f"native.cgroupdriver={SYSTEMD}",
        env={
            # What RootlessKit gives dockerd: the user's own uid, whose slice holds the
            # user manager (withRootless reads its cgroup.controllers).
            "ROOTLESSKIT_PARENT_EUID": str(uid),
            # runc (and busctl) find the bus here; the bus socket stays reachable inside the
            # mount namespace through /run's copy-up (a link to the real /run/user).
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={c.bus}",
        },
    )


UNDECIDED = Cgroups(NONE, "not decided")  # a Plan made without a decision (tests)
