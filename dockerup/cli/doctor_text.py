"""`docker-up doctor` as text: a check that passes is one line (mark, id, what was found,
cut to the width); one that fails or warns gets its finding in full and the exact fix on
the lines below, as flutter doctor and brew doctor do. --verbose: every check in full.
Pure (lines and their styles), so the layout is tested at any width."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockerup.doctor import Check, Finding

MARKS = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}
ASCII_MARKS = {"ok": "+", "warn": "!", "fail": "x", "skip": "-"}
STYLES = {"ok": "32", "warn": "33", "fail": "1;31", "skip": "2"}
INDENT = "    "


def doctor_lines(
    results: Sequence[tuple[Check, Finding]],
    width: int,
    verbose: bool = False,
    marks: dict[str, str] = MARKS,
) -> list[tuple[str, str]]:
    """(style, line) for each line to print; style is a status ("" for none)."""
    width = max(width, 40)
    column = max((len(c.id) for c, _ in results), default=0)
    out: list[tuple[str, str]] = []
    shown: dict[str, str] = {}  # each fix said so far -> the first check that said it
    for check, result in results:
        head = f"{marks[str(result.status)]} {check.id:<{column}} "
        out += check_lines(head, check, result, width, verbose, shown.get(result.hint))
        if result.hint:
            shown.setdefault(result.hint, check.id)
    failed = any(str(r.status) == "fail" for _, r in results)
    out += [
        ("fail" if failed else "", line)
        for line in wrapped(summary(results, verbose), width, "", INDENT)
    ]
    return out


def check_lines(
    head: str, check: Check, result: Finding, width: int, verbose: bool, said_by: str | None = None
) -> list[tuple[str, str]]:
    """said_by: the check that already showed this very fix (it is not repeated)."""
    status = str(result.status)
    loud = status in ("warn", "fail")
    if verbose:  # the title on the check's line, the finding in full below
        lines = wrapped(head + check.title, width, "", INDENT)
        lines += wrapped(result.detail, width, INDENT, INDENT)
    elif loud:  # the finding starts on the check's own line and goes on below it
        lines = wrapped(head + result.detail, width, "", INDENT)
    else:
        lines = [cut(head + result.detail, width)]
    if result.hint and (loud or verbose):
        fix = f"as for {said_by}" if said_by and not verbose else result.hint
        lines += wrapped("fix: " + fix, width, INDENT, INDENT + "     ")
    return [(status, lines[0]), *(("", line) for line in lines[1:])]


def wrapped(text: str, width: int, first: str, rest: str) -> list[str]:
    """The text wrapped to the width: its first line indented by `first`, all others (and
    each further paragraph: a hint may hold several) by `rest`."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lead = rest if lines else first
        lines += textwrap.wrap(
            paragraph, width, initial_indent=lead, subsequent_indent=rest, break_on_hyphens=False
        ) or [lead.rstrip()]
    return lines


def cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def summary(results: Sequence[tuple[Check, Finding]], verbose: bool) -> str:
    counts: dict[str, int] = {}
    for _, r in results:
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    said = ", ".join(
        f"{counts[s]} {word}"
        for s, word in (("fail", "fail"), ("warn", "warn"), ("ok", "ok"), ("skip", "skipped"))
        if counts.get(s)
    )
    verdict = "" if counts.get("fail") else "; nothing fails"
    return f"docker-up doctor: {said}{verdict}" + ("" if verbose else " (--verbose: in full)")
