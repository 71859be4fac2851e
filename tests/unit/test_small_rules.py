"""Small pure rules that had no test: the CLI's default verb, entering the namespaces, the
keeper's give-up rule, and how the port proxy reads the keeper's messages."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest

from dockerup.cli.argv import default_to_up
from dockerup.cli.entry import is_start
from dockerup.ports.proxy import FdStream
from dockerup.verbs.running import enter_argv


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["up"]),
        (["-d"], ["up", "-d"]),
        (["--mtu", "1500"], ["up", "--mtu", "1500"]),
        (["status"], ["status"]),
        (["--help"], ["--help"]),  # the top-level help, not up's
        (["--version"], ["--version"]),
        (["--show-completion", "bash"], ["--show-completion", "bash"]),
        (["--install-completion=zsh"], ["--install-completion=zsh"]),
    ],
)
def test_docker_up_alone_means_up(args: list[str], expected: list[str]) -> None:
    assert default_to_up(args) == expected


@pytest.mark.parametrize(
    ("args", "start"),
    [
        ([], True),
        (["-d"], True),
        (["--mtu", "1500"], True),
        (["up", "--lazy"], True),
        (["--debug", "up"], True),
        (["--debug"], True),
        (["status"], False),
        (["stop"], False),
        (["run", "up"], False),
        (["--help"], False),
        (["--version"], False),
    ],
)
def test_a_start_is_told_before_any_parser(args: list[str], start: bool) -> None:
    """Its stop-signal handler comes first thing (issue 33): whatever Typer would run as up."""
    assert is_start(args) is start
    assert (default_to_up([a for a in args if a != "--debug"])[:1] == ["up"]) is start


def test_dash_h_is_the_help_everywhere() -> None:
    """`-h` used to reach Typer as an unknown option: it is --help, at the top and for a
    subcommand (click hands help_option_names down)."""
    from typer.testing import CliRunner

    from dockerup.cli.main import app

    runner = CliRunner()
    for where in ([], ["up"], ["config", "show"], ["autostart", "enable"]):
        short = runner.invoke(app, [*where, "-h"], prog_name="docker-up")
        assert short.exit_code == 0, short.output
        assert short.output == runner.invoke(app, [*where, "--help"], prog_name="docker-up").output
        assert f"Usage: docker-up {' '.join(where)}".rstrip() in short.output


def test_enter_argv_joins_the_user_namespace_only_where_docker_up_made_one() -> None:
    from dataclasses import replace

    from .given import RUNNING

    rootless = replace(RUNNING, mode="rootless", dockerd_pid=42, net="slirp4netns")
    assert enter_argv(rootless, ["ip", "a"]) == [
        "nsenter",
        "--target=42",
        "--user",
        "--mount",
        "--net",
        "--",
        "ip",
        "a",
    ]
    assert enter_argv(replace(rootless, mode="userns-root"), ["sh"]) == [
        "nsenter",
        "--target=42",
        "--mount",
        "--net",
        "--",
        "sh",
    ]
    # --host-network: dockerd shares the caller's network namespace; nothing to enter there.
    host = replace(RUNNING, mode="privileged", dockerd_pid=7, net="host")
    assert enter_argv(host, ["true"]) == ["nsenter", "--target=7", "--mount", "--", "true"]


def test_the_keeper_gives_up_after_a_burst_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockerup.keeper import resident as keeper

    k: Any = keeper.Keeper.__new__(keeper.Keeper)  # the rule only: no processes
    k.failures = []
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    for _ in range(keeper.BURST - 1):
        k.note_failure()
        now[0] += 1
    now[0] += keeper.WINDOW  # the earlier failures are out of the window: no burst
    for _ in range(keeper.BURST - 1):
        k.note_failure()
    with pytest.raises(keeper.GiveUp):
        k.note_failure()  # the BURST-th within WINDOW seconds


def test_fd_stream_reads_a_reply_and_the_fds_that_come_with_it() -> None:
    """The keeper's reply line may arrive in one read with a marker byte and its fd: a plain
    recv would drop the fd."""
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        socket.send_fds(a, [b'{"ok": true}\nc'], [r])
        socket.send_fds(a, [b"c"], [w])
        stream = FdStream(b)
        assert stream.readline() == b'{"ok": true}'
        first, second = stream.next_fd(), stream.next_fd()
        assert first is not None and second is not None
        os.write(second, b"x")
        assert os.read(first, 1) == b"x"  # the same pipe, end to end
        for fd in (first, second):
            os.close(fd)
        a.close()
        assert stream.next_fd() is None  # the keeper went away
    finally:
        for fd in (r, w):
            os.close(fd)
        b.close()
