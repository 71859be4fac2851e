"""The core path, for real: namespaces, the network helper, dockerd, containers, as the test
user. Tests that take `net` run once per network driver (slirp4netns, pasta)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .harness import (
    DockerUp,
    Workspace,
    nc_read,
    pid_alive,
    reach_host_loopback,
    up,
    wait_for,
)


def assert_all_gone(s: DockerUp) -> None:
    wait_for(lambda: not s.leftovers(), 30, f"the stack's processes to exit: {s.leftovers()}")
    sock = s.ws.runtime_dir / "docker-up" / "docker.sock"
    assert not sock.exists(), "socket left behind"
    assert not (s.ws.runtime_dir / "docker-up" / "dockerd.pid").exists()


def test_run_build_stop_restart_keeps_image(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, net: str
) -> None:
    s = up(workspace, started)
    assert s.state["net"] == net
    assert s.docker_host == f"unix://{workspace.runtime_dir}/docker-up/docker.sock"
    workspace.docker("import", str(busybox_tar), "bb:test")
    r = workspace.docker("run", "--rm", "bb:test", "echo", "hi from a container")
    assert r.stdout.strip() == "hi from a container"

    # Files owned by many uids unpack and stay theirs: the subordinate range is mapped.
    r = workspace.docker(
        "run",
        "--rm",
        "bb:test",
        "sh",
        "-c",
        "touch /tmp/f && chown 1234:4321 /tmp/f && stat -c %u:%g /tmp/f",
    )
    assert r.stdout.strip() == "1234:4321"

    ctx = workspace.root / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        'FROM bb:test\nRUN echo built-here > /built\nCMD ["cat", "/built"]\n'
    )
    os.chmod(ctx, 0o755)
    workspace.docker("build", "-q", "-t", "bb:built", str(ctx))
    assert workspace.docker("run", "--rm", "bb:built").stdout.strip() == "built-here"

    assert s.stop() == 0
    assert_all_gone(s)

    s2 = up(workspace, started)
    images = workspace.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "bb:test" in images and "bb:built" in images
    assert s2.stop(signal.SIGTERM) == 0
    assert_all_gone(s2)


def test_stop_during_a_running_container_leaves_nothing(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, net: str
) -> None:
    s = up(workspace, started)
    workspace.docker("import", str(busybox_tar), "bb:test")
    cid = workspace.docker(
        "run", "-d", "bb:test", "sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"
    ).stdout.strip()
    assert cid
    # The container's processes live in the daemon's namespaces too; all of it must go.
    assert len(s.leftovers()) >= 4  # dockerd, containerd, shim, sleep (+ slirp4netns)
    assert s.stop() == 0
    assert_all_gone(s)


# The client keeps its end open a moment: Debian 12's pasta loses the server's FIN about half
# the time when both ends close at once (docs/performance.md), and nc would wait forever.
# timeout is not PID 1 here, so it can end nc.


def via_host_gateway(ws: Workspace, port: int) -> tuple[str, str]:
    """(the address host.docker.internal got, what a connection to it read)."""
    connect = nc_read("host.docker.internal", port)
    script = f"grep host.docker.internal /etc/hosts | cut -f1; {connect}"
    r = ws.docker(
        "run",
        "--rm",
        "--add-host",
        "host.docker.internal:host-gateway",
        "bb:test",
        "sh",
        "-c",
        script,
        check=False,
    )
    lines = r.stdout.split()
    return (lines[0] if lines else ""), " ".join(lines[1:])


def test_host_loopback_blocked_by_default(
    workspace: Workspace,
    started: list[DockerUp],
    busybox_tar: Path,
    loopback_server: int,
    net: str,
) -> None:
    up(workspace, started)
    workspace.docker("import", str(busybox_tar), "bb:test")
    assert reach_host_loopback(workspace, loopback_server) == ""
    # host-gateway names the workspace's address, which stays closed.
    assert via_host_gateway(workspace, loopback_server) == ("10.0.2.2", "")


def test_host_loopback_allowed_by_option(
    workspace: Workspace,
    started: list[DockerUp],
    busybox_tar: Path,
    loopback_server: int,
    net: str,
) -> None:
    # Without the acceleration (on by default with host loopback): the driver's own path.
    up(workspace, started, "--allow-host-loopback", "--no-net-accel")
    workspace.docker("import", str(busybox_tar), "bb:test")
    assert reach_host_loopback(workspace, loopback_server) == "hello"
    # --add-host host.docker.internal:host-gateway reaches it too (Docker Desktop's name).
    assert via_host_gateway(workspace, loopback_server) == ("10.0.2.2", "hello")


def test_second_instance_does_not_disturb_the_first(
    workspace: Workspace, started: list[DockerUp]
) -> None:
    s = up(workspace, started)
    r = workspace.docker_up(timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"export DOCKER_HOST={s.docker_host}" in r.stdout
    assert "already running" in r.stderr
    assert len(s.pids()) == 2, s.state  # dockerd's and the network helper's
    assert all(pid_alive(p) for p in s.pids())
    assert workspace.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert s.stop() == 0
    assert_all_gone(s)


def test_namespace_is_wired_as_planned(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path, net: str
) -> None:
    s = up(workspace, started, "--mtu", "9000")
    assert s.state["mtu"] == 9000
    assert s.state["storage"] == "overlay2"  # kernel 6.18 mounts overlay in a user namespace
    expected = "sandbox" if net == "slirp4netns" else "no-map-gw"
    assert expected in s.state["net_options"]  # type: ignore[operator]
    workspace.docker("import", str(busybox_tar), "bb:test")
    # The bridge MTU follows the tap device's, and DNS points at the helper's forwarder.
    r = workspace.docker(
        "run", "--rm", "bb:test", "sh", "-c", "cat /sys/class/net/eth0/mtu; cat /etc/resolv.conf"
    )
    assert r.stdout.split()[0] == "9000"
    assert "nameserver 10.0.2.3" in r.stdout
    # Container defaults come through docker-up's runtime: a capped TCP send buffer, unless
    # the container sets its own; a container in dockerd's namespace gets no net sysctl.
    wmem = "cat /proc/sys/net/ipv4/tcp_wmem"
    assert workspace.docker("run", "--rm", "bb:test", "sh", "-c", wmem).stdout.split() == [
        "4096",
        "16384",
        "131072",
    ]
    own = workspace.docker(
        "run", "--rm", "--sysctl", "net.ipv4.tcp_wmem=4096 16384 65536", "bb:test", "sh", "-c", wmem
    )
    assert own.stdout.split()[-1] == "65536"
    host = workspace.docker("run", "--rm", "--network", "host", "bb:test", "sh", "-c", wmem)
    assert host.stdout.split()[-1] == "131072"  # dockerd's namespace has the same cap
    info = workspace.docker("info", "--format", "{{.DefaultRuntime}}")
    assert info.stdout.strip() == "docker-up"
    # The namespace's own /etc (a copy-up) names the helper's DNS; the workspace's does not.
    inside = workspace.docker_up("exec", "--", "cat", "/etc/resolv.conf")
    assert "nameserver 10.0.2.3" in inside.stdout, inside.stdout + inside.stderr
    assert s.stop() == 0


def test_killed_docker_up_takes_its_stack_with_it(
    workspace: Workspace, started: list[DockerUp], net: str
) -> None:
    """kill -9 of docker-up itself: slirp4netns sees its exit fd close, pasta and dockerd get
    their parent-death signal; the next start finds only stale files."""
    s = up(workspace, started)
    helper = s.state["net_pid"]
    assert isinstance(helper, int) and pid_alive(helper)
    os.kill(s.p.pid, signal.SIGKILL)
    s.p.wait(10)
    wait_for(lambda: not s.leftovers(), 40, f"{net} and dockerd to follow docker-up")
    assert not pid_alive(helper)
    s2 = up(workspace, started)
    assert workspace.docker("info", "--format", "{{.ServerVersion}}").stdout.strip()
    assert s2.stop() == 0
    assert_all_gone(s2)


def test_resident_docker_up_is_the_lean_keeper(
    workspace: Workspace, started: list[DockerUp]
) -> None:
    """Once ready, docker-up has exec'd its stdlib-only keeper: same PID, no heavy modules."""
    s = up(workspace, started)
    # The export line is printed just before the exec: wait for it to happen.
    cmdline = Path(f"/proc/{s.p.pid}/cmdline")
    wait_for(lambda: b"keeper/resident.py" in cmdline.read_bytes(), 10, "the exec of the keeper")
    argv = cmdline.read_bytes().split(b"\0")
    assert argv[1] == b"-S" and argv[2].endswith(b"keeper/resident.py")
    # The docker SDK pulls in requests and ssl: none of that may stay mapped.
    maps = Path(f"/proc/{s.p.pid}/maps").read_text()
    assert "libssl" not in maps and "site-packages/yaml" not in maps
    assert s.stop() == 0
    assert_all_gone(s)


