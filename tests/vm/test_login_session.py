"""From a plain login session: `runuser -l` opens a PAM session that pam_systemd registers
with logind (session-cN.scope, XDG_RUNTIME_DIR, the user's bus); `docker-up --detach` there,
then the core checks, then `docker-up stop` leaves nothing of the user's running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stack import CoreChecks, Stack, stack_fixture, start_in_login_session, stop_leaves_nothing


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_fixture(start_in_login_session)


class TestLoginSession(CoreChecks):
    pass


def test_stop_leaves_nothing(stack: Stack) -> None:
    stop_leaves_nothing(stack)
