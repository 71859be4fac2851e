"""`docker-up run`'s two ways in: Typer's command in main.py, and entry.py's quick path for
the plain forms, which every shell that `shell-init --enter` enters runs (Typer's import
costs each ~0.1 s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockerup.errors import DockerUpError


def quick_run(args: list[str]) -> tuple[list[str], bool, bool] | None:
    """`run [--root] [--fallback] [--] CMD...` read as the Typer command reads it: (CMD,
    root, fallback). Each shell that `shell-init --enter` enters runs this, so it skips
    Typer's ~0.1 s. None: anything else (-h, --debug, another option, no command), which
    is Typer's to answer."""
    root = fallback = False
    for i, arg in enumerate(args):
        if arg == "--":
            return (args[i + 1 :], root, fallback) if args[i + 1 :] else None
        if arg == "--root":
            root = True
        elif arg == "--fallback":
            fallback = True
        elif arg.startswith("-"):
            return None
        else:
            return args[i:], root, fallback
    return None


def run_program(command: list[str], root: bool, fallback: bool) -> int:
    """docker-up run, either way in: becomes the program (returns only on failure)."""
    from dockerup.cli import lines
    from dockerup.verbs import resolve as settings
    from dockerup.verbs import run

    def outside(e: DockerUpError) -> None:
        lines.outside(e, command[0])

    try:
        run.run(settings.current_paths(), command, root, outside if fallback else None)
    except run.CannotStart as e:
        lines.error(e)
        return e.status
    return 0
