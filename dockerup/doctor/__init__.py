"""`docker-up doctor`: the checks (pure functions of facts, one module per area: kernel.py,
network.py, binaries.py, account.py; what a check is: model.py; the table of them and how
they run: checks.py) and the fixes (planned purely: fixes.py). What the checks read, and
its probes: probe.py (on top of the host's facts, dockerup/host/facts.py); the verb that
puts them together is dockerup/verbs/doctor.py.

Must not touch: the keeper, the verbs, the CLI: diagnosis changes nothing and sits below
the use cases (tests/unit/test_layout.py). It reuses the plan's require_* rules."""

from __future__ import annotations

from dockerup.doctor.checks import CHECKS, UP_CHECKS, run_checks, up_failures
from dockerup.doctor.fixes import Fix, free_subid_start, package_fixes, plan_fixes
from dockerup.doctor.kernel import MIN_SUBIDS
from dockerup.doctor.model import Check, Finding, Health, Report
from dockerup.doctor.probe import DoctorFacts

__all__ = [
    "CHECKS",
    "MIN_SUBIDS",
    "UP_CHECKS",
    "Check",
    "DoctorFacts",
    "Finding",
    "Fix",
    "Health",
    "Report",
    "free_subid_start",
    "package_fixes",
    "plan_fixes",
    "run_checks",
    "up_failures",
]
