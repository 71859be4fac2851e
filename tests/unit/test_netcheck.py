"""The check the namespace child makes before it execs dockerd (namespace/netcheck.py), run
here against this process's own loopback: real ioctls, no root needed."""

from __future__ import annotations

from dockerup.namespace.netcheck import default_gateways, problems
from dockerup.wire.specs import NetCheck

# /proc/net/route of a slirp4netns namespace: default via 10.0.2.2, and 10.0.2.0/24.
ROUTES = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "tap0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "tap0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
)


def test_default_gateways_from_the_route_table() -> None:
    assert default_gateways(ROUTES) == ["10.0.2.2"]
    assert default_gateways(ROUTES.splitlines()[0] + "\n") == []


def test_what_is_as_planned_passes_and_each_difference_is_named() -> None:
    lo = NetCheck(tap="lo", address="127.0.0.1", prefixlen=8, gateway="10.0.2.2", mtu=65536)
    assert problems(lo, ROUTES) == []
    wrong = NetCheck(tap="lo", address="10.0.2.100", prefixlen=24, gateway="10.0.2.9", mtu=1500)
    found = problems(wrong, ROUTES)
    assert found == [
        "lo MTU is 65536, not 1500",
        "lo has 127.0.0.1/8, not 10.0.2.100/24",
        "default route via ['10.0.2.2'], not 10.0.2.9",
    ]
    missing = NetCheck(
        tap="du-none0", address="10.0.2.100", prefixlen=24, gateway="10.0.2.2", mtu=65520
    )
    assert problems(missing, ROUTES) == ["du-none0 does not exist"]
