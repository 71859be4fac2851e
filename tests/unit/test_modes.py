from __future__ import annotations

import pytest

from dockerup.errors import DockerUpError
from dockerup.settings.modes import Mode, resolve_mode


def test_auto_modes() -> None:
    assert resolve_mode(1000, True, False, "auto")[0] is Mode.rootless
    mode, why = resolve_mode(0, False, False, None)
    assert mode is Mode.userns_root and "without CAP_NET_ADMIN" in why
    assert resolve_mode(0, True, True, "auto")[0] is Mode.privileged
    assert resolve_mode(0, True, False, "auto")[0] is Mode.userns_root


@pytest.mark.parametrize(
    ("euid", "initial", "net_admin", "requested", "message"),
    [
        (1000, True, False, "privileged", "needs uid 0"),
        (0, False, False, "privileged", "needs real root"),
        (0, True, True, "rootless", "needs an unprivileged user"),
        (0, True, True, "bogus", "unknown mode"),
    ],
)
def test_impossible_modes_are_refused(
    euid: int, initial: bool, net_admin: bool, requested: str, message: str
) -> None:
    with pytest.raises(DockerUpError, match=message):
        resolve_mode(euid, initial, net_admin, requested)


def test_mode_properties() -> None:
    assert Mode.rootless.needs_userns() and not Mode.userns_root.needs_userns()
    assert Mode.userns_root.dockerd_rootless() and not Mode.privileged.dockerd_rootless()