def test_shared_bind_propagation_stays_inside(
    workspace: Workspace, started: list[DockerUp], busybox_tar: Path
) -> None:
    """rshared and rslave binds (docker-py's test_create_with_binds_rw_rshared) need the
    source to be a shared mount in dockerd's namespace; the workspace's own mounts must
    not change for it."""
    before = mounts_docker_up_could_touch(workspace.root)
    up(workspace, started)
    workspace.docker("import", str(busybox_tar), "bb:test")
    src = workspace.root / "shared-src"
    src.mkdir()
    (src / "f").write_text("seen\n")
    os.chmod(src, 0o755)
    os.chmod(src / "f", 0o644)
    for mode in ("rshared", "rslave"):
        r = workspace.docker(
            "run", "--rm", "-v", f"{src}:/mnt:{mode}", "bb:test", "cat", "/mnt/f", check=False
        )
        assert r.returncode == 0 and r.stdout == "seen\n", (mode, r.stderr)
    assert mounts_docker_up_could_touch(workspace.root) == before


# Where docker-up's namespace mounts (its copy-up, /run, /sys and cgroups, containers' /proc)
# and what holds the workspace: a mount that propagated out would show there.
MOUNTED_OVER = {"/", "/etc", "/run", "/var/run", "/sys", "/sys/fs/cgroup", "/proc", "/tmp", "/dev"}


def mounts_docker_up_could_touch(root: Path) -> list[str]:
    """The workspace's mountinfo lines at those places and under the test's directory (its
    data-root and runtime dir). Not the whole table: the machine's mount namespace is
    shared, and a debootstrap beside the suite (scripts/vm's, another developer's) mounts
    /proc and /sys in its target while this test runs."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    under = f"{root}/"
    return [
        line
        for line in lines
        if (point := line.split()[4]) in MOUNTED_OVER or f"{point}/".startswith(under)
    ]
