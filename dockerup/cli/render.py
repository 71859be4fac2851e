"""The one renderer: every verb's result as text (rich, for people) or as JSON in one
versioned envelope (--json). Status lines go to stderr; stdout carries only what a
script reads (JSON, the snippet, the DOCKER_HOST line a shell can eval)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dockerup import results as r
from dockerup.cli.lines import GREEN, YELLOW, announce, error, internal_error, progress, say
from dockerup.settings.clientenv import export_lines

__all__ = ["announce", "emit", "error", "internal_error", "progress"]

if TYPE_CHECKING:
    from rich.console import Console


def console(stderr: bool = True) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def emit(result: r.Result, as_json: bool = False) -> int:
    """Print the result; the command's exit status."""
    if as_json or isinstance(result, r.DryRun):
        print(json.dumps(r.envelope(result), indent=2))
    else:
        TEXT[type(result)](result)
    return result.exit_code


def _up(res: Any) -> None:
    if res.stopped:
        return
    if res.already_running:
        say("docker-up: already running")
    else:
        say("docker-up: dockerd is ready (running in the background)", GREEN)
        if res.notice:
            say(f"docker-up: {res.notice}", YELLOW)
    print(export_lines(res.docker_host), flush=True)


def _cgroups(d: r.Daemon) -> str:
    limits = ", ".join(d.cgroup_limits) or "no limits apply"
    fix = f"; fix: {d.cgroup_fix}" if d.cgroup_fix else ""
    return f"{d.cgroup_driver or '?'} ({limits}: {d.cgroup_reason or '?'}{fix})"


def _status(res: Any) -> None:
    from rich.table import Table

    c = console(stderr=False)
    if not res.running:
        c.print(f"docker-up is not running (socket would be {res.socket})")
        return
    if res.lazy or res.daemon is None:
        c.print(
            f"docker-up holds {res.socket} (pid {res.pid}): dockerd starts on the first connection"
        )
        return
    d: r.Daemon = res.daemon
    t = Table(show_header=False, box=None)
    rows = [
        ("state", "running" + ("" if res.answering else " (API not answering)")),
        ("mode", f"{d.mode} ({d.mode_reason})"),
        *([("user ids", d.userns)] if d.userns else []),
        ("DOCKER_HOST", res.docker_host),
        ("pids", f"docker-up {d.pid}, dockerd {d.dockerd_pid}, {d.net} {d.net_pid}"),
        ("engine", d.engine or "?"),
        ("network", f"{d.net} MTU {d.mtu} ({', '.join(d.net_options)})"),
        ("IPv6", d.ipv6_reason or ("on" if d.ipv6 else "off")),
        ("data-root", d.data_root),
        ("storage", f"{d.storage} ({d.storage_reason})"),
        ("cgroups", _cgroups(d)),
        ("iptables", d.iptables),
        ("uptime", f"{res.uptime_s:.0f} s"),
        ("restarts", str(d.restarts)),
    ]
    for k, v in rows:
        t.add_row(f"[bold]{k}[/]", v)
    c.print(t)
    if res.debug is not None:
        print(json.dumps(res.debug, indent=2))


def _stopped(res: Any) -> None:
    console().print("docker-up: stopped" if res.was_running else "docker-up: not running")


def _logs(res: Any) -> None:
    for name, line in res.lines:
        print(f"[{name}] {line}")


def _doctor(res: Any) -> None:
    import shutil

    from dockerup.cli.doctor_text import ASCII_MARKS, MARKS, STYLES, doctor_lines

    width = shutil.get_terminal_size((80, 24)).columns  # COLUMNS first, as rich would
    marks = MARKS if _encodes("".join(MARKS.values())) else ASCII_MARKS
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for status, line in doctor_lines(res.report.results, width, res.verbose, marks):
        print(f"\x1b[{STYLES[status]}m{line}\x1b[0m" if colour and status else line)


def _encodes(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _fixes(res: Any) -> None:
    c = console()
    if not res.fixes:
        c.print("docker-up doctor: nothing to fix")
    elif not res.applied:
        c.print("docker-up doctor: run these as root (or: sudo docker-up doctor --fix):")
        for f in res.fixes:
            print("  sudo " + " ".join(f.argv))
    else:
        for f in res.fixes:
            c.print(f"docker-up doctor: {f.what or ' '.join(f.argv)}")
        if res.user:
            c.print(f"docker-up doctor: run `docker-up doctor` as {res.user} to confirm")


def _config(res: Any) -> None:
    from rich.table import Table

    t = Table(title=f"docker-up settings (file: {res.file})")
    for col in ("setting", "value", "from"):
        t.add_column(col)
    for s in res.settings:
        t.add_row(s.key, json.dumps(s.value), s.source)
    console(stderr=False).print(t)


def _snippet(res: Any) -> None:
    print(res.text, end="")


def _autostart(res: Any) -> None:
    for ch in res.changes:
        if res.enabled:
            console().print(
                f"docker-up: {ch.shell}: {ch.file} {'updated' if ch.changed else 'already set'}"
            )
        elif ch.changed:
            console().print(f"docker-up: {ch.shell}: removed from {ch.file}")


def _unit(res: r.UnitState) -> None:
    if not res.installed:
        say(f"docker-up: no systemd --user unit of docker-up's ({res.file}: {res.state})")
        return
    say(f"docker-up: {res.file}: enabled, {res.state}", GREEN)
    if not res.linger:
        say(
            "docker-up: your user manager, and docker-up with it, stops at your last logout; "
            f"to keep it running: sudo loginctl enable-linger {res.user}",
            YELLOW,
        )


def _autostart_state(res: r.AutostartState) -> None:
    for row in res.shells:
        print(f"{row.shell:5} {'installed' if row.installed else '-':10} {row.file}")


def _installed(res: Any) -> None:
    if not res.packages:
        console().print("docker-up: everything docker-up needs is installed")
    elif res.installed:
        console().print(f"docker-up: installed {' '.join(res.packages)}")
    else:
        print("sudo apt-get update && sudo apt-get install -y " + " ".join(res.packages))


def _ports(res: Any) -> None:
    from rich.table import Table

    c = console(stderr=False)
    if not res.rows:
        c.print("docker-up: no port published or auto-exposed")
        return
    t = Table(box=None)
    for col in ("port", "proto", "address", "how", "owner", "note"):
        t.add_column(
            col.upper(),
            no_wrap=col != "note",
            overflow="ellipsis",
            max_width=40 if col == "owner" else None,
        )
    for row in res.rows:
        how = "refused" if row.reason is not None else row.how
        note = row.reason or (f"-> {row.target}" if row.target and row.container else "")
        t.add_row(
            str(row.port), row.proto, ", ".join(row.addresses) or "-", how, row.owner or "?", note
        )
    c.print(t)


TEXT: dict[type[r.Result], Callable[[Any], None]] = {
    r.Up: _up,
    r.Status: _status,
    r.Stopped: _stopped,
    r.Logs: _logs,
    r.Doctor: _doctor,
    r.Fixes: _fixes,
    r.ConfigShown: _config,
    r.Snippet: _snippet,
    r.Autostart: _autostart,
    r.AutostartState: _autostart_state,
    r.UnitState: _unit,
    r.Installed: _installed,
    r.Ports: _ports,
}
