"""The runtime wrapper's spec edit and argument parsing (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockerup.accel.ociruntime import add_listener, adjust_spec, bundle_dir, rewrite
from dockerup.lean import script
from dockerup.wire.specs import ProxySpec, RuntimeSpec

WMEM = {"net.ipv4.tcp_wmem": "4096 16384 131072"}


def spec(namespaces: list[dict[str, str]], sysctl: dict[str, str] | None = None) -> dict[str, Any]:
    linux: dict[str, Any] = {"namespaces": namespaces}
    if sysctl is not None:
        linux["sysctl"] = sysctl
    return {"ociVersion": "1.0.2", "linux": linux}


def test_a_container_with_its_own_netns_gets_the_defaults() -> None:
    s = spec([{"type": "pid"}, {"type": "network"}])
    assert adjust_spec(s, WMEM)
    assert s["linux"]["sysctl"] == WMEM


def test_the_containers_own_setting_wins() -> None:
    s = spec([{"type": "network"}], {"net.ipv4.tcp_wmem": "4096 16384 4194304", "a": "1"})
    assert not adjust_spec(s, WMEM)
    assert s["linux"]["sysctl"]["net.ipv4.tcp_wmem"] == "4096 16384 4194304"


def test_a_shared_network_namespace_is_left_alone() -> None:
    # --network container:X joins by path; --network host has no network entry at all.
    assert not adjust_spec(spec([{"type": "network", "path": "/proc/7/ns/net"}]), WMEM)
    assert not adjust_spec(spec([{"type": "pid"}]), WMEM)
    assert not adjust_spec({"ociVersion": "1.0.2"}, WMEM)


def test_bundle_of_runc_create() -> None:
    base = ["--root", "/r", "--log", "/l", "--log-format", "json"]
    assert bundle_dir([*base, "create", "--bundle", "/b", "--pid-file", "/p", "id"]) == "/b"
    assert bundle_dir([*base, "create", "--bundle=/b2", "id"]) == "/b2"
    assert bundle_dir([*base, "create", "id"]) == "."
    assert bundle_dir([*base, "start", "id"]) is None


def test_rewrite_changes_the_file_in_place(tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_text(json.dumps(spec([{"type": "network"}])))
    rewrite(str(f), RuntimeSpec("/usr/sbin/runc", WMEM, None), "id")
    assert json.loads(f.read_text())["linux"]["sysctl"] == WMEM
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def default_profile() -> dict[str, Any]:
    """The shape of Docker's default seccomp profile in an OCI spec."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["accept", "connect", "io_uring_setup", "read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0}]},
        ],
    }


def test_accel_notifies_on_connect_through_the_listener() -> None:
    s = spec([{"type": "network"}])
    s["linux"]["seccomp"] = default_profile()
    assert add_listener(s, "/run/accel.sock")
    sc = s["linux"]["seccomp"]
    assert sc["listenerPath"] == "/run/accel.sock"
    # connect moved to the agent, io_uring denied, nothing else changed.
    assert sc["syscalls"][0]["names"] == ["accept", "read"]
    assert sc["syscalls"][1]["args"] == [{"index": 0}]
    assert sc["syscalls"][2] == {"names": ["connect"], "action": "SCMP_ACT_NOTIFY"}
    assert sc["syscalls"][3] == {
        "names": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": 1,
    }


def test_accel_leaves_unconfined_and_shared_netns_containers_as_they_are() -> None:
    unconfined = spec([{"type": "network"}])
    assert not add_listener(unconfined, "/l")
    assert "seccomp" not in unconfined["linux"]
    host = spec([{"type": "pid"}])
    host["linux"]["seccomp"] = default_profile()
    assert not add_listener(host, "/l")
    assert "listenerPath" not in host["linux"]["seccomp"]


def test_accel_keeps_a_conditional_rule_about_connect() -> None:
    s = spec([{"type": "network"}])
    s["linux"]["seccomp"] = {
        "syscalls": [
            {"names": ["connect"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1}]},
        ]
    }
    assert not add_listener(s, "/l")  # one syscall cannot carry two actions


def test_proxy_script_quotes_every_path() -> None:
    """A venv or runtime dir with a space or `$(...)` in its name is still one argument."""
    import shlex

    from dockerup.plan.daemon import proxy_script
    from dockerup.settings.paths import resolve_paths

    paths = resolve_paths({"XDG_RUNTIME_DIR": "/run/a b/$(id)"}, 1000, "/home/u")
    text = proxy_script("/opt/v env/bin/python", paths, "/x/p")
    exec_line = text.splitlines()[1]
    sock = "/run/a b/$(id)/docker-up/ports.sock"
    words = shlex.split(exec_line)
    assert words[:4] == ["exec", "/opt/v env/bin/python", "-S", script("portproxy")]
    assert ProxySpec.from_json(words[4]) == ProxySpec(sock, "/x/p")
    assert words[5:] == ["$@"]


def labelled(tmp_path: Path, labels: dict[str, str] | None) -> Path:
    """A bundle whose spec mounts /etc/hostname from a dockerd container directory that
    holds config.v2.json with these labels (None: no such file)."""
    cdir = tmp_path / "containers" / "abc"
    cdir.mkdir(parents=True)
    if labels is not None:
        (cdir / "config.v2.json").write_text(json.dumps({"Config": {"Labels": labels}}))
    s = spec([{"type": "network"}])
    s["linux"]["seccomp"] = default_profile()
    s["mounts"] = [{"destination": "/etc/hostname", "source": str(cdir / "hostname")}]
    f = tmp_path / "config.json"
    f.write_text(json.dumps(s))
    return f


def test_the_opt_out_label_keeps_connect_off_the_agent(tmp_path: Path) -> None:
    f = labelled(tmp_path, {"docker-up.net-accel": "off"})
    rewrite(str(f), RuntimeSpec("/usr/sbin/runc", WMEM, "/run/accel.sock"), "id")
    seccomp = json.loads(f.read_text())["linux"]["seccomp"]
    assert "listenerPath" not in seccomp
    assert seccomp == default_profile()
    # The other defaults still apply.
    assert json.loads(f.read_text())["linux"]["sysctl"] == WMEM


def test_without_the_label_or_its_file_the_container_is_accelerated(tmp_path: Path) -> None:
    for i, labels in enumerate(({"docker-up.net-accel": "on"}, {"other": "off"}, None)):
        f = labelled(tmp_path / str(i), labels)
        rewrite(str(f), RuntimeSpec("/usr/sbin/runc", WMEM, "/run/accel.sock"), "id")
        assert json.loads(f.read_text())["linux"]["seccomp"]["listenerPath"] == "/run/accel.sock"
