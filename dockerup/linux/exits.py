"""A process' end in words, for the messages that say why something stopped, and the signal
dispositions a process hands on when it becomes another program (stdlib only, cheap to
import: the CLI's commands and the keeper's restarts both use it)."""

from __future__ import annotations

import os
import signal

# Signals that stop docker-up (a start from its first line), its keeper and the lazy holder
# in order.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# What Python ignores at its start-up, for itself, not for what it runs: subprocess sets
# them back to default in each child (restore_signals).
PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)


def restore_signals() -> None:
    """Before an exec into the user's program: an ignored signal stays ignored across
    exec, so without this `docker-up run -- sh -c 'yes | head -1'` had yes fail with "Broken
    pipe" instead of ending quietly by SIGPIPE, and a shell there could not even trap the
    two (one ignored at entry cannot be trapped)."""
    for s in PYTHON_IGNORES:
        signal.signal(s, signal.SIG_DFL)


def describe_exit(code: int) -> str:
    """A returncode (negative: the signal that killed it) as words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def describe_status(status: int) -> str:
    """A wait status (os.waitpid) as words."""
    return describe_exit(os.waitstatus_to_exitcode(status))
