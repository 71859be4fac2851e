"""A detached start's front reads its background's pipe a line at a time (keeper/background.py,
Lines). A stop signal handled just as a read returns must not lose the line that read took:
losing who the background is, the front could not stop it (ci21, under load)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from dockerup.keeper.background import Lines
from dockerup.linux.exits import STOP_SIGNALS
from dockerup.namespace.early import Interrupted, stop_on_signals


@pytest.fixture
def front() -> Iterator[None]:
    """The front's state while it reads: the start's handler, the stop signals blocked."""
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    stop_on_signals()
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def test_a_stop_signal_as_a_read_returns_keeps_the_line(
    front: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, w = os.pipe()
    os.write(w, b'{"pid": 4242}\n')
    read = os.read

    def read_then_stopped(fd: int, n: int) -> bytes:
        data = read(fd, n)
        # The stop, as the read returns. To this thread: the front has no other, but
        # pytest-xdist's worker does, and a process-directed signal would go to one of those.
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        return data

    lines: list[str] = []
    try:
        report = Lines(r)
        with pytest.raises(Interrupted), monkeypatch.context() as m:
            m.setattr(os, "read", read_then_stopped)
            lines.append(report.line())
            lines.append(report.line())
    finally:
        os.close(r)
        os.close(w)
    assert lines == ['{"pid": 4242}\n']


def test_lines_come_whole_and_the_end_is_empty() -> None:
    r, w = os.pipe()
    os.write(w, b"one\ntw")
    os.write(w, b"o\nlast")
    os.close(w)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    try:
        report = Lines(r)
        assert [report.line() for _ in range(4)] == ["one\n", "two\n", "last", ""]
    finally:
        os.close(r)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
