"""`docker-up doctor`: every prerequisite as a check, each a pure function of probed facts.

Facts are probed once (probe_doctor); the checks only read them, so unit tests feed them
made-up facts. The fatal checks are the same rules build_plan enforces (they call the same
require_* functions, so the messages cannot drift apart).
"""

from __future__ import annotations

from dockerup.doctor.account import (
    check_disk,
    check_existing_daemon,
    check_mode,
    check_running,
    check_runtime_dir,
    check_socket_path,
)
from dockerup.doctor.binaries import (
    check_containerd_runc,
    check_docker_cli,
    check_dockerd,
    check_programs,
)
from dockerup.doctor.kernel import (
    check_apparmor,
    check_cgroups,
    check_idmap_tools,
    check_netns,
    check_seccomp,
    check_storage,
    check_subgid,
    check_subuid,
    check_tun,
    check_userns,
    check_views,
)
from dockerup.doctor.model import Check, Finding, Health, Report
from dockerup.doctor.network import (
    check_accel,
    check_iptables,
    check_ipv6,
    check_net_driver,
    check_pasta,
    check_slirp4netns,
)
from dockerup.doctor.probe import DoctorFacts

CHECKS: tuple[Check, ...] = (
    Check("mode", "mode docker-up would choose", check_mode, cheap=True),
    Check("kernel.userns", "user namespaces", check_userns, fatal=True, cheap=True),
    Check("kernel.netns", "network namespaces", check_netns, fatal=True),
    Check("kernel.apparmor", "AppArmor", check_apparmor, cheap=True),
    Check("kernel.seccomp", "seccomp", check_seccomp),
    Check("tun.access", "/dev/net/tun", check_tun, fatal=True, cheap=True),
    Check("ids.subuid", "subordinate uids", check_subuid, fatal=True, cheap=True),
    Check("ids.subgid", "subordinate gids", check_subgid, fatal=True, cheap=True),
    Check("ids.tools", "newuidmap/newgidmap", check_idmap_tools, fatal=True, cheap=True),
    Check("programs", "required programs", check_programs, fatal=True, cheap=True),
    Check("net.driver", "network driver", check_net_driver),
    Check("net.accel", "network acceleration", check_accel, cheap=True),
    Check("net.ipv6", "IPv6 for containers", check_ipv6, cheap=True),
    Check("net.slirp4netns", "slirp4netns", check_slirp4netns, cheap=True),
    Check("net.pasta", "pasta", check_pasta, cheap=True),
    Check("docker.dockerd", "dockerd", check_dockerd, fatal=True),
    Check("docker.runtime", "containerd, runc", check_containerd_runc, fatal=True),
    Check("docker.cli", "docker client", check_docker_cli),
    Check("iptables", "iptables in a namespace", check_iptables, fatal=True),
    Check("storage", "storage driver", check_storage),
    Check("cgroups", "cgroups", check_cgroups),
    Check("views", "dev containers' folders", check_views),
    Check("runtime.dir", "runtime directory", check_runtime_dir, fatal=True, cheap=True),
    Check("runtime.socket", "socket path length", check_socket_path, fatal=True, cheap=True),
    Check("runtime.disk", "free disk", check_disk),
    Check("runtime.daemon", "other daemons", check_existing_daemon),
    Check("runtime.docker-up", "docker-up", check_running),
)


def run_checks(f: DoctorFacts, checks: tuple[Check, ...] = CHECKS) -> Report:
    return Report(tuple((c, c.run(f)) for c in checks))


UP_CHECKS = tuple(c for c in CHECKS if c.fatal and c.cheap)


def up_failures(cheap: DoctorFacts) -> list[tuple[Check, Finding]]:
    """What `up` runs before it starts anything: every fatal check that is cheap, on the
    cheap facts (doctor/facts.probe_cheap)."""
    report = run_checks(cheap, UP_CHECKS)
    return [(c, r) for c, r in report.results if r.status is Health.fail]
