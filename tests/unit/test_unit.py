"""docker-up's systemd --user unit: its text, and that disabling leaves the user's files
byte-identical to before enabling (the user manager stood in for: no systemd here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.settings import context
from dockerup.verbs import unit

WANTS_LINK = Path("default.target.wants") / unit.UNIT


def test_the_unit_delegates_and_stops_the_keeper_first() -> None:
    text = unit.render_unit(
        "/home/a b/venv/bin/docker-up", "/usr/bin:/bin", [Path("/h/.config/systemd")]
    )
    assert text == (
        "# Written by `docker-up autostart enable --systemd`; `docker-up autostart disable "
        "--systemd` removes it.\n"
        "# docker-up created: /h/.config/systemd\n"
        "[Unit]\n"
        "Description=docker-up: a rootless Docker daemon of your own\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        'ExecStart="/home/a b/venv/bin/docker-up" up\n'
        "Environment=PATH=/usr/bin:/bin\n"
        "Delegate=yes\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=60\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def test_systemd_quoting() -> None:
    assert unit.quote("/usr/bin/docker-up") == "/usr/bin/docker-up"
    assert unit.quote('/a "b"/$x%i') == '"/a \\"b\\"/$$x%%i"'


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every path under root: its kind, mode and content (a link: its target)."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", st.st_mode, os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", st.st_mode, b"")
            else:
                out[str(p)] = ("file", st.st_mode, p.read_bytes())
    return out


class FakeManager:
    """What systemctl --user enable --now / disable --now do to the user's files, and what
    the start does (it writes the docker CLI context)."""

    def __init__(self, home: Path, fail: str = "") -> None:
        self.home, self.fail, self.calls = home, fail, []  # type: ignore[var-annotated]

    def __call__(self, *args: str) -> str:
        self.calls.append(args)
        if args[0] == self.fail:
            raise DockerUpError(f"systemctl --user {args[0]} failed")
        d = unit.unit_dir({}, str(self.home))
        if args[:2] == ("enable", "--now"):
            (d / WANTS_LINK).parent.mkdir(exist_ok=True)
            (d / WANTS_LINK).symlink_to(d / unit.UNIT)
            meta = context.meta_path(context.docker_config_dir({}, str(self.home)))
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(context.meta_json("unix:///run/user/1/docker-up/docker.sock"))
        elif args[:2] == ("disable", "--now"):
            (d / WANTS_LINK).unlink()
        return ""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    for var in ("XDG_CONFIG_HOME", "DOCKER_CONFIG", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setattr(unit, "systemctl_state", lambda _verb: "active")
    return h


@pytest.mark.parametrize(
    "before",
    [
        [],  # a new account: nothing under ~/.config, no ~/.docker
        [".config/systemd/user/other.service", ".docker/config.json"],
        [".config/systemd/user/default.target.wants/other.service"],
    ],
)
def test_disable_leaves_the_users_files_byte_identical(
    home: Path, monkeypatch: pytest.MonkeyPatch, before: list[str]
) -> None:
    for rel in before:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(f"the user's own {rel}\n")
    manager = FakeManager(home)
    monkeypatch.setattr(unit, "systemctl", manager)
    original = snapshot(home)
    state = unit.enable()
    assert (state.installed, state.state) == (True, "active")
    path = home / ".config/systemd/user/docker-up.service"
    assert "Delegate=yes" in path.read_text()
    assert manager.calls == [("daemon-reload",), ("enable", "--now", unit.UNIT)]
    unit.disable()
    assert snapshot(home) == original


def test_a_failed_enable_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unit, "systemctl", FakeManager(home, fail="enable"))
    with pytest.raises(DockerUpError, match="enable"):
        unit.enable()
    assert snapshot(home) == {}


def test_a_unit_of_the_same_name_not_docker_ups_is_never_touched(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = home / ".config/systemd/user/docker-up.service"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("[Service]\nExecStart=/their/own\n")
    manager = FakeManager(home)
    monkeypatch.setattr(unit, "systemctl", manager)
    original = snapshot(home)
    with pytest.raises(DockerUpError, match="did not write it"):
        unit.enable()
    with pytest.raises(DockerUpError, match="not docker-up's"):
        unit.disable()
    assert snapshot(home) == original
    assert manager.calls == []


def test_enabling_twice_keeps_the_first_record(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = FakeManager(home)
    monkeypatch.setattr(unit, "systemctl", manager)
    unit.enable()
    (home / ".config/systemd/user" / WANTS_LINK).unlink()  # as a re-enable would redo it
    unit.enable()
    unit.disable()
    assert snapshot(home) == {}
