from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockerup import shellinit


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_snippets(shell: str) -> None:
    text = shellinit.snippet(shell, "/opt/du/bin/docker-up")
    assert "DOCKER_HOST" in text and "/opt/du/bin/docker-up" in text and "--detach" in text
    assert "--detach" not in shellinit.snippet(shell, "/opt/du/bin/docker-up", start=False)


HOSTILE = "du $(touch pwned) it's `touch pwned2`"


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_a_path_with_spaces_and_dollars_is_one_word(shell: str, tmp_path: Path) -> None:
    """The snippet runs the docker-up it was given, by that name, and nothing in the name
    runs: a venv in a directory with a space or a `$(...)` in its name still works."""
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    bindir = tmp_path / HOSTILE
    bindir.mkdir()
    record = tmp_path / "argv"
    fake = bindir / "docker-up"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake.chmod(0o755)
    (tmp_path / "run").mkdir()
    script = shellinit.snippet(shell, str(fake))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    subprocess.run([shell, "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    deadline = time.monotonic() + 10
    # The snippet starts docker-up in the background; the redirect makes the file before
    # printf fills it.
    while not (record.exists() and record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.read_text() == "--detach\n"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


@given(st.text(max_size=300))
def test_enable_then_disable_is_byte_identical(original: str) -> None:
    body = shellinit.snippet("bash", "/x/docker-up")
    once = shellinit.with_block(original, body)
    twice = shellinit.with_block(once, body)
    assert once == twice  # idempotent: one block
    # Exactly one block is added to what the text is without docker-up's block (an rc file
    # that had one has it replaced, not doubled).
    assert once.count(shellinit.END) == shellinit.without_block(original).count(shellinit.END) + 1
    if not shellinit.has_block(original):
        assert shellinit.without_block(twice) == original


def test_enable_replaces_an_old_block() -> None:
    """A file that has docker-up's block already (an older snippet) keeps one, the new."""
    old = shellinit.with_block("alias ll='ls -l'\n", "export OLD=1\n") + "echo after\n"
    new = shellinit.with_block(old, "export NEW=1\n")
    assert new.count(shellinit.END) == 1
    assert "OLD=1" not in new and new.endswith("export NEW=1\n" + shellinit.END + "\n")


def test_disable_removes_only_the_block() -> None:
    original = "alias ll='ls -l'\n# mine\n"
    text = shellinit.with_block(original, "export X=1\n") + "echo after\n"
    assert shellinit.without_block(text) == original + "echo after\n"
    no_newline = "export A=1"
    assert shellinit.without_block(shellinit.with_block(no_newline, "b\n")) == no_newline


def test_completion_lines_only_read_a_file() -> None:
    """No Python when a shell opens: the block sources the script autostart wrote, if it
    is there (zsh only once compinit has defined compdef)."""
    p = Path("/home/a b/.local/share/docker-up/completion.bash")
    assert shellinit.completion_line("bash", p) == f"[ -r '{p}' ] && . '{p}'\n"
    z = shellinit.completion_line("zsh", p)
    assert z.startswith("(( $+functions[compdef] )) && ")
    assert shellinit.completion_line("fish", p) == f"test -r '{p}'; and source '{p}'\n"
    assert shellinit.completion_file("fish", Path("/d")) == Path("/d/completion.fish")


@pytest.mark.parametrize("original", [shellinit.BEGIN, shellinit.BEGIN_NL, "x\n" + shellinit.BEGIN])
def test_a_last_line_like_the_marker_is_the_users(original: str) -> None:
    """Found by hypothesis: a file whose last line, without its newline, reads like the
    marker. Once docker-up's block is appended that line has a newline and looks like a
    block's start: the block is the last marker's, so enabling stays idempotent."""
    once = shellinit.with_block(original, "export X=1\n")
    assert shellinit.with_block(once, "export X=1\n") == once
    assert shellinit.without_block(once) == original


SHELL_ARGV = {
    "bash": ["bash", "-i"],
    "zsh": ["zsh", "-i"],
    "sh": ["sh", "-i"],
    "fish": ["fish", "-i"],
}
RC = {"bash": ".bashrc", "zsh": ".zshrc", "sh": "rc", "fish": ".config/fish/config.fish"}


def entering(
    shell: str, tmp_path: Path, running: bool, argv: list[str] | None = None, **env: str
) -> str:
    """Run an interactive shell on a terminal, whose rc file is the --enter snippet, with a
    stand-in docker-up that records its arguments; what it recorded ("" when not run)."""
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    rt = tmp_path / "run" / "docker-up"
    rt.mkdir(parents=True, exist_ok=True)
    pid = rt / "docker-up.pid"
    pid.unlink(missing_ok=True)
    if running:  # a live process: this test's
        pid.write_text(str(os.getpid()))
    record, fake = tmp_path / "argv", tmp_path / "docker-up"
    record.unlink(missing_ok=True)
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake.chmod(0o755)
    rc = tmp_path / RC[shell]
    rc.parent.mkdir(parents=True, exist_ok=True)
    # The shell leaves a mark (a built-in: no process) before the snippet: "" then means
    # the snippet ran no docker-up, never that the shell did not start or read its rc file.
    read = tmp_path / "rc-read"
    read.unlink(missing_ok=True)
    mark = f'echo rc-read > "{read}"\n'
    rc.write_text(mark + shellinit.snippet(shell, str(fake), start=False, enter=True))
    full = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(rt.parent),
        "ZDOTDIR": str(tmp_path),
        "ENV": str(rc),
        **env,
    }
    master, slave = pty.openpty()
    os.write(master, b"exit\n")  # what a shell that stays outside reads and does
    try:
        subprocess.run(
            argv or SHELL_ARGV[shell],
            cwd=tmp_path,
            env=full,
            timeout=30,
            stdin=slave,
            capture_output=True,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert read.exists(), f"{shell} did not read {rc}"
    return record.read_text() if record.exists() else ""


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_enter_runs_the_shell_again_in_the_namespace_once(shell: str, tmp_path: Path) -> None:
    """docker-up running: the interactive shell becomes `docker-up run --fallback -- SHELL`;
    a shell that run started (DOCKER_UP_RUN set) stays; not running: nothing is run."""
    argv = entering(shell, tmp_path, running=True).splitlines()
    assert argv[:3] == ["run", "--fallback", "--"], argv
    assert Path(argv[3]).name in (shell, "dash", "sh"), argv
    assert entering(shell, tmp_path, running=True, DOCKER_UP_RUN="user") == ""
    assert entering(shell, tmp_path, running=True, DOCKER_UP_RUN="outside") == ""
    assert entering(shell, tmp_path, running=False) == ""


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_a_shell_that_runs_a_command_stays(shell: str, tmp_path: Path) -> None:
    """`bash -i -c env` (how IDEs read the user's environment) must run its command."""
    assert entering(shell, tmp_path, running=True, argv=[shell, "-i", "-c", "true"]) == ""


def test_a_login_shell_enters_as_a_login_shell(tmp_path: Path) -> None:
    (tmp_path / ".bash_profile").write_text(". ~/.bashrc\n")  # as Debian's ~/.profile does
    argv = entering("bash", tmp_path, running=True, argv=["bash", "-i", "-l"]).splitlines()
    assert argv[-1] == "-l", argv


def test_enter_is_only_for_interactive_shells_on_a_terminal(tmp_path: Path) -> None:
    entering("bash", tmp_path, running=True)  # writes the rc file and a live pid
    (tmp_path / "argv").unlink()
    script = (tmp_path / ".bashrc").read_text()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    subprocess.run(
        ["bash", "-i"], env=env, check=True, timeout=30, input=b"exit\n", capture_output=True
    )
    assert not (tmp_path / "argv").exists()


def test_enter_costs_a_stopped_docker_up_no_process(tmp_path: Path) -> None:
    """Not running: the --enter lines add no fork and no exec to the shell's start (bash:
    built-ins only), counted with strace."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    entering("bash", tmp_path, running=False)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    master, slave = pty.openpty()
    os.write(master, b"exit\n")
    try:
        r = subprocess.run(
            ["strace", "-f", "-e", "trace=execve,clone,clone3,fork,vfork", "bash", "-i"],
            env=env,
            capture_output=True,
            text=True,
            stdin=slave,
            timeout=30,
        )
    finally:
        os.close(slave)
        os.close(master)
    calls = [line for line in r.stderr.splitlines() if re.match(r"(\[pid +\d+\] )?\w+\(", line)]
    assert len(calls) == 1 and "execve" in calls[0], calls  # bash's own exec only


def test_autostart_status_is_typed_and_says_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One RcState per shell (its file a Path), the JSON and the text as they always were."""
    from dockerup.cli.render import emit
    from dockerup.host import facts as host
    from dockerup.results import RcState, envelope
    from dockerup.verbs import shell

    from .given import facts

    monkeypatch.setattr(host, "probe", lambda: facts(home=str(tmp_path), env={}))
    (tmp_path / ".bashrc").write_text("set -o vi\n" + shellinit.block("true\n", False))
    state = shell.autostart_status()
    assert state.shells[:2] == [
        RcState("bash", tmp_path / ".bashrc", True),
        RcState("zsh", tmp_path / ".zshrc", False),
    ]
    fish = str(tmp_path / ".config/fish/config.fish")
    assert envelope(state)["shells"][2] == {"shell": "fish", "file": fish, "installed": False}
    assert emit(state) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"bash  installed  {tmp_path}/.bashrc"
