"""The one wait on fds that the keeper, the lazy holder and the executor use."""

from __future__ import annotations

import os
import resource
import select

import pytest

from dockerup.linux.fdwait import readable


def test_an_fd_above_1023_is_watched() -> None:
    """select() raises ValueError for fd numbers of 1024 and up; the keeper, serving many
    published-port connections, gets there and must not die of it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1600:
        pytest.skip("the hard fd limit is below 1600")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1600), hard))
    r, w = os.pipe()
    high = os.dup2(r, 1500)
    try:
        with pytest.raises(ValueError):
            select.select([high], [], [], 0)  # what the keeper used to do
        assert readable([high], 0) == set()
        os.write(w, b"x")
        assert readable([high, r], 0) == {high, r}
    finally:
        for fd in (high, r, w):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_hang_up_counts_as_readable_and_timeout_returns_empty() -> None:
    r, w = os.pipe()
    try:
        assert readable([r], 0.01) == set()
        os.close(w)
        assert readable([r], None) == {r}
    finally:
        os.close(r)
