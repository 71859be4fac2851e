"""docker-up's log files: each start keeps the previous run's, and none grows without bound
(stdlib only: the keeper uses it).

Writers hold the files open with O_APPEND (dockerd's and the helper's stdout and stderr), so
a file over its cap is copied to NAME.1 and truncated in place, not renamed: a renamed file
would go on growing under its writer. Lines written between the copy and the truncation
are lost; that is the price of capping a file someone else writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable


class QuietLog:
    """The first few lines of each kind, then one count a minute: nothing that repeats (a
    container looping on a bad connect(), a flood of connections to a published port) can
    grow a log. The agent, the port manager and the port proxy all log through one."""

    def __init__(
        self, log: Callable[[str], None], first: int = 5, window: float = 60, prefix: str = ""
    ) -> None:
        self.log, self.first, self.window, self.prefix = log, first, window, prefix
        self.seen: dict[str, int] = {}
        self.quiet: dict[str, int] = {}
        self.since = time.monotonic()

    def say(self, kind: str, msg: str) -> None:
        n = self.seen.get(kind, 0) + 1
        self.seen[kind] = n
        if n <= self.first:
            self.log(f"{self.prefix}{msg}")
        else:
            self.quiet[kind] = self.quiet.get(kind, 0) + 1
        self.flush()

    def flush(self) -> None:
        if time.monotonic() - self.since < self.window:
            return
        for kind, n in sorted(self.quiet.items()):
            self.log(f"{self.prefix}{n} more '{kind}' in the last minute")
        self.quiet.clear()
        self.since = time.monotonic()


def previous(path: str) -> str:
    return path + ".1"


def start_fresh(path: str | os.PathLike[str]) -> None:
    """Before a new writer starts: the last run's log becomes NAME.1 (nobody writes it any
    more, so a rename is safe), and NAME starts empty, readable by its owner only."""
    p = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        if os.path.getsize(p) > 0:
            os.replace(p, previous(p))
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


def cap(path: str | os.PathLike[str], max_bytes: int) -> bool:
    """If the file is over max_bytes: its content goes to NAME.1 and it starts again empty.
    True if it was capped."""
    p = os.fspath(path)
    try:
        if os.path.getsize(p) <= max_bytes:
            return False
        shutil.copyfile(p, previous(p))
        os.truncate(p, 0)
    except OSError:
        return False
    return True


def tail(path: str | os.PathLike[str], lines: int = 20) -> str:
    """The last lines of a log, for an error message; empty if it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_line(msg: str) -> str:
    """One line of docker-up.log."""
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n"


def append_log(path: str | os.PathLike[str], msg: str) -> None:
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(log_line(msg))
