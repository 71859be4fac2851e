"""The network helper's one launcher (namespace/netstart.py), with a stand-in helper: the
first start and every restart get the same command line, report readiness the same way,
and the helper ends when its exit pipe closes (as when docker-up dies)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockerup.namespace.netstart import fill, start_net, wait_ready

# What slirp4netns does with its fds: write to the ready fd once wired, exit at EOF on the
# exit fd. The target is echoed so the test sees what it was given. (bash: dash redirects
# single-digit fds only.)
HELPER = [
    "/bin/bash",
    "-c",
    "echo target={target}; echo up >&{ready_fd}; read x <&{exit_fd}; echo gone",
]
FIFO_HELPER = [
    "/bin/bash",
    "-c",
    "echo target={target}; echo up > {ready_fd}; read x <&{exit_fd}; echo gone",
]


def test_fill_names_each_placeholder() -> None:
    assert fill(["x", "--pid={target}", "{ready_fd}", "-e", "{exit_fd}"], 42, "7", 8) == [
        "x",
        "--pid=42",
        "7",
        "-e",
        "8",
    ]


@pytest.mark.parametrize(("template", "fifo"), [(HELPER, False), (FIFO_HELPER, True)])
def test_the_helper_reports_ready_and_ends_with_its_exit_pipe(
    tmp_path: Path, template: list[str], fifo: bool
) -> None:
    log = tmp_path / "net.log"
    net = start_net(template, 4242, str(tmp_path / "ready") if fifo else "", str(log))
    pidfd = os.pidfd_open(net.p.pid)
    try:
        assert wait_ready(net.ready_r, pidfd, 10) == "ready"
        os.close(net.exit_w)  # docker-up stops it, or dies
        assert net.p.wait(timeout=10) == 0
    finally:
        os.close(pidfd)
        os.close(net.ready_r)
        if net.p.poll() is None:
            net.p.kill()
            net.p.wait()
    # The helper got its target and its output went to the log, whichever ready channel.
    assert log.read_text().splitlines() == ["target=4242", "gone"]


def test_a_helper_that_cannot_start_leaves_no_fd_open(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        start_net([str(tmp_path / "missing")], 1, "", str(tmp_path / "log"))
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_helper_that_dies_before_ready_is_seen(tmp_path: Path) -> None:
    net = start_net(["/bin/sh", "-c", "exit 3"], 1, "", str(tmp_path / "log"))
    pidfd = os.pidfd_open(net.p.pid)
    try:
        assert wait_ready(net.ready_r, pidfd, 10) == "died"
    finally:
        for fd in (pidfd, net.ready_r, net.exit_w):
            os.close(fd)
        net.p.wait()
