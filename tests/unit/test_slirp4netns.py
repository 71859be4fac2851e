from __future__ import annotations

from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.net.slirp4netns import configure, parse_features

DATA = Path(__file__).parent / "data"


def test_features_of_debian_bookworm_slirp4netns() -> None:
    """Its --help and --version as they are (1.2's --help does not name its version)."""
    help_text = (DATA / "slirp4netns-1.2.0.help").read_text()
    assert parse_features(help_text).version == "unknown"
    f = parse_features(help_text, (DATA / "slirp4netns-1.2.0.version").read_text())
    assert f.version == "1.2.0"
    assert (f.sandbox, f.seccomp, f.api_socket, f.exit_fd, f.ready_fd) == (True,) * 5
    assert f.netns_type and f.disable_host_loopback
    assert f.max_mtu == 65521


def test_features_of_an_old_slirp4netns() -> None:
    text = (DATA / "slirp4netns-0.2.help").read_text()
    f = parse_features(text)
    assert f.version == "0.2.3"
    assert not (f.sandbox or f.seccomp or f.api_socket or f.disable_host_loopback)
    assert f.ready_fd and f.exit_fd


def test_old_slirp4netns_refused_when_it_cannot_isolate_host_loopback() -> None:
    text = (DATA / "slirp4netns-0.2.help").read_text()
    with pytest.raises(DockerUpError) as e:
        configure("/s", parse_features(text), 65520, False, Path("/api"))
    assert "slirp4netns 0.2.3 lacks --disable-host-loopback" in e.value.message


def test_old_slirp4netns_runs_without_the_options_it_lacks() -> None:
    text = (DATA / "slirp4netns-0.2.help").read_text()
    s = configure("/s", parse_features(text), 1500, True, Path("/api"))
    assert s.argv(1, 3, 4) == [
        "/s",
        "--configure",
        "--mtu=1500",
        "--ready-fd=3",
        "--exit-fd=4",
        "1",
        "tap0",
    ]
    assert s.options_used == ()


def test_mtu_above_the_helpers_limit_is_refused() -> None:
    text = (DATA / "slirp4netns-1.2.0.help").read_text()
    with pytest.raises(DockerUpError, match="65521"):
        configure("/s", parse_features(text), 70000, False, Path("/api"))
