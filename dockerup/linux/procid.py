"""Which process is ours: a PID, with the start time and the executable it had when docker-up
recorded it (stdlib only: the keeper uses it).

A PID alone names whoever holds it now: after a crash it may be reused, and containers run
as the user's own uid, so a process that merely looks like dockerd could be anyone's. The
start time (clock ticks after boot, /proc/PID/stat field 22) changes with every new
process; the executable is checked too. Before a signal, a pidfd is opened and the three
are compared once more: from then on the pidfd names that very process, so the signal and
the wait cannot reach another one, however PIDs are reused meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

from dockerup.linux.fdwait import readable
from dockerup.wire.specs import Spec


@dataclass(frozen=True)
class ProcId(Spec):
    pid: int
    start: int  # clock ticks after boot
    exe: str


EXITED = ("Z", "X")  # states of a process that runs nothing any more: zombie, dead


def fields(stat: str) -> list[str]:
    """/proc/PID/stat from field 3 on: the command name (field 2) may hold spaces and ')'."""
    return stat.rsplit(")", 1)[1].split()


def state(stat: str) -> str:
    """Field 3 of /proc/PID/stat (R, S, D, Z, ...)."""
    return fields(stat)[0]


def start_time(stat: str) -> int:
    """Field 22 of /proc/PID/stat."""
    return int(fields(stat)[19])


def identify(pid: int) -> ProcId | None:
    """The process that holds pid now, if it is the caller's (same uid, or any uid in a user
    namespace the caller made: keep-id's dockerd is a subordinate id) and alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        if os.stat(f"/proc/{pid}").st_uid != os.getuid() and not in_own_userns(pid):
            return None
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    if state(stat) == "Z":
        return None  # a zombie runs nothing
    return ProcId(pid, start_time(stat), exe)


def in_own_userns(pid: int) -> bool:
    """pid lives in a user namespace the caller made (not the caller's own): the caller
    holds every capability there, signals included."""
    from dockerup.linux import libc as linux

    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
            return False
        return linux.userns_owner(pid) == os.getuid()
    except OSError:
        return False


def identities(pids: dict[str, int | None]) -> dict[str, ProcId]:
    """What state.json records of each named process that runs now, to recognise it
    later."""
    out = {}
    for name, pid in pids.items():
        if pid is not None and (ident := identify(pid)):
            out[name] = ident
    return out


def open_if_same(ident: ProcId) -> int | None:
    """A pidfd for the recorded process if it still runs, else None."""
    try:
        pidfd = os.pidfd_open(ident.pid)
    except OSError:
        return None
    if identify(ident.pid) != ident:
        os.close(pidfd)
        return None
    return pidfd


def terminate(ident: ProcId, timeout: float, kill_after: float = 5.0) -> bool:
    """SIGTERM the recorded process, SIGKILL it if it outlives timeout; True if it was
    running. Nothing is signalled unless it is that very process."""
    pidfd = open_if_same(ident)
    if pidfd is None:
        return False
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not readable([pidfd], timeout):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            readable([pidfd], kill_after)
    finally:
        os.close(pidfd)
    return True


def signalled(ident: ProcId, sig: int) -> int | None:
    """Send one signal to the recorded process; its pidfd (the caller closes it, and may
    wait on it), or None if it no longer runs."""
    pidfd = open_if_same(ident)
    if pidfd is None:
        return None
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        os.close(pidfd)
        return None
    return pidfd


def send(ident: ProcId, sig: int) -> bool:
    """Send one signal to the recorded process; False if it no longer runs."""
    pidfd = signalled(ident, sig)
    if pidfd is None:
        return False
    os.close(pidfd)
    return True
