"""A directory docker-up needs that is another id's: the error names the nearest directory
whose owner can be seen, and the way out."""

from __future__ import annotations

import os
from pathlib import Path

from dockerup.keeper.supervise import not_the_users


def test_names_the_nearest_directory_it_can_look_at(tmp_path: Path) -> None:
    closed = tmp_path / "docker-up"
    closed.mkdir()
    os.chmod(closed, 0o700)
    wanted = closed / "copyup"
    err = not_the_users(wanted, PermissionError(13, "Permission denied", str(wanted)))
    me = os.getuid()
    assert err.message == (
        f"cannot create or change {wanted}: Permission denied; {closed} belongs to uid {me}"
        f" (mode 0700), docker-up runs as uid {me}"
    )
    assert err.hint is not None and "a volume of its own" in err.hint


def test_a_directory_that_exists_is_named_itself(tmp_path: Path) -> None:
    # chmod's EPERM: the directory is there, and not the user's.
    os.chmod(tmp_path, 0o755)
    err = not_the_users(tmp_path, PermissionError(1, "Operation not permitted", str(tmp_path)))
    assert f"; {tmp_path} belongs to uid {os.getuid()} (mode 0755)" in err.message
