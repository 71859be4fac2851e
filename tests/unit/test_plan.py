from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockerup.errors import DockerUpError
from dockerup.host.facts import IdRange, TunAccess, parse_subid, search_path
from dockerup.lean import script
from dockerup.plan import daemon
from dockerup.plan.build import build_plan
from dockerup.plan.data import Plan
from dockerup.settings.config import Config, Storage
from dockerup.wire.specs import ChildSpec, ProxySpec, RuntimeSpec

from .given import BINS, WITH_PASTA, facts, pasta_facts, paths


def test_paths_fall_back_to_tmp_without_xdg_runtime_dir() -> None:
    p = paths()
    assert p.runtime == Path("/tmp/docker-up-1001")
    assert p.socket == Path("/tmp/docker-up-1001/docker.sock")
    assert p.data_root == Path("/home/alice/.local/share/docker-up/docker")
    p2 = paths({"XDG_RUNTIME_DIR": "/run/user/1001", "XDG_DATA_HOME": "/d"})
    assert p2.socket == Path("/run/user/1001/docker-up/docker.sock")
    assert p2.data_root == Path("/d/docker-up/docker")
    # A relative XDG_RUNTIME_DIR is invalid per the spec: ignored.
    assert paths({"XDG_RUNTIME_DIR": "rel"}).runtime == Path("/tmp/docker-up-1001")


def test_plan_maps_own_id_to_root_and_the_subordinate_range_after_it() -> None:
    plan = build_plan(Config(), facts(), paths())
    assert plan.uidmap.argv(42) == [
        "/usr/bin/newuidmap",
        "42",
        "0",
        "1001",
        "1",
        "1",
        "100000",
        "65536",
    ]
    assert plan.gidmap.argv(42) == [
        "/usr/bin/newgidmap",
        "42",
        "0",
        "1001",
        "1",
        "1",
        "200000",
        "65536",
    ]


def test_plan_maps_every_subordinate_range_one_after_the_other() -> None:
    f = facts(subuid=(IdRange(500000, 65536), IdRange(100000, 1000)))
    uidmap = build_plan(Config(), f, paths()).uidmap
    assert uidmap is not None and uidmap.count == 1 + 1000 + 65536
    assert uidmap.argv(7)[2:] == [
        "0",
        "1001",
        "1",
        "1",
        "100000",
        "1000",
        "1001",
        "500000",
        "65536",
    ]


def test_in_a_pod_of_65536_ids_the_ranges_around_the_users_own_id_are_used() -> None:
    """hostUsers: false: the pod's namespace maps ids 0-65535 only. The image's user 33333
    has 1-33332 and 33334-65535 (and an old 100000+65536 the pod cannot map): containers
    get ids 0-65534, nobody's 65534 included."""
    pod = IdRange(0, 65536)
    f = facts(
        uid=33333,
        gid=33333,
        uid_map=(pod,),
        gid_map=(pod,),
        max_gid=65535,
        subuid=(IdRange(1, 33332), IdRange(33334, 32202), IdRange(100000, 65536)),
        subgid=(IdRange(1, 65535),),
    )
    plan = build_plan(Config(), f, paths())
    assert plan.uidmap is not None and plan.gidmap is not None
    assert plan.uidmap.argv(7)[2:] == [
        "0",
        "33333",
        "1",
        "1",
        "1",
        "33332",
        "33333",
        "33334",
        "32202",
    ]
    assert plan.uidmap.count == 65535
    # The gid range holds the user's own gid: split around it.
    assert plan.gidmap.argv(7)[5:] == ["1", "1", "33332", "33333", "33334", "32202"]
    assert plan.child.sysctls["net/ipv4/ping_group_range"] == "0 65534"


def test_ranges_the_namespace_cannot_map_are_refused_with_the_way_out() -> None:
    pod = IdRange(0, 65536)
    f = facts(uid=33333, uid_map=(pod,), subuid=(IdRange(100000, 65536),))
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(), f, paths())
    assert "outside the ids this user namespace has (0-65535" in e.value.message
    assert "1:33332" in (e.value.hint or "")


def test_slirp_argv_defaults() -> None:
    plan = build_plan(Config(), facts(), paths())
    assert plan.net.argv(42, ready_fd=5, exit_fd=6) == [
        "/usr/bin/slirp4netns",
        "--configure",
        "--mtu=65520",
        "--ready-fd=5",
        "--exit-fd=6",
        "--disable-host-loopback",
        "--api-socket=/tmp/docker-up-1001/slirp4netns.sock",
        "--enable-sandbox",
        "--enable-seccomp",
        "42",
        "tap0",
    ]


