"""What a command line means before any parser reads it: both ways in (entry.py's quick
starts, the Typer app in main.py) need it, and neither imports the other for it."""

from __future__ import annotations

# The top-level options: any other option first means `up` (means_up).
ROOT_OPTIONS = ("--help", "-h", "--version", "--install-completion", "--show-completion")


def means_up(args: list[str]) -> bool:
    """`docker-up [OPTIONS]` means `docker-up up [OPTIONS]`, as Gitpod's docker-up is used
    (the top-level options excepted)."""
    first = args[0].split("=", 1)[0] if args else ""
    return not args or (first.startswith("-") and first not in ROOT_OPTIONS)
