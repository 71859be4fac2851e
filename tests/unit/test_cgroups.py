"""The cgroup decision (dockerup/plan/cgroups.py) on given facts, compared exactly, and how it
reaches the plan: daemon.json's exec-opts, dockerd's environment, the start's notice."""

from __future__ import annotations

import json
import shlex
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from dockerup.accel import ociruntime as runtime
from dockerup.host.facts import CgroupFacts, bus_path, own_cgroup, probe_cgroups, reach_bus
from dockerup.plan import cgroups
from dockerup.plan.build import build_plan
from dockerup.plan.cgroups import DELEGATE_FIX, LIMITS, Cgroups, decide
from dockerup.settings.config import Config
from dockerup.settings.modes import Mode
from dockerup.wire.specs import RuntimeSpec

from .given import BUS, DEBIAN13, facts, paths

BUSCTL = "/usr/bin/busctl"
PINNED = "native.cgroupdriver=cgroupfs"


def test_systemd_with_the_users_bus_and_delegation_gets_the_systemd_driver() -> None:
    assert decide(DEBIAN13, Mode.rootless, 1001, BUSCTL) == Cgroups(
        driver="systemd",
        reason="cgroup v2 with systemd; your user manager answers on /run/user/1001/bus and "
        "delegates cpu memory pids",
        limits=LIMITS,
        fix="",
        exec_opt="native.cgroupdriver=systemd",
        env={
            "ROOTLESSKIT_PARENT_EUID": "1001",
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1001/bus",
        },
    )


def test_a_manager_that_delegates_only_some_controllers_says_which_limits_apply() -> None:
    c = decide(replace(DEBIAN13, manager_controllers=("pids",)), Mode.rootless, 1001, BUSCTL)
    assert (c.driver, c.limits, c.fix) == ("systemd", ("pids",), DELEGATE_FIX)
    assert c.notice.startswith("memory and cpu limits do not apply to containers here: ")


def test_without_the_users_bus_the_driver_is_pinned_so_that_containers_run() -> None:
    """issue 32: dockerd saw /run/systemd/system, took the systemd driver, and then every
    container failed for want of $ROOTLESSKIT_PARENT_EUID."""
    no_bus = replace(DEBIAN13, bus="", bus_error=f"{BUS}: No such file or directory")
    assert decide(no_bus, Mode.rootless, 1001, BUSCTL) == Cgroups(
        driver="none",
        reason="cgroup v2 with systemd, but your D-Bus session bus does not answer "
        "(/run/user/1001/bus: No such file or directory): runc's systemd driver needs it",
        fix="as root: apt-get install dbus-user-session; then log in again (or "
        "`systemctl --user start dbus`); `loginctl enable-linger` keeps it without a login",
        exec_opt=PINNED,
    )


def test_without_busctl_runc_cannot_authenticate_from_the_user_namespace() -> None:
    c = decide(DEBIAN13, Mode.rootless, 1001, None)
    assert (c.driver, c.exec_opt, c.env, c.fix) == (
        "none",
        PINNED,
        {},
        "as root: apt-get install systemd (it has busctl)",
    )


def test_a_manager_without_controllers_gets_the_delegate_fix() -> None:
    c = decide(replace(DEBIAN13, manager_controllers=()), Mode.rootless, 1001, BUSCTL)
    assert (c.driver, c.limits, c.fix, c.exec_opt) == ("none", (), DELEGATE_FIX, PINNED)


def test_cgroup_v2_without_systemd_runs_containers_without_limits() -> None:
    pod = CgroupFacts(version=2, own="/", own_writable=True, own_controllers=("memory",))
    assert decide(pod, Mode.rootless, 1001, BUSCTL) == Cgroups(
        driver="none",
        reason="cgroup v2 without systemd (your cgroup / is delegated to you): a rootless "
        "dockerd applies limits only through a systemd user manager",
        fix="run docker-up on a host with systemd, under your systemd user manager: "
        "`docker-up autostart --systemd`",
        exec_opt=PINNED,
    )


