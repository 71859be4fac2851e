"""The pasta driver, planned from the help text of Debian 12's pasta (passt 2023-03)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.net import pasta
from dockerup.net.pasta import configure, parse_features

DATA = Path(__file__).parent / "data"
HELP = (DATA / "pasta-2023-03-09.help").read_text()
VERSION = (DATA / "pasta-2023-03-09.version").read_text()


def test_features_of_debian_bookworm_pasta() -> None:
    f = parse_features(HELP, VERSION)
    assert f.lacks() == []
    assert f.dns_forward and f.ipv4_only
    # `pasta --version` says "unknown version": the package's version names it instead.
    assert f.version == "passt 0.0~git20230309.7c7625d-1"


def test_version_when_nothing_names_it() -> None:
    assert parse_features(HELP, "pasta unknown version\n").version == "of unknown version"
    assert parse_features(HELP, "pasta 2024_05_10.7288448\n").version == "2024_05_10.7288448"


def test_argv_wires_ready_fd_death_signal_and_fixed_addresses() -> None:
    p = configure(
        "/usr/bin/pasta",
        parse_features(HELP, VERSION),
        65520,
        allow_host_loopback=False,
    )
    argv = p.argv(4242, "/run/u/docker-up/net-ready", 8)
    # pasta itself: its parent-death signal comes from the launcher (test_parent_death).
    assert argv[0] == "/usr/bin/pasta"
    # Its PID file is our ready channel: a named pipe, since today's pasta closes the fds
    # it inherits (Debian 13's: "Couldn't open PID file /proc/self/fd/10").
    assert p.ready_fifo and "--pid=/run/u/docker-up/net-ready" in argv
    assert "--no-map-gw" in argv  # the gateway must not lead to the workspace's loopback
    for opt in ("--tcp-ports=none", "--udp-ports=none", "--tcp-ns=none", "--udp-ns=none"):
        assert opt in argv
    for opt in ("--ns-ifname=tap0", "--address=10.0.2.100", "--gateway=10.0.2.2", "--mtu=65520"):
        assert opt in argv
    assert argv[-1] == "4242"
    assert p.options_used == ("dns-forward", "no-map-gw")


def test_host_loopback_allowed_maps_the_gateway() -> None:
    p = configure("/p", parse_features(HELP, VERSION), 1500, True)
    assert "--no-map-gw" not in p.argv(1, 3, 4)


def test_a_pasta_without_needed_options_is_refused_by_name_and_version() -> None:
    old = "\n".join(ln for ln in HELP.splitlines() if "--no-map-gw" not in ln and "--pid" not in ln)
    with pytest.raises(DockerUpError) as e:
        configure("/p", parse_features(old, VERSION), 1500, False)
    assert "pasta (passt 0.0~git20230309.7c7625d-1) lacks --pid, --no-map-gw" in e.value.message
    assert "slirp4netns" in (e.value.hint or "")


def test_mtu_above_pastas_limit_is_refused() -> None:
    with pytest.raises(DockerUpError, match="65520"):
        configure("/p", parse_features(HELP, VERSION), pasta.MAX_MTU + 1, False)


def test_root_modes_are_refused_with_the_reason() -> None:
    with pytest.raises(DockerUpError) as e:
        configure("/p", parse_features(HELP, VERSION), 1500, False, makes_userns=False)
    assert "as root" in e.value.message and "--net slirp4netns" in (e.value.hint or "")


def test_a_ready_fifo_reports_the_first_write_and_a_writer_without_one() -> None:
    """The named pipe as pasta uses it: opened by name, written once, closed."""
    import os
    import tempfile

    from dockerup.namespace.netstart import open_ready_fifo, wait_ready

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net-ready")
        for said, verdict in ((b"4242\n", "ready"), (b"", "died")):
            r = open_ready_fifo(path)  # a new pipe each time, the old one replaced
            pidfd = os.pidfd_open(os.getpid())  # never readable while we run
            try:
                w = os.open(path, os.O_WRONLY)
                os.write(w, said)
                os.close(w)
                assert wait_ready(r, pidfd, 5) == verdict
            finally:
                os.close(r)
                os.close(pidfd)