def test_slirp_argv_host_loopback_and_mtu() -> None:
    plan = build_plan(Config(mtu=1500, allow_host_loopback=True), facts(), paths())
    argv = plan.net.argv(42, 5, 6)
    assert "--mtu=1500" in argv and "--disable-host-loopback" not in argv
    assert plan.child.verify.mtu == 1500


def test_dockerd_argv_env_and_daemon_json() -> None:
    plan = build_plan(Config(mtu=9000), facts(), paths())
    assert plan.dockerd_argv == (
        "/usr/sbin/dockerd",
        "--config-file=/tmp/docker-up-1001/daemon.json",
        "--containerd=/tmp/docker-up-1001/exec/containerd/containerd.sock",
        "--rootless",
    )
    # containerd is started by the child, with the configuration dockerd would write.
    assert plan.child.containerd.argv == [
        "/usr/bin/containerd",
        "--config",
        "/tmp/docker-up-1001/exec/containerd/containerd.toml",
        "--log-level",
        "info",
    ]
    assert plan.child.containerd_pidfile == "/tmp/docker-up-1001/exec/containerd/containerd.pid"
    toml = written(plan, "/tmp/docker-up-1001/exec/containerd/containerd.toml")
    assert 'address = "/tmp/docker-up-1001/exec/containerd/containerd.sock"' in toml
    assert 'root = "/home/alice/.local/share/docker-up/docker/containerd/daemon"' in toml
    # containerd 1.6 reads format 2; its /opt default is the host's.
    assert toml.startswith("version = 2\n")
    assert 'path = "/home/alice/.local/share/docker-up/docker/containerd/opt"' in toml
    # Our bin dir (the working iptables) first; sbin present; nothing else leaks through.
    assert plan.dockerd_env == {
        "PATH": "/tmp/docker-up-1001/bin:/usr/bin:/bin:/usr/sbin",
        "HOME": "/home/alice",
        "XDG_RUNTIME_DIR": "/tmp/docker-up-1001",
        "LANG": "C.UTF-8",
    }
    cfg = json.loads(plan.daemon_json["overlay2"])
    assert cfg == {
        "data-root": "/home/alice/.local/share/docker-up/docker",
        "exec-root": "/tmp/docker-up-1001/exec",
        "pidfile": "/tmp/docker-up-1001/dockerd.pid",
        "hosts": ["unix:///tmp/docker-up-1001/docker.sock"],
        "mtu": 9000,
        "storage-driver": "overlay2",
        "shutdown-timeout": 10,
        "deprecated-key-path": "/home/alice/.local/share/docker-up/key.json",
        "userland-proxy-path": "/tmp/docker-up-1001/bin/docker-up-proxy",
        "host-gateway-ip": "10.0.2.2",
        "runtimes": {"docker-up": {"path": "/tmp/docker-up-1001/bin/docker-up-runtime"}},
        "default-runtime": "docker-up",
    }
    proxy = written(plan, "/tmp/docker-up-1001/bin/docker-up-proxy")
    spec = ProxySpec("/tmp/docker-up-1001/ports.sock", "/usr/sbin/docker-proxy")
    assert (
        proxy
        == f"#!/bin/sh\nexec /usr/bin/python3 -S {script('portproxy')} '{spec.to_json()}' \"$@\"\n"
    )
    # Every file the executor writes is in the plan, daemon.json for each storage driver.
    assert [str(f.path) for f in plan.files] == [
        "/tmp/docker-up-1001/exec/containerd/containerd.toml",
        "/tmp/docker-up-1001/bin/docker-up-proxy",
        "/tmp/docker-up-1001/bin/docker-up-runtime",
    ]
    assert plan.context_file is not None and plan.context_file.optional
    assert sorted(plan.daemon_json) == ["fuse-overlayfs", "overlay2", "vfs"]
    assert daemon.daemon_config(Config(), paths(), "vfs")["storage-driver"] == "vfs"
    # host-gateway is the helper's gateway in docker-up's own namespace, dockerd's own else.
    assert daemon.daemon_config(Config(), paths(), "vfs")["host-gateway-ip"] == "10.0.2.2"
    assert "host-gateway-ip" not in daemon.daemon_config(Config(), paths(), "vfs", False)