def test_root_in_a_user_namespace_has_no_user_manager_to_ask() -> None:
    c = decide(DEBIAN13, Mode.userns_root, 0, BUSCTL)
    assert (c.driver, c.limits, c.exec_opt, c.env) == ("none", (), PINNED, {})


def test_cgroup_v1_is_left_to_dockerd_as_before() -> None:
    """This project's own machines: daemon.json stays as it was (no exec-opts)."""
    c = decide(CgroupFacts(), Mode.rootless, 1001, BUSCTL)
    assert (c.driver, c.exec_opt, c.env, c.limits) == ("none", None, {}, ())
    assert c.notice.startswith("--memory, --cpus, --pids-limit do not apply to containers")


def test_real_root_keeps_dockerds_own_choice() -> None:
    c = decide(DEBIAN13, Mode.privileged, 0, BUSCTL)
    assert (c.driver, c.exec_opt, c.env, c.limits, c.notice) == ("systemd", None, {}, LIMITS, "")


def daemon_jsons(plan) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Each storage candidate's daemon.json, read: all three, so that a check on each of
    them can never pass on none."""
    assert sorted(plan.daemon_json) == ["fuse-overlayfs", "overlay2", "vfs"]
    return [json.loads(doc) for doc in plan.daemon_json.values()]


def plan_for(cg: CgroupFacts, **kw: object):  # type: ignore[no-untyped-def]
    f = facts(cgroups=cg, **kw)
    return build_plan(Config(), replace(f, binaries={**f.binaries, "busctl": BUSCTL}), paths())


def test_the_plan_gives_dockerd_and_containerd_the_drivers_environment() -> None:
    plan = plan_for(DEBIAN13)
    assert plan.cgroups == decide(DEBIAN13, Mode.rootless, 1001, BUSCTL)
    for env in (plan.dockerd_env, plan.child.dockerd.env, plan.child.containerd.env):
        assert env["ROOTLESSKIT_PARENT_EUID"] == "1001"
        assert env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/run/user/1001/bus"
    for doc in daemon_jsons(plan):
        assert doc["exec-opts"] == ["native.cgroupdriver=systemd"]


def test_the_plan_pins_cgroupfs_without_the_bus_and_says_so_once() -> None:
    plan = plan_for(replace(DEBIAN13, bus="", bus_error="gone"))
    assert "ROOTLESSKIT_PARENT_EUID" not in plan.dockerd_env
    assert "DBUS_SESSION_BUS_ADDRESS" not in plan.dockerd_env
    for doc in daemon_jsons(plan):
        assert doc["exec-opts"] == [PINNED]
    assert plan.cgroups.notice == (
        "--memory, --cpus, --pids-limit do not apply to containers here: cgroup v2 with "
        "systemd, but your D-Bus session bus does not answer (gone): runc's systemd driver "
        f"needs it. Fix: {plan.cgroups.fix}"
    )


def test_on_cgroup_v1_daemon_json_names_no_exec_opts() -> None:
    plan = plan_for(CgroupFacts())
    assert all("exec-opts" not in doc for doc in daemon_jsons(plan))


def test_own_cgroup_and_bus_path() -> None:
    assert own_cgroup("12:pids:/x\n0::/user.slice/u.scope\n") == "/user.slice/u.scope"
    assert own_cgroup("") == ""
    env = {"DBUS_SESSION_BUS_ADDRESS": "unix:guid=1,path=/b/bus;tcp:host=x"}
    assert bus_path(env, 5) == "/b/bus"
    # An abstract socket is per network namespace: unreachable from docker-up's own.
    abstract = {"DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/x", "XDG_RUNTIME_DIR": "/run/u"}
    assert bus_path(abstract, 5) == "/run/u/bus"
    assert bus_path({}, 5) == "/run/user/5/bus"


def test_reach_bus_connects_or_says_why(tmp_path: Path) -> None:
    path = str(tmp_path / "bus")
    assert reach_bus(path) == f"{path}: No such file or directory"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        s.listen()
        assert reach_bus(path) == ""


def test_probe_reads_a_cgroup_v2_root(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    manager = root / "user.slice/user-7.slice/user@7.service"
    manager.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids io\n")
    (manager / "cgroup.controllers").write_text("memory pids\n")
    c = probe_cgroups({"XDG_RUNTIME_DIR": str(tmp_path)}, 7, str(root))
    assert (c.version, c.manager_controllers, c.bus) == (2, ("memory", "pids"), "")
    assert c.bus_error == f"{tmp_path}/bus: No such file or directory"
    empty = tmp_path / "none"
    empty.mkdir()
    assert probe_cgroups({}, 7, str(empty)).version == 0


def test_status_line() -> None:
    assert cgroups.Cgroups("none", "why").describe() == "none (no limits): why"


def test_only_a_pinned_driver_refuses_the_limits_it_cannot_apply() -> None:
    assert decide(DEBIAN13, Mode.rootless, 1001, BUSCTL).refused == ()
    partial = decide(replace(DEBIAN13, manager_controllers=("pids",)), Mode.rootless, 1, BUSCTL)
    assert partial.refused == ("memory", "cpu")
    assert decide(replace(DEBIAN13, bus=""), Mode.rootless, 1001, BUSCTL).refused == LIMITS
    # cgroup v1 and real root: dockerd decides, as before this (nothing refused).
    assert decide(CgroupFacts(), Mode.rootless, 1001, BUSCTL).refused == ()
    assert decide(DEBIAN13, Mode.privileged, 0, BUSCTL).refused == ()


def test_without_limits_every_container_passes_docker_ups_runtime() -> None:
    plan = plan_for(replace(DEBIAN13, bus="", bus_error="gone"), env={})
    for doc in daemon_jsons(plan):
        assert doc["default-runtime"] == "docker-up"
    (script,) = [f.content for f in plan.files if f.path == plan.paths.runtime_script]
    spec = RuntimeSpec.from_json(shlex.split(script.splitlines()[2])[5])
    assert (spec.refused, spec.refused_why) == (
        list(LIMITS),
        f"{plan.cgroups.reason}. Fix: {plan.cgroups.fix}",
    )


def container(tmp_path: Path, hostconfig: dict[str, object]) -> dict[str, object]:
    """An OCI spec as dockerd writes it, with the container's own directory beside."""
    (tmp_path / "hostconfig.json").write_text(json.dumps(hostconfig))
    return {"mounts": [{"destination": "/etc/hostname", "source": str(tmp_path / "hostname")}]}


