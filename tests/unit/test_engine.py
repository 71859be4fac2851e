"""The engine decisions (engine.py), the plan for each engine, and with_engine's choice of
binaries beside --dockerd."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

import dockerup
from dockerup.errors import DockerUpError
from dockerup.host import facts as host
from dockerup.plan.build import build_plan
from dockerup.plan.engine import Engine, parse_version
from dockerup.settings.config import Config

from .given import (
    CONTAINERD_16,
    CONTAINERD_17,
    CONTAINERD_21,
    DOCKERD_20,
    DOCKERD_26,
    DOCKERD_28,
    facts,
    paths,
)

V6 = {"ipv6_loopback": True, "ipv6_gateways": ("fe80::1",)}
V6_BINS = {"ip": "/usr/sbin/ip"}


def test_versions_are_read_from_what_the_programs_print() -> None:
    assert parse_version(DOCKERD_28) == (28, 5, 2)
    assert parse_version(DOCKERD_20) == (20, 10, 24)
    assert parse_version(CONTAINERD_21) == (2, 1, 9)
    assert parse_version(CONTAINERD_16) == (1, 6, 20)
    assert parse_version("") is None


@pytest.mark.parametrize(
    ("dockerd", "containerd", "api", "experimental", "toml"),
    [
        (DOCKERD_20, CONTAINERD_16, False, True, 2),
        (DOCKERD_26, CONTAINERD_17, False, True, 2),
        (DOCKERD_28, CONTAINERD_21, True, False, 3),
    ],
)
def test_each_engine_gets_what_it_needs(
    dockerd: str, containerd: str, api: bool, experimental: bool, toml: int
) -> None:
    e = Engine.probed(dockerd, containerd)
    assert (e.rootlesskit_api, e.ipv6_needs_experimental) == (api, experimental)
    assert e.containerd_config_version == toml


def test_an_unreadable_version_is_taken_as_a_new_engine() -> None:
    assert Engine.probed("", "").rootlesskit_api


def test_dockerd_28_gets_the_rootlesskit_api_and_its_state_dir() -> None:
    plan = build_plan(
        Config(), facts(dockerd_version=DOCKERD_28, containerd_version=CONTAINERD_21), paths()
    )
    assert plan.dockerd_env["ROOTLESSKIT_STATE_DIR"] == "/tmp/docker-up-1001/rootlesskit"
    assert plan.rlk_info is not None
    assert plan.rlk_info.state_dir == plan.dockerd_env["ROOTLESSKIT_STATE_DIR"]
    assert plan.rlk_info.child_ip == "10.0.2.100" and plan.rlk_info.dns == "10.0.2.3"
    assert plan.rlk_info.port_driver == "docker-up-splice"
    assert "tcp6" in plan.rlk_info.protos and not plan.rlk_info.disallow_loopback_child_ip
    assert plan.rlk_info.version == f"docker-up-{dockerup.__version__}"
    conf = next(f for f in plan.files if f.path.name == "containerd.toml").content
    assert tomllib.loads(conf)["version"] == 3


def test_slirp_forwarding_makes_dockerd_28_bind_the_tap_address_ipv4_only() -> None:
    f = facts(dockerd_version=DOCKERD_28, containerd_version=CONTAINERD_21)
    plan = build_plan(Config(port_forwarder="slirp"), f, paths())
    assert plan.rlk_info is not None and plan.rlk_info.disallow_loopback_child_ip
    assert set(plan.rlk_info.protos) == {"tcp", "tcp4", "udp", "udp4"}


def test_dockerd_before_28_runs_as_before_without_rootlesskit_variables() -> None:
    for version in (DOCKERD_20, DOCKERD_26):
        plan = build_plan(Config(), facts(dockerd_version=version), paths())
        assert not [k for k in plan.dockerd_env if k.startswith("ROOTLESSKIT")]
        assert plan.rlk_info is None


def test_ipv6_turns_on_experimental_only_where_ip6tables_needs_it() -> None:
    bins = {**facts().binaries, **V6_BINS}
    old = build_plan(Config(), facts(binaries=bins, **V6), paths())
    new = build_plan(Config(), facts(binaries=bins, dockerd_version=DOCKERD_28, **V6), paths())
    assert json.loads(old.daemon_json["overlay2"])["experimental"] is True
    doc = json.loads(new.daemon_json["overlay2"])
    assert doc["ip6tables"] is True and "experimental" not in doc


def test_an_engine_older_than_supported_is_refused_with_what_to_do() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(
            Config(), facts(dockerd_version="Docker version 19.03.15, build 99e3ed8"), paths()
        )
    assert "19.3" in str(e.value) and "20.10 or newer" in str(e.value)
    assert e.value.hint is not None and "--dockerd" in e.value.hint


def test_a_missing_dockerd_named_by_the_user_is_refused() -> None:
    f = facts(binaries={**facts().binaries, "dockerd": None})
    with pytest.raises(DockerUpError, match="/nowhere/dockerd is not an executable file"):
        build_plan(Config(dockerd="/nowhere/dockerd"), f, paths())


def fake_engine(d: Path, version: str, names: tuple[str, ...]) -> None:
    d.mkdir(parents=True)
    for name in names:
        p = d / name
        p.write_text(f"#!/bin/sh\necho '{version} {name}'\n")
        p.chmod(0o755)


def test_with_engine_takes_the_engine_programs_from_beside_dockerd(tmp_path: Path) -> None:
    system, engine = tmp_path / "system", tmp_path / "engine"
    fake_engine(
        system, "Docker version 20.10.24", ("dockerd", "containerd", "runc", "docker-proxy")
    )
    fake_engine(engine, "Docker version 28.5.2", ("dockerd", "containerd", "docker-proxy"))
    env = {"PATH": str(system), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    f = host.probe(env)
    assert f.binaries["dockerd"] == str(system / "dockerd")
    chosen = host.with_engine(f, str(engine / "dockerd"))
    assert chosen.binaries["dockerd"] == str(engine / "dockerd")
    assert chosen.binaries["containerd"] == str(engine / "containerd")
    assert chosen.binaries["docker-proxy"] == str(engine / "docker-proxy")
    assert chosen.binaries["runc"] == str(system / "runc")  # none beside it: the PATH's
    assert chosen.search_path.split(":")[0] == str(engine)
    assert chosen.dockerd_version.startswith("Docker version 28.5.2")
    assert host.with_engine(f).dockerd_version.startswith("Docker version 20.10.24")


def test_the_package_version_is_pyprojects() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = tomllib.loads((root / "pyproject.toml").read_text())
    assert dockerup.__version__ == doc["project"]["version"]
    assert os.path.isdir(root / "dockerup")