def test_child_spec() -> None:
    spec = build_plan(Config(storage=Storage.vfs), facts(), paths()).child
    assert spec.storage_candidates == ["vfs"]
    assert spec.copyup == ["/etc", "/run"]
    # Containers that mount /var/run/docker.sock get this daemon (only in the copied-up /run).
    assert spec.run_links == {"docker.sock": "/tmp/docker-up-1001/docker.sock"}
    assert spec.resolv_conf == "nameserver 10.0.2.3\n"
    assert spec.sysctls["net/ipv4/ip_forward"] == "1"
    # The kernel refuses ping_group_range gids the namespace does not map.
    assert spec.sysctls["net/ipv4/ping_group_range"] == "0 65536"
    # In order of preference: legacy first (nft deletions wait for the kernel).
    assert spec.iptables == [
        ["legacy", "/usr/sbin/iptables-legacy"],
        ["nft", "/usr/sbin/iptables-nft"],
    ]
    auto = build_plan(Config(), facts(), paths()).child
    assert auto.storage_candidates == ["overlay2", "fuse-overlayfs", "vfs"]
    # What the child reads is what the planner wrote, field for field.
    assert ChildSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("missing", "package"),
    [
        ("dockerd", "docker.io"),
        ("slirp4netns", "slirp4netns"),
        ("newuidmap", "uidmap"),
        ("iptables", "iptables"),
        ("runc", "runc"),
    ],
)
def test_missing_program_names_package(missing: str, package: str) -> None:
    f = facts(binaries={**BINS, missing: None})
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(), f, paths())
    assert f"{missing} not found" in e.value.message
    assert f"apt-get install {package}" in (e.value.hint or "")


def test_missing_subuid_range_says_which_file_and_the_command() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(), facts(subuid=()), paths())
    assert "/etc/subuid" in e.value.message
    # One command for both files: doctor's subuid and subgid checks give the same fix.
    assert (
        e.value.hint
        == "as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"
    )


def test_tun_errors() -> None:
    with pytest.raises(DockerUpError, match="cannot be opened") as e:
        build_plan(Config(), facts(tun=TunAccess(True, False, "Permission denied")), paths())
    assert "chmod 0666 /dev/net/tun" in (e.value.hint or "")
    with pytest.raises(DockerUpError, match="missing"):
        build_plan(Config(), facts(tun=TunAccess(False, False, "missing")), paths())


def test_long_socket_path_refused() -> None:
    with pytest.raises(DockerUpError, match="longer than"):
        build_plan(Config(), facts(), paths({"XDG_RUNTIME_DIR": "/" + "x" * 120}))


def test_parse_subid() -> None:
    text = "bob:1:2\nalice:100000:65536\n1001:300000:10\nbad line\nalice:x:1\n"
    assert parse_subid(text, "alice", 1001) == (IdRange(100000, 65536), IdRange(300000, 10))
    assert parse_subid(text, "carol", 7) == ()


def test_search_path_adds_sbin_once() -> None:
    assert search_path("/usr/bin:/usr/sbin") == "/usr/bin:/usr/sbin:/usr/local/sbin:/sbin"


def test_max_mapped_id() -> None:
    from dockerup.host.facts import max_mapped_id

    assert (
        max_mapped_id("         0       1001          1\n         1     100000      65536\n")
        == 65536
    )
    assert max_mapped_id("0 0 4294967295\n") == 4294967294
    assert max_mapped_id("") == 0


def test_plain_tcp_listener_is_refused() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(tcp="0.0.0.0:2375"), facts(), paths())
    assert "refusing a plain TCP listener" in e.value.message
    assert "--tls-dir" in (e.value.hint or "")


def test_tcp_listener_with_tls_verifies_clients() -> None:
    plan = build_plan(Config(tcp="0.0.0.0:2376", tls_dir="/tls"), facts(), paths())
    cfg = json.loads(plan.daemon_json["vfs"])
    assert cfg["hosts"] == ["unix:///tmp/docker-up-1001/docker.sock", "tcp://0.0.0.0:2376"]
    assert cfg["tlsverify"] is True
    assert cfg["tlscacert"] == "/tls/ca.pem" and cfg["tlskey"] == "/tls/key.pem"


def test_net_pasta_plans_pasta_and_needs_no_slirp4netns() -> None:
    f = pasta_facts(binaries={**WITH_PASTA, "slirp4netns": None})
    plan = build_plan(Config(net="pasta"), f, paths())
    assert plan.net_name == "pasta"
    assert plan.net is not None and plan.net.argv(1, 3, 4)[0] == "/usr/bin/pasta"
    # The namespace looks the same to the child as with slirp4netns.
    assert plan.child.verify is not None and plan.child.verify.address == "10.0.2.100"
    assert plan.child.resolv_conf == "nameserver 10.0.2.3\n"


