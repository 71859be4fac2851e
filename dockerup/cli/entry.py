"""The `docker-up` command's first code. The starts that shells, Gitpod-style dotfiles and
the lazy holder run (`docker-up`, `docker-up -d`, `docker-up up --lazy`: no other option)
skip Typer entirely: its import (with pydantic and rich) costs about 0.1 s, most of the
CLI's share of the start-up (docs/performance.md). Every other command line, including
any option, goes through the Typer app in main.py; both end in the same verbs and the
same renderer."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from dockerup.cli.argv import means_up
from dockerup.cli.guard import guarded

if TYPE_CHECKING:
    from dockerup.namespace import early

# Exact argument lists that need no parser: how each starts.
QUICK: dict[tuple[str, ...], str] = {
    (): "foreground",
    ("up",): "foreground",
    ("-d",): "detach",
    ("--detach",): "detach",
    ("up", "-d"): "detach",
    ("up", "--detach"): "detach",
    ("up", "--lazy"): "lazy",
}


def quick(how: str) -> int:
    from dockerup.namespace import early

    activated = early.activated_fds()
    if how == "foreground" and not activated:
        from dockerup.cli import lines

        lines.foreground_notice()
    if activated or how == "foreground":
        # The process that becomes the keeper starts the namespace child first: its Python
        # start overlaps the imports below (a detached start forks first; lazy holds).
        with early.child_started(sys.executable, activated[0] if activated else None) as c:
            return start(how, activated, c)
    return start(how, None, None)


def start(how: str, activated: tuple[int, int] | None, child: early.Child | None) -> int:
    from dockerup.cli import lines
    from dockerup.verbs import resolve as settings
    from dockerup.verbs import up as verbs

    if TYPE_CHECKING:
        from dockerup.results import Up

    loaded = settings.load_config({"listen_fd": activated[0] if activated else None})
    result: Up
    if activated:
        result = verbs.up_activated(loaded, activated[1], child)
    elif how == "lazy":
        result = verbs.up_lazy(loaded)
    elif how == "detach":
        result = verbs.up_detached(loaded)
    else:
        result = verbs.up(loaded, lines.progress, lines.announce, child)
    from dockerup.cli import render  # only now: a foreground start that got here stopped

    return render.emit(result)


def is_start(args: list[str]) -> bool:
    """`docker-up`, `docker-up [OPTIONS]`, `docker-up up ...` (after --debug too)."""
    rest = [a for a in args if a != "--debug"]
    return means_up(rest) or rest[:1] == ["up"]


def main() -> None:
    if is_start(sys.argv[1:]) and "_DOCKER_UP_COMPLETE" not in os.environ:
        from dockerup.namespace import early

        # The first thing a start does: a stop signal from here on ends it in order, with
        # a message (guard.py), never by the default disposition.
        early.stop_on_signals()
    if sys.argv[1:2] == ["run"] and "_DOCKER_UP_COMPLETE" not in os.environ:
        from dockerup.cli.run import quick_run, run_program

        if (parsed := quick_run(sys.argv[2:])) is not None:
            sys.exit(guarded(lambda: run_program(*parsed)))
    how = QUICK.get(tuple(sys.argv[1:]))
    # Shell completion calls `docker-up` without arguments too: that is Typer's to answer.
    if how is not None and "_DOCKER_UP_COMPLETE" not in os.environ:
        sys.exit(guarded(lambda: quick(how)))

    def full() -> int:
        # Inside guarded too: a start's stop signal may come during the Typer app's import.
        from dockerup.cli.main import main as typer_main

        typer_main()  # exits
        return 0

    sys.exit(guarded(full))
