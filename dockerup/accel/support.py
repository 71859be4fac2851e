"""Can the acceleration agent (accel.py) work on this machine? Asked by the planner and by
doctor (facts.with_accel), stdlib only: the pure judgement of what the kernel and runc say
of themselves, and the one kernel feature probed here (SO_NETNS_COOKIE)."""

from __future__ import annotations

import re

from dockerup.accel.notify import netns_cookie

RUNC_MIN = (1, 1)  # seccomp listenerPath and SCMP_ACT_NOTIFY
LIBSECCOMP_MIN = (2, 5)


def _version(text: str, label: str) -> tuple[int, int] | None:
    m = re.search(re.escape(label) + r"\D*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def support_problems(
    seccomp_actions: str, runc_version: str, netns_cookie: bool, machine: str | None = None
) -> list[str]:
    """Why --net-accel cannot work on this machine (pure; empty: it can). runc_version is
    the whole output of `runc --version`; netns_cookie: the kernel tells which network
    namespace a socket lives in (how the agent knows a socket it swapped in); machine: why
    the agent's syscalls by number cannot be made here (linux.machine_problem)."""
    problems = [machine] if machine else []
    if "user_notif" not in seccomp_actions.split():
        problems.append("the kernel has no seccomp user notification (Linux 5.0+)")
    if not netns_cookie:
        problems.append("the kernel has no SO_NETNS_COOKIE (Linux 5.14+)")
    rv = _version(runc_version, "runc version")
    if rv is None or rv < RUNC_MIN:
        problems.append(f"runc {rv or '?'} cannot hand over a seccomp listener (1.1+)")
    lv = _version(runc_version, "libseccomp:")
    if lv is None or lv < LIBSECCOMP_MIN:
        problems.append(f"runc's libseccomp {lv or '?'} lacks user notification (2.5+)")
    return problems


def has_netns_cookie() -> bool:
    return netns_cookie() is not None
