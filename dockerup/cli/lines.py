"""The lines a start writes, without rich (its import would cost a start ~25 ms) and without
the results module: a foreground start prints these, then becomes the keeper."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from dockerup.settings.clientenv import export_lines

if TYPE_CHECKING:
    from dockerup.errors import DockerUpError
    from dockerup.keeper.supervise import Running

DIM, GREEN, RED, YELLOW = "2", "32", "1;31", "33"


def say(text: str, style: str = "", end: str = "\n") -> None:
    """One line to stderr, in colour on a terminal."""
    if style and sys.stderr.isatty():
        text = f"\x1b[{style}m{text}\x1b[0m"
    sys.stderr.write(text + end)
    sys.stderr.flush()


def foreground_notice() -> None:
    """The first line of a foreground start: `docker-up` typed to see what it is starts a
    daemon (the seed's default), so say so, and how to stop it or see the commands."""
    # (Not "starting dockerd": that is the progress line of the step itself.)
    say(
        "docker-up: runs dockerd in the foreground until Ctrl-C or `docker-up stop`; "
        "`docker-up --help` lists the commands",
        DIM,
    )


def progress(msg: str) -> None:
    say(f"docker-up: {msg}", DIM)


def announce(running: Running) -> None:
    t = running.timings.get("total", 0.0)
    say(
        f"docker-up: dockerd is ready in {t:.2f} s (mode {running.mode}, storage "
        f"{running.storage}, {running.net} MTU {running.mtu})",
        GREEN,
    )
    from dockerup.plan.cgroups import limits_notice

    if notice := limits_notice(running.cgroup_limits, running.cgroup_reason, running.cgroup_fix):
        say(f"docker-up: {notice}", YELLOW)
    # stdout carries only the lines a shell can eval.
    print(export_lines(running.docker_host), flush=True)


def error(e: DockerUpError) -> None:
    say(f"docker-up: {e.message}", RED)
    if e.detail:
        say(e.detail, DIM)
    if e.hint:
        say("fix: ", YELLOW, end="")
        say(e.hint)


def internal_error(e: Exception) -> None:
    say(f"docker-up: internal error: {type(e).__name__}: {e}", RED)
    say("run it again with --debug for the traceback, and report it")


def outside(e: DockerUpError, program: str) -> None:
    """`run --fallback` could not enter: the program runs here instead (the shell snippet's
    new terminal opens outside the namespace), and says why."""
    say(f"docker-up: not in the namespace ({e.message}): running {program} here", YELLOW)
