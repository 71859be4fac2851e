"""Files docker-up reads and writes itself, stdlib only: one copy of each way.

A small file read whole, or "" when it cannot be read (/proc and /sys files, which vanish
with their process or are not there on every kernel); and a file replaced in one step.
"""

from __future__ import annotations

import contextlib
import os


def read_text(path: str | os.PathLike[str]) -> str:
    """A small file (/proc, /sys, a config), or "" when it cannot be read. Bytes that are
    not UTF-8 (a command line in /proc may hold any) are replaced, never an error."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def atomic_write(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> None:
    """Replace a file in one step: readers see the old content or the new, never half.
    The temporary name is docker-up's own, beside the file (same filesystem)."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.docker-up.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
