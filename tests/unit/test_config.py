from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockerup.errors import DockerUpError
from dockerup.settings.config import SETTINGS, Config, Storage, resolve


def test_defaults() -> None:
    config, sources = resolve({}, {}, None)
    assert config == Config()
    assert set(sources.values()) == {"default"}


def test_precedence_cli_over_env_over_file() -> None:
    text = 'mtu = 1500\nstorage = "vfs"\nallow-host-loopback = true\nstart-timeout = 5\n'
    env = {"DOCKER_UP_MTU": "9000", "DOCKER_UP_PORT_FORWARDER": "slirp"}
    config, sources = resolve({"mtu": 4000, "storage": None}, env, text, "/c.toml")
    assert config.mtu == 4000 and sources["mtu"] == "cli"
    assert config.port_forwarder == "slirp" and sources["port-forwarder"] == "env"
    assert config.storage is Storage.vfs and sources["storage"] == "file"
    assert config.allow_host_loopback is True and config.start_timeout == 5.0
    assert sources["autostart"] == "default"


def test_env_parsing() -> None:
    env = {
        "DOCKER_UP_ALLOW_HOST_LOOPBACK": "yes",
        "DOCKER_UP_DOCKERD_ARGS": "--debug --dns 1.1.1.1",
    }
    config, _ = resolve({}, env, None)
    assert config.allow_host_loopback is True
    assert config.dockerd_args == ("--debug", "--dns", "1.1.1.1")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("mtu = 70000", ["/c.toml: mtu: must be between 1280 and 65520"]),
        ("mtu = 1000", ["mtu: must be between 1280"]),
        ('mtu = "big"', ["mtu: must be an integer, not str"]),
        ("mtu = true", ["mtu: must be an integer, not bool"]),
        ("colour = 1", ["colour: unknown setting", "allowed: mtu, net"]),
        ('storage = "zfs"', ["storage: must be one of: auto, overlay2"]),
        ('data-root = "rel/dir"', ["data-root: must be an absolute path"]),
        (
            'dockerd-args = ["-H", "tcp://0.0.0.0:2375"]',
            ["dockerd flag -H is not allowed", "use --tcp with --tls-dir"],
        ),
        ('dockerd-args = ["--data-root=/x"]', ["use the data-root setting"]),
        ('dockerd-args = "--debug"', ["must be a list of strings"]),
        ("mtu = ", ["not valid TOML"]),
    ],
)
def test_bad_file_input(text: str, words: list[str]) -> None:
    with pytest.raises(DockerUpError) as e:
        resolve({}, {}, text, "/c.toml")
    full = e.value.message + " " + (e.value.hint or "")
    for w in words:
        assert w in full


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DOCKER_UP_MTU": "x"}, "environment: DOCKER_UP_MTU: must be an integer"),
        ({"DOCKER_UP_AUTOSTART": "maybe"}, "DOCKER_UP_AUTOSTART: must be true or false"),
        ({"DOCKER_UP_MTU": "100"}, "environment: mtu: must be between"),
    ],
)
def test_bad_env_input(env: dict[str, str], words: str) -> None:
    with pytest.raises(DockerUpError, match=words):
        resolve({}, env, None)


def test_bad_cli_value_names_the_command_line() -> None:
    with pytest.raises(DockerUpError, match="command line: port-forwarder"):
        resolve({"port_forwarder": "carrier-pigeon"}, {}, None)


def test_a_cli_key_that_is_no_config_field_is_refused_by_name() -> None:
    """The CLI layer's mistake (a typo, a setting's file spelling, a field removed from
    Config) fails at once instead of leaving the setting at its default unnoticed."""
    with pytest.raises(ValueError, match=r"not Config fields: colour, tcp_wmem$"):
        resolve({"mtu": 1500, "tcp_wmem": 1, "colour": None}, {}, None)
    with pytest.raises(ValueError, match="allow-host-loopback"):
        resolve({"allow-host-loopback": True}, {}, None)


def test_config_fields_without_a_setting_come_from_the_command_line_only() -> None:
    cli = {"host_network": True, "tcp": "127.0.0.1:2376", "tls_dir": "/t", "listen_fd": None}
    config, sources = resolve(cli, {}, None)
    assert (config.host_network, config.tcp, config.tls_dir) == (True, "127.0.0.1:2376", "/t")
    assert config.listen_fd is None and "tcp" not in sources
    assert resolve({"listen_fd": 3}, {}, None)[0].listen_fd == 3


def test_allowed_dockerd_args() -> None:
    config, _ = resolve(
        {"dockerd_args": ["--debug", "--dns=1.1.1.1", "--log-level", "warn"]}, {}, None
    )
    assert config.dockerd_args == ("--debug", "--dns=1.1.1.1", "--log-level", "warn")


@pytest.mark.parametrize("flag", ["--add-runtime=x=/bin/evil", "--default-runtime=runc"])
def test_runtime_flags_are_refused(flag: str) -> None:
    """docker-up's runtime wrapper gives containers its defaults and --net-accel's seccomp
    listener: a runtime of the user's own would quietly drop both."""
    from dockerup.settings.config import check_dockerd_args

    why = check_dockerd_args((flag,))
    assert why is not None and "docker-up sets dockerd's runtime" in why


toml_values = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.text(max_size=10), max_size=3),
)
keys = st.one_of(st.sampled_from([s.key for s in SETTINGS]), st.text(min_size=1, max_size=12))


def _toml(value: object) -> str:
    import json

    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, toml_values, max_size=5))
def test_any_file_gives_a_config_or_a_clean_error(doc: dict[str, object]) -> None:
    lines = [f"{json_key(k)} = {_toml(v)}" for k, v in doc.items()]
    try:
        config, _ = resolve({}, {}, "\n".join(lines), "/c.toml")
    except DockerUpError as e:
        assert e.message.startswith("/c.toml: ")
        return
    assert isinstance(config, Config) and 1280 <= config.mtu <= 65520


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_clean_error(text: str) -> None:
    with contextlib.suppress(DockerUpError):
        resolve({}, {}, text, "/c.toml")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([s.env for s in SETTINGS]), st.text(max_size=20)))
def test_any_environment_gives_a_config_or_a_clean_error(env: dict[str, str]) -> None:
    try:
        resolve({}, env, None)
    except DockerUpError as e:
        assert e.message.startswith("environment: ")


def json_key(k: str) -> str:
    import json

    return json.dumps(k)
