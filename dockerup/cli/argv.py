"""What a command line means before any parser reads it (pure): both ways in (entry.py's
quick starts, the Typer app in main.py) need it, and neither imports the other for it.
--debug taken wherever it stands, and `docker-up [OPTIONS]` read as `docker-up up [OPTIONS]`."""

from __future__ import annotations

from typing import Any

# What the top-level command answers itself: these never mean `up`.
ROOT_OPTIONS = ("--help", "-h", "--version", "--install-completion", "--show-completion")


def take_debug(
    args: list[str], takes_value: frozenset[str] = frozenset()
) -> tuple[bool, list[str]]:
    """--debug wherever it stands among docker-up's own options, before or after the verb;
    not as an option's value (`--dockerd-arg --debug` is dockerd's), not after `--` and not
    inside the command that `exec` or `run` runs (those are the command's own)."""
    debug, rest = False, list[str]()
    for i, arg in enumerate(args):
        if arg == "--":
            return debug, rest + args[i:]
        if arg == "--debug" and not (rest and rest[-1] in takes_value):
            debug = True
            continue
        rest.append(arg)
        if rest[:1] in (["exec"], ["run"]) and len(rest) > 1 and not arg.startswith("-"):
            return debug, rest + args[i + 1 :]
    return debug, rest


def value_options(command: Any) -> frozenset[str]:
    """Every option of any command that takes a value (the next word is that value). The
    command is click's, which Typer vendors privately: read by duck typing."""
    found: set[str] = set()
    for p in command.params:
        if p.param_type_name == "option" and not p.is_flag and not p.count:
            found.update(p.opts)
    for sub in getattr(command, "commands", {}).values():
        found |= value_options(sub)
    return frozenset(found)


def means_up(args: list[str]) -> bool:
    """`docker-up [OPTIONS]` means `docker-up up [OPTIONS]`, as Gitpod's docker-up is used
    (the top-level options excepted)."""
    first = args[0].split("=", 1)[0] if args else ""
    return not args or (first.startswith("-") and first not in ROOT_OPTIONS)


def default_to_up(args: list[str]) -> list[str]:
    """`docker-up [OPTIONS]` as `docker-up up [OPTIONS]` (means_up)."""
    return ["up", *args] if means_up(args) else args
