"""Under the user's systemd manager: `systemd-run --user -p Delegate=yes -- docker-up up`
from a login session (as Docker's rootless unit runs dockerd), then the core checks and the
resource limits a container asks for, seen in its own cgroup, then `docker-up stop` leaves
nothing of the user's running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stack import (
    CoreChecks,
    Stack,
    ok,
    stack_fixture,
    start_under_user_manager,
    stop_leaves_nothing,
)

LIMITS = [
    ("--memory 64m", "memory.max", "67108864"),
    ("--cpus 0.5", "cpu.max", "50000 100000"),
    ("--pids-limit 100", "pids.max", "100"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_fixture(start_under_user_manager)


class TestUserManager(CoreChecks):
    @pytest.mark.parametrize(("option", "file", "want"), LIMITS, ids=[x[1] for x in LIMITS])
    def test_resource_limit_reaches_the_containers_cgroup(
        self, stack: Stack, option: str, file: str, want: str
    ) -> None:
        out = ok(f"docker run --rm {option} bb:test cat /sys/fs/cgroup/{file}")
        assert out.strip() == want


def test_stop_leaves_nothing(stack: Stack) -> None:
    stop_leaves_nothing(stack)
