"""A process' end in words, for the messages that say why something stopped (stdlib only,
cheap to import: the CLI's commands and the keeper's restarts both use it)."""

from __future__ import annotations

import os
import signal

# Signals that stop docker-up (a start from its first line), its keeper and the lazy holder
# in order.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
