"""The network drivers' registry (dockerup/net/kinds.py): each driver's one owner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.host import facts as host
from dockerup.net.kinds import KINDS, NET_DRIVERS, kind_of
from dockerup.plan.build import build_plan
from dockerup.plan.require import missing_programs
from dockerup.settings.config import Config
from dockerup.settings.modes import Mode

from .given import BINS, WITH_PASTA, facts, pasta_facts, paths


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_configures_the_driver_of_its_name(name: str) -> None:
    kind = KINDS[name]
    assert kind.name == name
    config = Config(net=name)
    driver = kind.configure(config, pasta_facts(), WITH_PASTA, paths(), Mode.rootless, False)
    assert driver.name == name
    assert build_plan(config, pasta_facts(), paths()).net_name == name


def test_the_drivers_are_the_kinds_and_the_first_is_the_default() -> None:
    assert NET_DRIVERS == tuple(KINDS) == ("slirp4netns", "pasta")
    assert Config().net == NET_DRIVERS[0]


@pytest.mark.parametrize("name", list(KINDS))
def test_a_kinds_programs_are_needed_with_it_only(name: str) -> None:
    none = {p: None for k in KINDS.values() for p in k.programs}
    f = facts(binaries={**BINS, **none})
    assert missing_programs(f, Mode.rootless, name) == list(KINDS[name].programs)
    assert missing_programs(f, Mode.rootless, None) == []
    for program, package in KINDS[name].programs.items():
        assert host.PACKAGES[program] == package


def test_only_a_driver_with_slirp4netns_api_takes_the_slirp_port_forwarder() -> None:
    offers = [k.name for k in KINDS.values() if k.api_port_forwarder]
    assert offers == ["slirp4netns"]
    build_plan(Config(port_forwarder="slirp"), pasta_facts(), paths())
    with pytest.raises(DockerUpError, match="slirp4netns network driver"):
        build_plan(Config(net="pasta", port_forwarder="slirp"), pasta_facts(), paths())


def test_an_unknown_driver_is_refused_by_name() -> None:
    with pytest.raises(DockerUpError, match="unknown network driver 'vde'") as e:
        kind_of("vde")
    assert "slirp4netns, pasta" in (e.value.hint or "")


def test_a_kind_probes_only_what_it_needs() -> None:
    """slirp4netns' --help is in every probe already; pasta's is not (~10 ms): a host
    without pasta is not probed for it."""
    f = facts()
    assert kind_of("slirp4netns").probe(f) is f
    assert kind_of("pasta").probe(f) is f  # no pasta installed: nothing to run


def test_the_start_path_does_not_import_pasta() -> None:
    """pasta's module loads only when pasta is chosen: the registry names it lazily."""
    code = (
        "import sys, dockerup.verbs.resolve, dockerup.plan.build, dockerup.plan.ipv6; "
        "print('dockerup.net.pasta' in sys.modules)"
    )
    root = Path(host.__file__).parents[2]
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert r.stdout.strip() == "False", r.stderr
