from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockerup import shellinit


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_snippets(shell: str) -> None:
    text = shellinit.snippet(shell, "/opt/du/bin/docker-up")
    assert "DOCKER_HOST" in text and "/opt/du/bin/docker-up --detach" in text
    assert "docker-up --detach" not in shellinit.snippet(shell, "x", start=False)


@given(st.text(max_size=300))
def test_enable_then_disable_is_byte_identical(original: str) -> None:
    body = shellinit.snippet("bash", "/x/docker-up")
    once = shellinit.with_block(original, body)
    twice = shellinit.with_block(once, body)
    assert once == twice  # idempotent: one block
    assert once.count(shellinit.END) == original.count(shellinit.END) + 1 or shellinit.has_block(
        original
    )
    if not shellinit.has_block(original):
        assert shellinit.without_block(twice) == original


def test_disable_removes_only_the_block() -> None:
    original = "alias ll='ls -l'\n# mine\n"
    text = shellinit.with_block(original, "export X=1\n") + "echo after\n"
    assert shellinit.without_block(text) == original + "echo after\n"
    no_newline = "export A=1"
    assert shellinit.without_block(shellinit.with_block(no_newline, "b\n")) == no_newline
