"""What a doctor check is: its health (Health), what it found and the fix (Finding), the
check itself as data (Check), and the report of a run. Also the two helpers every group
of checks uses: the planner's require_* rules as checks, and the mode `up` would run in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dockerup.doctor.probe import DoctorFacts
from dockerup.errors import DockerUpError
from dockerup.settings.modes import Mode, resolve_mode


class Health(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"
    skip = "skip"


@dataclass(frozen=True)
class Finding:
    status: Health
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    run: Callable[[DoctorFacts], Finding]
    # Fatal: docker-up cannot start while it fails. `up` itself runs the fatal checks that
    # are also cheap; the others (each needs a process: a namespace, a --version) fail in
    # `up` as it starts, with their own error.
    fatal: bool = False
    # Cheap: reads only what doctor/facts.probe_cheap gives (no process is started for it).
    cheap: bool = False


def see_programs(missing: list[str]) -> Finding:
    """A program this check needs is not installed: the programs check owns that finding
    and its fix (every missing program, in one apt-get line), so it is not said twice."""
    return Finding(Health.skip, f"{', '.join(missing)} not installed (see programs)")


def ok(detail: str) -> Finding:
    return Finding(Health.ok, detail)


def from_require(fn: Callable[[], object], detail: str) -> Finding:
    """A require_* rule of the planner as a check: its error becomes the failure."""
    try:
        fn()
    except DockerUpError as e:
        return Finding(Health.fail, e.message, e.hint or "")
    return ok(detail)


def mode_of(f: DoctorFacts) -> Mode:
    """The mode `up` would run in with this configuration (auto where what it asks for
    cannot work: check_mode reports that)."""
    h = f.host
    try:
        return resolve_mode(h.uid, h.initial_userns, h.net_admin, f.mode)[0]
    except DockerUpError:
        return resolve_mode(h.uid, h.initial_userns, h.net_admin, None)[0]


@dataclass(frozen=True)
class Report:
    results: tuple[tuple[Check, Finding], ...]

    @property
    def failed(self) -> bool:
        return any(r.status is Health.fail for _, r in self.results)

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
