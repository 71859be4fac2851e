"""dockerd's own connections through the acceleration agent: the plan, and the seccomp
filter itself (installed for real in a forked child, answered here as the agent would)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import socket

import pytest

from dockerup.accel.daemonfilter import connect_unwatched, install_filter
from dockerup.accel.notify import IOCTL_RECV, IOCTL_SEND, NOTIF, RESP
from dockerup.errors import DockerUpError
from dockerup.linux import libc as linux
from dockerup.plan.build import build_plan
from dockerup.settings.config import Config

from .given import facts, paths

OLD_RUNC = ("runc (1, 0) cannot hand over a seccomp listener (1.1+)",)


def test_on_by_default_wherever_the_agent_works_host_loopback_or_not() -> None:
    plan = build_plan(Config(), facts(), paths())
    assert plan.daemon_accel and plan.agent and plan.accel  # containers' too (issue 27)
    assert plan.child.watch_connects == str(plan.paths.accel_sock)
    off = build_plan(Config(daemon_net_accel=False, net_accel=False), facts(), paths())
    assert not off.daemon_accel and not off.agent and off.child.watch_connects is None
    old = build_plan(Config(), facts(accel_problems=OLD_RUNC), paths())
    assert not old.daemon_accel and old.child.watch_connects is None
    with pytest.raises(DockerUpError, match="--daemon-net-accel cannot work here: runc"):
        build_plan(Config(daemon_net_accel=True), facts(accel_problems=OLD_RUNC), paths())


def test_the_workspaces_loopback_is_a_local_registry_only_when_reachable() -> None:
    def registries(config: Config) -> object:
        return json.loads(build_plan(config, facts(), paths()).daemon_json["overlay2"]).get(
            "insecure-registries"
        )

    assert registries(Config(allow_host_loopback=True)) == ["10.0.2.2/32"]
    assert registries(Config()) is None
    # The user's own list wins (dockerd refuses a flag that daemon.json repeats).
    mine = ("--insecure-registry", "reg.example:5000")
    assert registries(Config(allow_host_loopback=True, dockerd_args=mine)) is None


def notification(nfd: int, timeout: float = 10) -> tuple[int, int]:
    """(id, syscall number) of the next notification."""
    p = select.poll()
    p.register(nfd, select.POLLIN)
    assert p.poll(int(timeout * 1000)), "no notification"
    buf = bytearray(NOTIF.size)
    fcntl.ioctl(nfd, IOCTL_RECV, buf)
    nid, _pid, _flags, nr, *_ = NOTIF.unpack(buf)
    return nid, nr


def test_the_filter_sends_ipv4_connects_to_the_agent_and_nothing_else() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    pid = os.fork()
    if pid == 0:  # the "dockerd": unprivileged, so no_new_privs first
        try:
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            nfd = install_filter()
            socket.send_fds(theirs, [b"dockerd"], [nfd])
            for family, addr in (
                (socket.AF_UNIX, "\0docker-up-test-none"),
                (socket.AF_INET6, ("::1", 9)),
                (socket.AF_INET, ("127.0.0.1", 9)),
            ):
                with socket.socket(family) as s:
                    code = s.connect_ex(addr)
                theirs.sendall(f"{family}:{code}\n".encode())
            # The port proxy's way to a container: a longer address, not selected.
            with socket.socket() as s:
                connect_unwatched(s, server.getsockname(), 5)
                theirs.sendall(f"unwatched:{s.getpeername()[1]}:{s.gettimeout()}\n".encode())
        finally:
            os._exit(0)
    fds: list[int] = []
    try:
        _, fds, _, _ = socket.recv_fds(ours, 100, 1)
        (nfd,) = fds
        f = ours.makefile()
        # Not watched: the kernel answers at once (no listener there, nothing on ::1:9).
        assert f.readline() == f"{socket.AF_UNIX}:{errno.ECONNREFUSED}\n"
        assert f.readline() == f"{socket.AF_INET6}:{errno.ECONNREFUSED}\n"
        # Watched: it waits for the agent, and gets the agent's answer.
        nid, nr = notification(nfd)
        assert nr == linux.syscall_number("connect")
        fcntl.ioctl(nfd, IOCTL_SEND, RESP.pack(nid, -1, -errno.EHOSTUNREACH, 0))
        assert f.readline() == f"{socket.AF_INET}:{errno.EHOSTUNREACH}\n"
        # Connected, blocking again, and never a notification (nobody answers one now).
        assert f.readline() == f"unwatched:{server.getsockname()[1]}:None\n"
    finally:
        os.kill(pid, signal.SIGKILL)  # our own child, by PID: done, or stuck on a failure
        os.waitpid(pid, 0)
        for fd in fds:
            os.close(fd)
        ours.close()
        theirs.close()
        server.close()
