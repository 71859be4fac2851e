"""The command line. Typer only: parse, call the core, render. Heavy modules are imported
inside the commands, so `docker-up` starts its helpers before paying for them."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from dockerup.errors import DockerUpError

if TYPE_CHECKING:
    from rich.console import Console

    from dockerup.supervise import Running

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="A rootless Docker daemon in its own user and network namespace.",
)
state = {"debug": False}


def _console(stderr: bool = True) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def render_error(e: DockerUpError) -> None:
    c = _console()
    c.print(f"[bold red]docker-up:[/] {e.message}", markup=True)
    if e.detail:
        c.print(e.detail, markup=False, style="dim")
    if e.hint:
        c.print(f"[yellow]fix:[/] {e.hint}")


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    state["debug"] = debug


@app.command()
def up(
    mtu: Annotated[
        int,
        typer.Option(help="MTU of the tap device and of dockerd's bridges.", min=1280, max=65520),
    ] = 65520,
    allow_host_loopback: Annotated[
        bool,
        typer.Option(
            "--allow-host-loopback",
            help="Let the namespace reach the workspace's 127.0.0.1 as 10.0.2.2.",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for dockerd.")] = 60.0,
    storage: Annotated[str, typer.Option(help="auto, overlay2, fuse-overlayfs or vfs.")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
) -> None:
    """Start dockerd in its own namespaces and keep it running (the default command)."""
    from dockerup import app as core
    from dockerup.config import Config, Storage

    try:
        st = Storage(storage)
    except ValueError as e:
        raise DockerUpError(
            f"unknown storage driver {storage!r}",
            hint="choose auto, overlay2, fuse-overlayfs or vfs",
        ) from e
    config = Config(
        mtu=mtu, allow_host_loopback=allow_host_loopback, start_timeout=timeout, storage=st
    )
    if dry_run:
        import json

        print(json.dumps(core.plan_summary(core.make_plan(config)), indent=2))
        return
    raise typer.Exit(core.up(config, _progress(), _announce))


def _progress() -> Callable[[str], None]:
    c = _console()

    def progress(msg: str) -> None:
        c.print(f"[dim]docker-up: {msg}[/]")

    return progress


def _announce(running: Running) -> None:
    c = _console()
    t = running.timings.get("total", 0.0)
    c.print(
        f"[green]docker-up: dockerd is ready[/] in {t:.2f} s "
        f"(storage {running.storage}, {running.net} MTU {running.mtu})"
    )
    # stdout carries only the line a shell can eval.
    print(f"export DOCKER_HOST={running.docker_host}", flush=True)


GLOBAL_FLAGS = ("--debug",)


def default_to_up(args: list[str]) -> list[str]:
    """`docker-up [OPTIONS]` means `docker-up up [OPTIONS]`, as Gitpod's docker-up is used."""
    i = 0
    while i < len(args) and args[i] in GLOBAL_FLAGS:
        i += 1
    rest = args[i:]
    if not rest or (rest[0].startswith("-") and rest[0] not in ("--help", "-h")):
        return [*args[:i], "up", *rest]
    return args


def main() -> None:
    """Errors end here: a DockerUpError is the user's to fix and gets no traceback; anything
    else is our bug, shown in one line unless --debug asks for the traceback."""
    try:
        app(args=default_to_up(sys.argv[1:]), prog_name="docker-up")
    except DockerUpError as e:
        if state["debug"]:
            traceback.print_exc()
        render_error(e)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if state["debug"]:
            traceback.print_exc()
        _console().print(
            f"[bold red]docker-up: internal error:[/] {type(e).__name__}: {e}",
            markup=True,
        )
        _console().print("run it again with --debug for the traceback, and report it")
        sys.exit(70)


if __name__ == "__main__":
    main()
