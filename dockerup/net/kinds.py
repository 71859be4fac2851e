"""The network drivers docker-up knows, one NetKind each: whatever the rest of the code must
know of a driver (the programs it needs, what it needs probed, how to configure it, why
IPv6 cannot be on with it, whether it offers slirp4netns' port forwarder) is answered here,
so that no caller branches on the driver's name. Adding a driver is adding a kind.

Cheap to import (settings/config.py and host/facts.py do, on the start path): each driver's module
is imported only when its kind is used, pasta's only when pasta is chosen (or doctor runs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from dockerup.errors import DockerUpError

if TYPE_CHECKING:
    from dockerup.host.facts import HostFacts
    from dockerup.net.driver import NetworkDriver
    from dockerup.settings.config import Config
    from dockerup.settings.modes import Mode
    from dockerup.settings.paths import Paths

    # (config, facts, programs found, paths, mode, IPv6 on) -> the driver; it refuses,
    # with DockerUpError, what this host's helper cannot do (pure).
    Configure = Callable[[Config, HostFacts, dict[str, str], Paths, Mode, bool], NetworkDriver]


def _as_probed(f: HostFacts) -> HostFacts:
    return f


class NetKind(NamedTuple):
    """A NamedTuple, not a frozen dataclass: as immutable, and cheaper to define (0.1 ms
    against 0.5 ms) on the path every command takes."""

    name: str
    # The programs it needs besides everyone's, each with the Debian package that has it
    # (facts.PACKAGES takes them in; plan.missing_programs asks for them).
    programs: Mapping[str, str]
    configure: Configure
    # Why IPv6 for containers cannot be on with it on this host ("" when it can), and the fix.
    ipv6_problem: Callable[[HostFacts], tuple[str, str]]
    # What it needs probed beyond facts.probe(): paid for only when it is chosen (or by doctor).
    probe: Callable[[HostFacts], HostFacts] = _as_probed
    # It serves slirp4netns' API socket, which the slirp port forwarder drives.
    api_port_forwarder: bool = False


def _configure_slirp4netns(
    config: Config, facts: HostFacts, bins: dict[str, str], paths: Paths, mode: Mode, ipv6: bool
) -> NetworkDriver:
    from dockerup.net import slirp4netns

    return slirp4netns.configure(
        bins["slirp4netns"],
        slirp4netns.parse_features(facts.slirp_help, facts.slirp_version),
        config.mtu,
        config.allow_host_loopback,
        paths.slirp_api,
        ipv6,
    )


def _slirp4netns_ipv6(facts: HostFacts) -> tuple[str, str]:
    from dockerup.net import slirp4netns

    if not slirp4netns.parse_features(facts.slirp_help, facts.slirp_version).ipv6:
        return "this slirp4netns has no --enable-ipv6", "install slirp4netns 0.4 or newer"
    return "", ""


def _configure_pasta(
    config: Config, facts: HostFacts, bins: dict[str, str], paths: Paths, mode: Mode, ipv6: bool
) -> NetworkDriver:
    from dockerup.net import pasta

    return pasta.configure(
        bins["pasta"],
        pasta.require_usable(facts),
        config.mtu,
        config.allow_host_loopback,
        mode.needs_userns(),
        ipv6,
    )


def _pasta_ipv6(facts: HostFacts) -> tuple[str, str]:
    if not facts.ipv6_gateways:
        return (
            "pasta carries IPv6 only for a workspace with an IPv6 default route",
            "use --net slirp4netns, or give the workspace an IPv6 route",
        )
    return "", ""


def _probe_pasta(f: HostFacts) -> HostFacts:
    from dockerup.net import pasta

    return pasta.probe(f)


# The first is the default (config.Config.net).
KINDS: dict[str, NetKind] = {
    k.name: k
    for k in (
        NetKind(
            "slirp4netns",
            programs={"slirp4netns": "slirp4netns"},
            configure=_configure_slirp4netns,
            ipv6_problem=_slirp4netns_ipv6,
            api_port_forwarder=True,
        ),
        NetKind(
            "pasta",
            programs={"pasta": "passt"},
            configure=_configure_pasta,
            ipv6_problem=_pasta_ipv6,
            probe=_probe_pasta,  # --help and --version: ~10 ms
        ),
    )
}
# The drivers docker-up knows, by name; the first is the default.
NET_DRIVERS = tuple(KINDS)


def kind_of(name: str) -> NetKind:
    """The kind of the driver a configuration names (config.resolve refuses other names;
    a Config built in code may still carry one)."""
    try:
        return KINDS[name]
    except KeyError:
        raise DockerUpError(
            f"unknown network driver {name!r}", hint=f"choose one of: {', '.join(KINDS)}"
        ) from None


def probe_all(f: HostFacts) -> HostFacts:
    """What every driver needs probed (doctor checks them all, chosen or not)."""
    for kind in KINDS.values():
        f = kind.probe(f)
    return f