def test_net_pasta_without_pasta_installed_names_the_package() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(net="pasta"), facts(), paths())
    assert "pasta not found" in e.value.message
    assert "apt-get install passt" in (e.value.hint or "")


def test_net_pasta_without_a_default_route_is_refused() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(net="pasta"), pasta_facts(default_route=False), paths())
    assert "default route" in e.value.message
    assert "--net slirp4netns" in (e.value.hint or "")


def test_slirp_port_forwarder_needs_the_slirp4netns_driver() -> None:
    with pytest.raises(DockerUpError) as e:
        build_plan(Config(net="pasta", port_forwarder="slirp"), pasta_facts(), paths())
    assert "needs the slirp4netns network driver (here: pasta)" in e.value.message
    assert "--port-forwarder splice" in (e.value.hint or "")


def test_net_pasta_as_real_root_is_refused() -> None:
    root = pasta_facts(uid=0, gid=0, initial_userns=True, net_admin=True)
    with pytest.raises(DockerUpError, match="as root"):
        build_plan(Config(net="pasta"), root, paths())


def test_container_defaults_go_through_the_runtime_wrapper() -> None:
    plan = build_plan(Config(), facts(), paths())
    lines = written(plan, "/tmp/docker-up-1001/bin/docker-up-runtime").splitlines()
    spec = RuntimeSpec(
        "/usr/sbin/runc",
        {"net.ipv4.tcp_wmem": "4096 16384 131072"},
        "/tmp/docker-up-1001/accel.sock",
    )  # --net-accel is on by default
    # Only `create` pays for a Python start; everything else is runc at once.
    assert lines[1:4] == [
        'case " $* " in',
        f'  *" create "*) exec /usr/bin/python3 -S {script("runtime")} '
        f"'{spec.to_json()}' \"$@\" ;;",
        "esac",
    ]
    assert lines[4] == 'exec /usr/sbin/runc "$@"'
    # dockerd's own namespace gets the same cap.
    assert plan.child.sysctls["net/ipv4/tcp_wmem"] == "4096 16384 131072"


def test_no_container_defaults_means_plain_runc() -> None:
    plan = build_plan(Config(tcp_wmem_max=0, net_accel=False), facts(), paths())
    assert [f.path.name for f in plan.files] == ["containerd.toml", "docker-up-proxy"]
    assert "default-runtime" not in json.loads(plan.daemon_json["overlay2"])
    assert "net/ipv4/tcp_wmem" not in plan.child.sysctls


def test_net_accel_is_on_by_default_with_host_loopback_closed_too() -> None:
    assert build_plan(Config(net_accel=True), facts(), paths()).accel
    assert build_plan(Config(), facts(), paths()).accel  # issue 27: near-native by default
    assert not build_plan(Config(net_accel=False), facts(), paths()).accel


def test_net_accel_hands_runc_the_agents_listener() -> None:
    plan = build_plan(Config(net_accel=True, allow_host_loopback=True), facts(), paths())
    runtime = written(plan, "/tmp/docker-up-1001/bin/docker-up-runtime")
    assert '"listener": "/tmp/docker-up-1001/accel.sock"' in runtime


def test_net_accel_is_on_by_default_where_it_can_work() -> None:
    loopback = Config(allow_host_loopback=True)
    assert build_plan(loopback, facts(), paths()).accel
    assert not build_plan(Config(allow_host_loopback=True, net_accel=False), facts(), paths()).accel
    old = facts(accel_problems=("runc (1, 0) cannot hand over a seccomp listener (1.1+)",))
    assert not build_plan(loopback, old, paths()).accel
    with pytest.raises(DockerUpError, match="cannot work here: runc"):
        build_plan(Config(allow_host_loopback=True, net_accel=True), old, paths())


def test_the_data_root_setting_applies_to_paths_given_or_computed() -> None:
    from pathlib import Path

    config = Config(data_root="/big/disk/docker")
    assert build_plan(config, facts(), paths()).paths.data_root == Path("/big/disk/docker")
    assert build_plan(config, facts()).paths.data_root == Path("/big/disk/docker")


def written(plan: Plan, path: str) -> str:
    """The content the plan writes to this path (fails if it writes nothing there)."""
    (content,) = [f.content for f in plan.files if str(f.path) == path]
    return content


def test_the_data_directory_opens_for_passing_through_only_for_userns_remap() -> None:
    assert build_plan(Config(), facts(), paths()).data_mode == 0o700
    remap = Config(dockerd_args=("--userns-remap=dockremap",))
    assert build_plan(remap, facts(), paths()).data_mode == 0o711