def test_the_runtime_refuses_a_limit_that_cannot_apply_and_says_why(tmp_path: Path) -> None:
    defaults = RuntimeSpec("/usr/sbin/runc", {}, None, ["memory", "cpu", "pids"], "why. Fix: x")
    # As dockerd writes it for `--memory 64m --pids-limit 10` (MemorySwap: twice, its own).
    spec = container(
        tmp_path, {"Memory": 67108864, "MemorySwap": 134217728, "NanoCpus": 0, "PidsLimit": 10}
    )
    with pytest.raises(runtime.Refused) as e:
        runtime.refuse_limits(spec, defaults)
    assert str(e.value) == (
        "docker-up: --memory, --pids-limit cannot apply here: why. Fix: x (or run the "
        "container without --memory, --pids-limit)"
    )
    plain = container(tmp_path, {"Memory": 0, "PidsLimit": None, "CpuShares": 0})
    runtime.refuse_limits(plain, defaults)  # asks for nothing: runs
    only_pids = replace(defaults, refused=["pids"])
    runtime.refuse_limits(container(tmp_path, {"Memory": 67108864}), only_pids)


def test_the_refusal_goes_where_containerds_shim_reads_runcs_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.json"
    args = ["--root", "/r", "--log", str(log), "--log-format", "json", "create", "--bundle", "b"]
    runtime.say_refused(args, "docker-up: --memory cannot apply here")
    assert json.loads(log.read_text()) == {
        "level": "error",
        "msg": "docker-up: --memory cannot apply here",
    }
    assert capsys.readouterr().err == "docker-up: --memory cannot apply here\n"
