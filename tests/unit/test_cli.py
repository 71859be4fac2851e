"""First contact with the command line: --version, completion, --debug anywhere, choices
that complete and fail early, and a bare `docker-up` that says what it does."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

import dockerup
from dockerup import shellinit
from dockerup.cli import argv as cli_argv
from dockerup.cli import choices, entry, lines
from dockerup.cli import main as cli
from dockerup.net.kinds import NET_DRIVERS
from dockerup.ports.tables import FORWARDERS
from dockerup.settings.config import Storage
from dockerup.settings.modes import Mode

PKG_PARENT = Path(dockerup.__file__).parent.parent


def docker_up(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point (cli/entry.py), as the console script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "dockerup", *args],
        cwd=PKG_PARENT,
        env={**os.environ, "NO_COLOR": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_prints_it_and_exits_0() -> None:
    r = docker_up("--version")
    assert (r.returncode, r.stdout) == (0, f"docker-up {dockerup.__version__}\n"), r.stderr


def test_show_completion_prints_the_bash_script() -> None:
    r = docker_up("--show-completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "complete -o default -F _docker_up_completion docker-up" in r.stdout
    assert "_DOCKER_UP_COMPLETE=complete_bash" in r.stdout


def test_install_completion_writes_typers_script(tmp_path: Path) -> None:
    r = docker_up("--install-completion", "bash", HOME=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    script = tmp_path / ".bash_completions" / "docker-up.sh"
    assert "_docker_up_completion" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def complete(words: str) -> list[str]:
    """What bash's completion gets back for the command line `words` (Typer's protocol)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    r = docker_up(_DOCKER_UP_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("docker-up up --net ", ["slirp4netns", "pasta"]),
        ("docker-up up --mode ", ["auto", "rootless", "userns-root", "privileged"]),
        ("docker-up up --storage ", ["auto", "overlay2", "fuse-overlayfs", "vfs"]),
        ("docker-up up --port-forwarder ", ["splice", "slirp"]),
        ("docker-up shell-init ", ["bash", "zsh", "fish", "sh"]),
        ("docker-up autostart enable --shell f", ["fish"]),
    ],
)
def test_choices_complete(words: str, expected: list[str]) -> None:
    assert complete(words) == expected


