"""Shell start-up: the snippet (`shell-init`), the rc-file block (`autostart`) and shell
completion, which `autostart enable` installs for the shells it edits."""

from __future__ import annotations

import contextlib
from pathlib import Path

from dockerup import shellinit
from dockerup.errors import DockerUpError
from dockerup.files import atomic_write
from dockerup.host import facts as host
from dockerup.keeper.background import docker_up_path
from dockerup.results import Autostart, AutostartState, RcChange, RcState, Snippet
from dockerup.settings import context
from dockerup.settings.paths import resolve_paths
from dockerup.verbs.resolve import load_config

PROG = "docker-up"


def shell_init(
    shell: str, start: bool | None = None, lazy: bool | None = None, enter: bool = False
) -> Snippet:
    """The snippet; whether it starts docker-up, and how, comes from the settings unless
    given. enter: interactive shells enter docker-up's namespace (`docker-up run`)."""
    if shell not in shellinit.SHELLS:
        raise DockerUpError(f"unknown shell {shell!r}", hint="one of: bash, zsh, fish, sh")
    config = load_config({}).config
    start = config.autostart if start is None else start
    lazy = config.lazy_start if lazy is None else lazy
    return Snippet(shell, shellinit.snippet(shell, docker_up_path(), start, lazy, enter))


def write_through(path: Path, text: str) -> None:
    """Replace a file's text in one step. A symlink (dotfile managers link ~/.bashrc into
    their repository) is written through: the link stays, its target changes."""
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise DockerUpError(
                f"{path} is a link to {target}, which does not exist",
                hint=f"create {target}, or remove the link",
            )
        path = target
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, mode)


def completion_script(shell: str) -> str | None:
    """Typer's completion script for docker-up in this shell (None: Typer has none)."""
    try:
        from typer._completion_shared import get_completion_script
    except ImportError:  # a private API of Typer's: without it, no completion, nothing else
        return None
    complete_var = "_" + PROG.replace("-", "_").upper() + "_COMPLETE"
    return get_completion_script(prog_name=PROG, complete_var=complete_var, shell=shell)


def autostart(
    shells: list[str], enable: bool, lazy: bool | None = None, enter: bool = False
) -> Autostart:
    """Add (or remove) docker-up's marked block in each shell's rc file, with shell
    completion where the shell has it. Disabling also removes the docker context and the
    completion scripts (both docker-up's own files)."""
    f = host.probe()
    data = resolve_paths(f.env, f.uid, f.home).data
    changes = []
    for shell in shells:
        path = shellinit.rc_file(shell, Path(f.home), f.env.get("XDG_CONFIG_HOME", ""))
        old = path.read_text() if path.exists() else ""
        if enable:
            body = shell_init(shell, start=True, lazy=lazy, enter=enter).text
            body += install_completion(shell, data)
            new = shellinit.with_block(old, body)
        else:
            new = shellinit.without_block(old)
            with contextlib.suppress(FileNotFoundError):
                shellinit.completion_file(shell, data).unlink()
        if new != old:
            write_through(path, new)
        changes.append(RcChange(shell, path, new != old))
    if not enable:
        meta = context.meta_path(context.docker_config_dir(f.env, f.home))
        with contextlib.suppress(FileNotFoundError, OSError):
            meta.unlink()
            meta.parent.rmdir()
    return Autostart(enable, changes)


def install_completion(shell: str, data: Path) -> str:
    """Write the completion script; the rc-block line that loads it ("" if none)."""
    if shell not in shellinit.COMPLETION_SHELLS:
        return ""
    script = completion_script(shell)
    if script is None:
        return ""
    path = shellinit.completion_file(shell, data)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, script + "\n", 0o644)
    return shellinit.completion_line(shell, path)


def autostart_status() -> AutostartState:
    f = host.probe()
    rows = []
    for shell in shellinit.SHELLS:
        path = shellinit.rc_file(shell, Path(f.home), f.env.get("XDG_CONFIG_HOME", ""))
        text = path.read_text() if path.exists() else ""
        rows.append(RcState(shell, path, shellinit.has_block(text)))
    return AutostartState(rows)
