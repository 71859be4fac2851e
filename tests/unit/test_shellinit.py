from __future__ import annotations

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
