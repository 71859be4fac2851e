"""IPv6 for containers: the facts it is decided on, the decision, and what it plans."""

from __future__ import annotations

import json

import pytest

from dockerup.errors import DockerUpError
from dockerup.host.facts import has_ipv6_loopback
from dockerup.linux.routes import ipv6_default_gateways
from dockerup.namespace.netcheck import ipv6_problems
from dockerup.plan.build import build_plan
from dockerup.plan.ipv6 import resolve_ipv6
from dockerup.settings.config import Config
from dockerup.wire.specs import NetCheck

from .given import BINS, WITH_PASTA, facts, pasta_facts, paths

# /proc/net/ipv6_route of a workspace: a default route via fd79::2 on eth0, its own
# network, and the kernel's unreachable default on lo (a reject route: not a way out).
ROUTE6 = (
    "fd790000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd790000000000000000000000000002 00000400 00000003 00000000 00000003     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)
IF_INET6 = (
    "00000000000000000000000000000001 01 80 10 80       lo\n"
    "fd000000000000000000000000000100 04 40 00 80     tap0\n"
)
IP = {**BINS, "ip": "/usr/sbin/ip"}
V6 = {"binaries": IP, "ipv6_loopback": True, "ipv6_gateways": ("fd79::2",)}


def test_default_gateways_skip_reject_routes_and_loopback() -> None:
    assert ipv6_default_gateways(ROUTE6) == ["fd79::2"]
    assert ipv6_default_gateways(ROUTE6.splitlines(keepends=True)[2]) == []


def test_ipv6_loopback_is_read_from_if_inet6() -> None:
    assert has_ipv6_loopback(IF_INET6)
    assert not has_ipv6_loopback(IF_INET6.splitlines()[1])
    assert not has_ipv6_loopback("")  # no IPv6 in the kernel: the file is missing


def test_auto_is_on_with_an_ipv6_default_route_and_off_without() -> None:
    on, why = resolve_ipv6(Config(), facts(**V6), IP)
    assert on and "IPv6 default route" in why
    off, why = resolve_ipv6(Config(), facts(**{**V6, "ipv6_gateways": ()}), IP)
    assert not off and why == "off: the workspace has no IPv6 default route (--ipv6 turns it on)"
    assert resolve_ipv6(Config(ipv6=False), facts(**V6), IP) == (False, "off (--no-ipv6)")


def test_a_workspace_on_the_namespaces_own_ipv6_network_is_told() -> None:
    from dockerup.host.facts import on_namespace_network

    # This project's machine: eth0 has fd00::2/64.
    assert on_namespace_network("fd000000000000000000000000000002 04 40 00 80     eth0\n")
    assert not on_namespace_network(IF_INET6.splitlines()[0])
    on, why = resolve_ipv6(Config(), facts(**V6, ipv6_overlap=True), IP)
    assert on and "fd00::/64 network is hidden from containers" in why


def test_asked_for_without_a_default_route_it_reaches_the_workspace_only() -> None:
    on, why = resolve_ipv6(Config(ipv6=True), facts(**{**V6, "ipv6_gateways": ()}), IP)
    assert on and "only the workspace's ::1" in why


@pytest.mark.parametrize(
    ("config", "change", "words"),
    [
        (Config(ipv6=True), {"ipv6_loopback": False}, "no ::1 on lo"),
        (Config(ipv6=True), {"binaries": BINS}, "apt-get install iproute2"),
        (Config(ipv6=True, net="pasta"), {"ipv6_gateways": ()}, "--net slirp4netns"),
        (Config(ipv6=True, host_network=True), {}, "drop --host-network"),
        (Config(ipv6=True), {"slirp_help": "--ready-fd --exit-fd"}, "--enable-ipv6"),
    ],
)
def test_asked_for_where_it_cannot_work_is_refused_with_the_fix(
    config: Config, change: dict[str, object], words: str
) -> None:
    f = pasta_facts(**{**V6, "binaries": {**WITH_PASTA, "ip": "/usr/sbin/ip"}, **change})
    with pytest.raises(DockerUpError) as e:
        resolve_ipv6(config, f, {k: v for k, v in f.binaries.items() if v})
    assert words in f"{e.value.message} {e.value.hint}"
    # Auto never refuses: it turns IPv6 off and says why.
    auto = Config(net=config.net, host_network=config.host_network)
    assert resolve_ipv6(auto, f, {k: v for k, v in f.binaries.items() if v})[0] is False


def test_slirp4netns_plan_with_ipv6() -> None:
    plan = build_plan(Config(), facts(**V6), paths())
    assert plan.ipv6 and plan.net is not None
    assert "--enable-ipv6" in plan.net.argv(1, 3, 4)
    child = plan.child
    assert child.ipv6 and child.sysctls["net/ipv6/conf/all/forwarding"] == "1"
    assert child.sysctls["net/ipv6/conf/default/accept_dad"] == "0"
    assert child.ipv6_commands == [
        ["/usr/sbin/ip", "-6", "addr", "add", "fd00::100/64", "dev", "tap0", "nodad"],
        ["/usr/sbin/ip", "-6", "route", "add", "default", "via", "fd00::2", "dev", "tap0"],
        # Host loopback closed: fd00::2 itself is refused at once, in the namespace.
        ["/usr/sbin/ip", "-6", "route", "add", "unreachable", "fd00::2/128"],
    ]
    opened = build_plan(Config(allow_host_loopback=True), facts(**V6), paths())
    assert opened.child.ipv6_commands == child.ipv6_commands[:2]
    assert child.verify is not None and child.verify.address6 == "fd00::100/64"
    doc = json.loads(plan.daemon_json["overlay2"])
    assert doc["ipv6"] is True and doc["ip6tables"] is True and doc["experimental"] is True
    assert doc["fixed-cidr-v6"] == "fd00:d0c::/64"


def test_without_ipv6_nothing_of_it_is_planned() -> None:
    plan = build_plan(Config(), facts(binaries=IP), paths())
    assert not plan.ipv6 and plan.net is not None
    assert "--enable-ipv6" not in plan.net.argv(1, 3, 4)
    assert plan.child.ipv6_commands == [] and not plan.child.ipv6
    assert not any("ipv6" in k for k in plan.child.sysctls)
    assert "ipv6" not in json.loads(plan.daemon_json["overlay2"])


def test_a_users_experimental_flag_is_not_set_twice() -> None:
    # dockerd refuses to start when a flag is also in daemon.json.
    config = Config(dockerd_args=("--experimental",))
    doc = json.loads(build_plan(config, facts(**V6), paths()).daemon_json["overlay2"])
    assert doc["ip6tables"] is True and "experimental" not in doc


def test_pasta_gets_the_same_ipv6_addresses_and_sets_them_itself() -> None:
    f = pasta_facts(**{**V6, "binaries": {**WITH_PASTA, "ip": "/usr/sbin/ip"}})
    plan = build_plan(Config(net="pasta"), f, paths())
    assert plan.net is not None
    argv = plan.net.argv(1, 3, 4)
    assert "--address=fd00::100" in argv and "--gateway=fd00::2" in argv
    assert "--ipv4-only" not in argv
    assert plan.child.ipv6_commands == [
        ["/usr/sbin/ip", "-6", "route", "add", "unreachable", "fd00::2/128"]
    ]
    off = build_plan(Config(net="pasta", ipv6=False), f, paths())
    assert off.net is not None and "--ipv4-only" in off.net.argv(1, 3, 4)


def test_the_check_finds_a_missing_address_or_route() -> None:
    spec = NetCheck(
        tap="tap0",
        address="10.0.2.100",
        prefixlen=24,
        gateway="10.0.2.2",
        mtu=65520,
        address6="fd00::100/64",
        gateway6="fd00::2",
    )
    route = ROUTE6.replace("fd790000000000000000000000000002", "fd000000000000000000000000000002")
    assert ipv6_problems(spec, IF_INET6, route) == []
    assert ipv6_problems(spec, IF_INET6.splitlines()[0], ROUTE6) == [
        "tap0 has IPv6 none, not fd00::100/64",
        "IPv6 default route via ['fd79::2'], not fd00::2",
    ]
