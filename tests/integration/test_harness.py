"""The harness's own promise: a test's cleanup, which runs as root, never kills another test's
processes (docs/reliability.md, "The flood probe's container SIGKILLed (137)").

The kernel gives a namespace that has ended its inode number back to the next new namespace
on the machine (the lowest free number: within a few new namespaces here). A cleanup that
recognised a stack's processes by the name it read once ("net:[4026532712]") SIGKILLed,
after that stack's stop, whatever had meanwhile got that number: another worker's container
among them, which then exited 137.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from .harness import Namespace, wait_for

# Enough new namespaces for the kernel to hand out a freed number again (it did within 1-5
# of them in most tries here), and few enough to take a second.
NEW = 60


def in_new_netns() -> subprocess.Popen[bytes]:
    """A process in a network namespace of its own, once it is there."""
    p = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    here = os.stat("/proc/self/ns/net").st_ino
    wait_for(lambda: os.stat(f"/proc/{p.pid}/ns/net").st_ino != here, 10, "the new namespace")
    return p


@pytest.fixture
def others() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Other tests' namespaces, made after a stack's end; ended by PID afterwards."""
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for p in made:
        p.kill()
        p.wait()


def test_a_stopped_stacks_namespace_never_names_another_tests_processes(
    others: list[subprocess.Popen[bytes]],
) -> None:
    """A stack's network namespace, held by the harness, then the stack ends; new
    namespaces are made (other workers' containers): none of them is its namespace, so the
    cleanup that follows (kill_members) has nobody to kill. Fails if Namespace stops
    holding the namespace open: its number comes back to one of the new ones."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a new network namespace)")
    stack = in_new_netns()
    with Namespace(stack.pid, "net") as ns:
        stack.kill()
        stack.wait()  # the stack's stop: nothing of it runs any more
        for _ in range(NEW):
            others.append(in_new_netns())
        named = [p.pid for p in others if ns.has(p.pid)]
        assert not named, f"the ended stack's namespace names new processes {named}"
        assert not set(ns.members()) & {p.pid for p in others}