def test_the_choices_are_the_configurations() -> None:
    """The command line's sets and the settings' cannot drift apart."""
    assert get_args(choices.ModeName) == ("auto", *[m.value for m in Mode])
    assert get_args(choices.NetName) == NET_DRIVERS
    assert get_args(choices.StorageName) == tuple(s.value for s in Storage)
    assert get_args(choices.ForwarderName) == FORWARDERS
    assert tuple(s.value for s in choices.Shell) == shellinit.SHELLS


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["up", "--mode", "bogus"], "'--mode'"),
        (["up", "--net", "vpnkit"], "'--net'"),
        (["up", "--storage", "btrfs"], "'--storage'"),
        (["up", "--port-forwarder", "socat"], "'--port-forwarder'"),
        (["shell-init", "tcsh"], "'shell'"),
        (["autostart", "enable", "--shell", "csh"], "'--shell'"),
    ],
)
def test_a_wrong_choice_stops_before_anything_runs(
    args: list[str], option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockerup.verbs import resolve as settings

    def no(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the command ran")

    monkeypatch.setattr(settings, "load_config", no)
    r = CliRunner().invoke(cli.app, args, prog_name="docker-up")
    assert r.exit_code == 2, r.output
    assert f"Invalid value for {option}" in r.output
    assert "is not one of" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize(
    ("argv", "debug", "rest"),
    [
        (["--debug", "status"], True, ["status"]),
        (["status", "--debug"], True, ["status"]),
        (["config", "show", "--debug", "--json"], True, ["config", "show", "--json"]),
        (["--debug"], True, []),
        (["status"], False, ["status"]),
        # What follows `--`, or exec's command, is the command's own.
        (["exec", "--debug", "--", "sh", "--debug"], True, ["exec", "--", "sh", "--debug"]),
        (["exec", "tool", "--debug"], False, ["exec", "tool", "--debug"]),
        (["run", "--root", "tool", "--debug"], False, ["run", "--root", "tool", "--debug"]),
        (["run", "--debug", "tool", "-h"], True, ["run", "tool", "-h"]),
    ],
)
def test_debug_before_or_after_the_verb(argv: list[str], debug: bool, rest: list[str]) -> None:
    assert cli_argv.take_debug(argv) == (debug, rest)


def test_a_debug_that_is_an_options_value_stays_its_value() -> None:
    """`--dockerd-arg --debug` asks dockerd for its debug log: not docker-up's --debug."""
    import typer.main

    takes_value = cli_argv.value_options(typer.main.get_command(cli.app))
    assert {"--dockerd-arg", "--mtu", "--net", "--shell", "-n"} <= takes_value
    assert {"--json", "--debug", "--detach", "-d", "--help"} & takes_value == set()
    argv = ["up", "--dockerd-arg", "--debug", "--debug", "--dry-run"]
    assert cli_argv.take_debug(argv, takes_value) == (
        True,
        ["up", "--dockerd-arg", "--debug", "--dry-run"],
    )


def test_debug_after_the_verb_shows_the_traceback() -> None:
    broken = {"DOCKER_UP_MTU": "lots"}  # a DockerUpError from the settings
    plain = docker_up("config", "show", **broken)
    assert plain.returncode == 1 and "DOCKER_UP_MTU" in plain.stderr
    assert "Traceback" not in plain.stderr
    after = docker_up("config", "show", "--debug", **broken)
    assert after.returncode == 1 and "Traceback" in after.stderr


def first_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.splitlines()[0]


NOTICE = (
    "docker-up: runs dockerd in the foreground until Ctrl-C or `docker-up stop`; "
    "`docker-up --help` lists the commands"
)


def test_a_bare_docker_up_says_first_that_it_runs_in_the_foreground(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`docker-up` alone (entry.py's quick path) still starts the daemon in the foreground;
    the first thing it prints says so, with how to stop it and where the commands are."""
    from dockerup.namespace import early

    @contextlib.contextmanager
    def no_child(*_a: Any) -> Iterator[None]:
        yield None

    started: list[str] = []
    monkeypatch.setattr(early, "activated_fds", lambda: None)
    monkeypatch.setattr(early, "child_started", no_child)
    monkeypatch.setattr(entry, "start", lambda how, *_a: started.append(how) or 0)
    assert entry.quick("foreground") == 0
    assert started == ["foreground"]
    assert first_line(capsys) == NOTICE
    # A detached start returns at once and prints its own lines: no notice.
    assert entry.quick("detach") == 0
    assert capsys.readouterr().err == ""


def test_up_in_the_foreground_says_so_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockerup.results import Up
    from dockerup.verbs import resolve as settings
    from dockerup.verbs import up as verbs

    monkeypatch.setattr(settings, "load_config", lambda _cli: None)
    monkeypatch.setattr(
        verbs, "up", lambda *_a: Up("unix:///s", already_running=False, stopped=True)
    )
    r = CliRunner().invoke(cli.app, ["up", "--mtu", "1500"], prog_name="docker-up")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines()[0] == NOTICE


def test_up_gives_resolve_config_fields_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every option of `up` reaches resolve() as a Config field: a key it does not know
    would fail there (ValueError) rather than be dropped."""
    from dockerup.results import DryRun
    from dockerup.settings.config import CONFIG_FIELDS, resolve
    from dockerup.verbs import resolve as settings
    from dockerup.verbs import up as verbs

    seen: list[dict[str, Any]] = []

    def load(given: dict[str, Any]) -> None:
        seen.append(given)
        resolve(given, {}, None)

    monkeypatch.setattr(settings, "load_config", load)
    monkeypatch.setattr(verbs, "dry_run", lambda _loaded: DryRun({}))
    r = CliRunner().invoke(cli.app, ["up", "--dry-run", "--mtu", "1500"], prog_name="docker-up")
    assert r.exit_code == 0, r.output
    (given,) = seen
    assert given["mtu"] == 1500 and set(given) <= CONFIG_FIELDS
    assert len(given) > 15  # every option of `up`, given or not (None)


def test_the_notice_is_said_by_lines(capsys: pytest.CaptureFixture[str]) -> None:
    lines.foreground_notice()
    assert capsys.readouterr().err == NOTICE + "\n"


def test_the_environment_and_the_file_keep_their_own_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the command line's choices changed: DOCKER_UP_* and config.toml say as before."""
    from dockerup.errors import DockerUpError
    from dockerup.settings.config import resolve
    from dockerup.verbs import resolve as settings

    monkeypatch.setenv("DOCKER_UP_MODE", "bogus")
    with pytest.raises(DockerUpError, match="unknown mode"):
        settings.load_config({})
    with pytest.raises(DockerUpError, match="net: must be one of: slirp4netns, pasta"):
        resolve({}, {}, 'net = "vpnkit"\n', "config.toml")


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["exec", "ls", "-h"], ["ls", "-h"]),  # -h after the command's first word is its own
        (["exec", "ls", "--help"], ["ls", "--help"]),
        (["exec", "--", "ip", "-4", "a"], ["ip", "-4", "a"]),
    ],
)
def test_exec_passes_the_commands_options_through(
    args: list[str], command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockerup.verbs import resolve as settings
    from dockerup.verbs import running

    ran: list[list[str]] = []
    monkeypatch.setattr(settings, "current_paths", lambda: None)
    monkeypatch.setattr(running, "enter", lambda _paths, argv: ran.append(argv))
    r = CliRunner().invoke(cli.app, args, prog_name="docker-up")
    assert (r.exit_code, ran) == (0, [command]), r.output
    helped = CliRunner().invoke(cli.app, ["exec", "-h"], prog_name="docker-up")
    assert helped.exit_code == 0 and "Usage: docker-up exec" in helped.output
