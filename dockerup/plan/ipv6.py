"""IPv6 for containers: whether it is on (and why), and what the namespace needs for it.
Pure, like plan/build.py, whose build_plan asks it."""

from __future__ import annotations

from dockerup.errors import DockerUpError
from dockerup.host.facts import HostFacts
from dockerup.net.addresses import GATEWAY6
from dockerup.net.driver import NetworkDriver
from dockerup.net.kinds import kind_of
from dockerup.settings.config import Config

IPV6_SYSCTLS = {
    "net/ipv6/conf/all/forwarding": "1",
    # tap0 does not exist yet: it takes these defaults. No router advertisements (the
    # address and route are fixed) and no duplicate detection (nobody else is on the link),
    # so tap0's IPv6 works the moment it is configured.
    "net/ipv6/conf/default/accept_ra": "0",
    "net/ipv6/conf/default/accept_dad": "0",
}


def resolve_ipv6(config: Config, facts: HostFacts, bins: dict[str, str]) -> tuple[bool, str]:
    """IPv6 for containers, and why: --ipv6, --no-ipv6, or (None) on when the workspace
    reaches an IPv6 network (its default route); containers then resolve and use IPv6 as
    the workspace does. Without one, turning it on still gives them the workspace's ::1
    (with host loopback allowed) and nothing else."""
    asked = config.ipv6
    if asked is False:
        return False, "off (--no-ipv6)"
    problem, hint = ipv6_problem(config, facts, bins)
    if problem:
        if asked:
            raise DockerUpError(f"--ipv6: {problem}", hint=hint)
        return False, f"off: {problem}"
    if facts.ipv6_gateways:
        how = "--ipv6" if asked else "auto"
        hidden = (
            "; the workspace's own fd00::/64 network is hidden from containers (the "
            "namespace uses it)"
            if facts.ipv6_overlap
            else ""
        )
        return True, f"on ({how}): the workspace has an IPv6 default route{hidden}"
    if asked:
        return (
            True,
            "on (--ipv6); the workspace has no IPv6 default route: containers reach "
            "no IPv6 network, only the workspace's ::1 (with host loopback allowed)",
        )
    return False, "off: the workspace has no IPv6 default route (--ipv6 turns it on)"


def ipv6_problem(config: Config, facts: HostFacts, bins: dict[str, str]) -> tuple[str, str]:
    """Why IPv6 cannot be on here ("" when it can), and the fix."""
    if config.host_network:
        return "dockerd shares the workspace's network", "drop --host-network"
    if not facts.ipv6_loopback:
        hint = "turn IPv6 on in the workspace: sysctl net.ipv6.conf.all.disable_ipv6=0"
        return "the workspace has no IPv6 (no ::1 on lo)", hint
    if "ip" not in bins:
        return "iproute2's ip is not installed", "sudo apt-get install iproute2"
    return kind_of(config.net).ipv6_problem(facts)


def ipv6_commands(net: NetworkDriver, bins: dict[str, str], config: Config) -> list[list[str]]:
    """The driver's IPv6 set-up, then, with host loopback closed, an unreachable route for
    fd00::2 (the workspace's ::1 when open): a container's connection there then fails at
    once in docker-up's namespace. Without it slirp4netns refuses it too, but its ICMPv6
    error is lost on the way back through the NAT and the container waits for a timeout;
    pasta (--no-map-gw) would try fd00::2 out in the workspace's network."""
    commands = net.ipv6_commands(bins["ip"])
    if not config.allow_host_loopback:
        commands.append([bins["ip"], "-6", "route", "add", "unreachable", f"{GATEWAY6}/128"])
    return commands
