"""Dotfile-driven auto start: the shell snippets and the marked rc-file block (pure).

The snippet runs in every new interactive shell, so it must cost almost nothing: no Python
on the shell's path, only shell built-ins (and, for fish and sh, one `id -u`). It exports
DOCKER_HOST, and, unless docker-up's pid file names a live process, starts `docker-up
--detach` in the background, silently. Many shells opening at once are fine: docker-up's
lock lets one start the daemon and the others wait for it and exit.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from dockerup.settings import clientenv

SHELLS = ("bash", "zsh", "fish", "sh")
BEGIN = "# >>> docker-up >>>"
BEGIN_NL = "# >>> docker-up (a newline was added before this block) >>>"
END = "# <<< docker-up <<<"
DOCTOR = "see docker-up doctor"


def snippet(
    shell: str, docker_up: str, start: bool = True, lazy: bool = False, enter: bool = False
) -> str:
    """lazy: start `docker-up up --lazy` (it holds the socket; the first client starts the
    daemon and waits for it) instead of `docker-up --detach`. enter: an interactive shell
    becomes itself again inside docker-up's namespace (`enter_lines`). docker_up's path is
    quoted: a space or a `$(...)` in it is a name, never a command."""
    verb = "up --lazy" if lazy else "--detach"
    if shell == "fish":
        fish = fish_quote(docker_up)
        return _fish(f"{fish} {verb}", lazy, start, _fish_enter(fish) if enter else [])
    command = f"{shlex.quote(docker_up)} {verb}"
    if shell not in SHELLS:
        raise ValueError(shell)
    uid = '"${UID:-$(id -u)}"' if shell in ("bash", "zsh") else '"$(id -u)"'
    lines = [
        f"_du_rt=${{XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/docker-up}}; "
        f': "${{_du_rt:=/tmp/docker-up-{uid}}}"',
        # Another user can make the /tmp fallback first: then it is not ours, and neither
        # DOCKER_HOST nor a start may point into it.
        'if [ -L "$_du_rt" ] || { [ -e "$_du_rt" ] && ! [ -O "$_du_rt" ]; }; then',
        f'  echo "docker-up: $_du_rt is not yours: DOCKER_HOST not set ({DOCTOR})" >&2',
        "else",
        'export DOCKER_HOST="unix://$_du_rt/docker.sock"',
        *clientenv.posix_exports(),
    ]
    if start:
        lines += [
            # Built-ins only: read docker-up's pid file, ask the kernel whether that pid
            # lives. (No final newline in it, so read's status says nothing: kill's does.)
            "_du_pid=",
            '{ read -r _du_pid < "$_du_rt/docker-up.pid"; } 2>/dev/null',
            'if ! kill -0 "${_du_pid:-none}" 2>/dev/null; then',
            f"  ( {command} >/dev/null 2>&1 & )",
            "fi",
            "unset _du_pid",
        ]
    if start:
        # The first `docker` of a new shell may come before the background start got far:
        # it waits (eager: until the API answers, which is when state.json appears; lazy:
        # until the socket is held, then activation makes the request itself wait).
        ready = '-S "$_du_s"' if lazy else '-e "${_du_s%/*}/state.json"'
        lines += [
            "docker() {",
            "  _du_s=${DOCKER_HOST#unix://}",
            f"  [ {ready} ] || {command} >/dev/null 2>&1",
            "  unset _du_s",
            '  command docker "$@"',
            "}",
        ]
    if enter:
        lines += enter_lines(shell, shlex.quote(docker_up))
    return "\n".join([*lines, "fi", "unset _du_rt"]) + "\n"


# How each shell starts itself again (the same binary, a login shell if this one is), and
# how it knows it runs a `-c` command: that command would be lost (IDEs read the user's
# environment with `$SHELL -i -l -c env`, which must not turn into a shell waiting for input).
AGAIN = {
    "bash": ('"$BASH"', "shopt -q login_shell", '[ -z "${BASH_EXECUTION_STRING-}" ]'),
    "zsh": ("zsh", "[[ -o login ]]", '[ -z "${ZSH_EXECUTION_STRING-}" ]'),
    "sh": ('"${SHELL:-/bin/sh}"', "true", "true"),  # ~/.profile: read by login shells
}


def enter_lines(shell: str, docker_up: str) -> list[str]:
    """An interactive shell on a terminal replaces itself with itself inside docker-up's
    namespace, as the user (`docker-up run`), when docker-up runs; the new shell reads this
    file again and sees
    DOCKER_UP_RUN, which `run` sets: it stays. Not running: a read and a kill -0, both
    built-ins. --fallback: when entering fails after all, the shell opens outside."""
    again, login, no_command = AGAIN[shell]
    return [
        "case $- in *i*)",
        f'  if [ -z "${{DOCKER_UP_RUN-}}" ] && [ -t 0 ] && {no_command}; then',
        "    _du_pid=",
        '    { read -r _du_pid < "$_du_rt/docker-up.pid"; } 2>/dev/null',
        '    if kill -0 "${_du_pid:-none}" 2>/dev/null; then',
        f"      _du_l=; {login} && _du_l=-l",
        f'      exec {docker_up} run --fallback -- {again} ${{_du_l:+"$_du_l"}}',
        "    fi",
        "    unset _du_pid",
        "  fi;;",
        "esac",
    ]


def _fish_enter(docker_up: str) -> list[str]:
    run = f"exec {docker_up} run --fallback -- (status fish-path)"
    return [
        "if status is-interactive; and not set -q DOCKER_UP_RUN; and test -t 0",
        "    set -l _du_pid none",
        "    test -r $_du_rt/docker-up.pid; and read _du_pid < $_du_rt/docker-up.pid",
        "    if kill -0 $_du_pid 2>/dev/null",
        f"        status is-login; and {run} -l",
        f"        {run}",
        "    end",
        "end",
    ]


def fish_quote(word: str) -> str:
    """fish's single quotes take \\ and \\' as escapes (POSIX's take none)."""
    return "'" + word.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(command: str, lazy: bool, start: bool, enter: list[str]) -> str:
    lines = [
        "set -l _du_rt /tmp/docker-up-(id -u)",
        "set -q XDG_RUNTIME_DIR; and set _du_rt $XDG_RUNTIME_DIR/docker-up",
        "if test -L $_du_rt; or begin; test -e $_du_rt; and not test -O $_du_rt; end",
        f'    echo "docker-up: $_du_rt is not yours: DOCKER_HOST not set ({DOCTOR})" >&2',
        "else",
        "set -gx DOCKER_HOST unix://$_du_rt/docker.sock",
        *clientenv.fish_exports(),
    ]
    if start:
        lines += [
            "set -l _du_pid none",
            "test -r $_du_rt/docker-up.pid; and read _du_pid < $_du_rt/docker-up.pid",
            "if not kill -0 $_du_pid 2>/dev/null",
            f"    {command} >/dev/null 2>&1 &",
            "    disown 2>/dev/null",
            "end",
        ]
    if start:
        ready = "-S $s" if lazy else "-e (string replace -r '/[^/]*$' '' $s)/state.json"
        lines += [
            "function docker --wraps docker",
            "    set -l s (string replace unix:// '' $DOCKER_HOST)",
            f"    test {ready}",
            f"    or {command} >/dev/null 2>&1",
            "    command docker $argv",
            "end",
        ]
    return "\n".join([*lines, *enter, "end"]) + "\n"


# Shells whose completion docker-up installs (Typer writes the scripts; sh has none).
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def completion_file(shell: str, data: Path) -> Path:
    """Where `autostart enable` keeps the completion script: docker-up's own data directory,
    so that the rc block only reads a file (no Python when a shell opens)."""
    return data / f"completion.{shell}"


def completion_line(shell: str, path: Path) -> str:
    """The rc-block line that loads the completion script, if it is there."""
    q = fish_quote(str(path)) if shell == "fish" else shlex.quote(str(path))
    if shell == "fish":
        return f"test -r {q}; and source {q}\n"
    if shell == "zsh":  # compdef exists only once the user's compinit ran
        return f"(( $+functions[compdef] )) && [ -r {q} ] && . {q}\n"
    return f"[ -r {q} ] && . {q}\n"


def rc_file(shell: str, home: Path, xdg_config_home: str = "") -> Path:
    # fish reads $XDG_CONFIG_HOME/fish/config.fish when that variable is set.
    config = Path(xdg_config_home) if xdg_config_home else home / ".config"
    return {
        "bash": home / ".bashrc",
        "zsh": home / ".zshrc",
        "fish": config / "fish" / "config.fish",
        "sh": home / ".profile",
    }[shell]


def block(body: str, needs_newline: bool) -> str:
    return f"{BEGIN_NL if needs_newline else BEGIN}\n{body}{END}\n"


def with_block(text: str, body: str) -> str:
    """The rc file's text with docker-up's block (replaced if there, else appended)."""
    text = without_block(text)
    needs_newline = bool(text) and not text.endswith("\n")
    return text + ("\n" if needs_newline else "") + block(body, needs_newline)


def without_block(text: str) -> str:
    """Exactly the text before `with_block` added to it: enable then disable leaves the
    file byte-identical."""
    # The last marker line is docker-up's: the block is appended, and the text before it may
    # end in a line like the marker itself, which only then got its newline.
    start, begin = max((text.rfind(b + "\n"), b) for b in (BEGIN, BEGIN_NL))
    end = text.find(END + "\n", start) if start >= 0 else -1
    if end < 0:
        return text
    cut_from = start - 1 if begin == BEGIN_NL and start > 0 else start
    return text[:cut_from] + text[end + len(END) + 1 :]


def has_block(text: str) -> bool:
    return (BEGIN + "\n" in text or BEGIN_NL + "\n" in text) and END + "\n" in text
