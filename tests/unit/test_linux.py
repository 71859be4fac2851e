"""linux/libc.py, the one owner of Linux's ABI: its calls fail as LinuxError with the
call and the errno named, and what they read is what the kernel says."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dockerup.linux import libc as linux

PR_GET_PDEATHSIG = 2
IFF_LOOPBACK = 0x8


def test_a_failed_call_names_itself_and_its_errno() -> None:
    with pytest.raises(linux.LinuxError) as caught:
        linux.setns(-1, linux.CLONE_NEWNET, "joining docker-up's net namespace")
    e = caught.value
    assert isinstance(e, OSError) and e.errno == errno.EBADF
    assert str(e) == "joining docker-up's net namespace: Bad file descriptor (errno EBADF)"


def test_check_passes_results_through_and_reads_errno_on_failure() -> None:
    assert linux.check(7, "read") == 7
    ctypes.set_errno(errno.EAGAIN)
    with pytest.raises(linux.LinuxError, match=r"^read: .* \(errno EAGAIN\)$"):
        linux.check(-1, "read")


def test_unshare_refuses_what_is_no_namespace() -> None:
    # CSIGNAL's bits are clone()'s alone: unshare(2) says EINVAL, and nothing changes.
    with pytest.raises(linux.LinuxError, match=r"^unshare: .*EINVAL"):
        linux.unshare(0x1)


def test_umount_names_its_target(tmp_path: Path) -> None:
    with pytest.raises(linux.LinuxError, match=f"^umount {tmp_path}: "):
        linux.umount(str(tmp_path))  # not a mount point: EINVAL (root) or EPERM


def test_every_namespace_kind_is_a_proc_ns_name() -> None:
    assert set(linux.NAMESPACES) <= set(os.listdir("/proc/self/ns"))
    assert next(iter(linux.NAMESPACES)) == "user"  # joined first: it gives the capabilities


def forked(body: object) -> int:
    """The exit code of a child that runs body (a callable returning an int)."""
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            code = body()  # type: ignore[operator]
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    assert os.WIFEXITED(status), status
    return os.WEXITSTATUS(status)


def test_die_with_parent_sets_the_death_signal() -> None:
    parent = os.getpid()

    def body() -> int:
        linux.die_with_parent(signal.SIGUSR1, parent)
        sig = ctypes.c_int(0)
        linux.check(linux.libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(sig)), "prctl")
        return sig.value

    assert forked(body) == signal.SIGUSR1


def test_die_with_parent_ends_the_child_when_its_parent_ends() -> None:
    """A middle process starts a child that asks for SIGKILL, then exits: the child goes
    (its end of the pipe closes) instead of sleeping its 60 s."""
    r, w = os.pipe()

    def middle() -> int:
        os.close(r)
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        if os.fork() == 0:
            try:
                linux.die_with_parent(signal.SIGKILL, parent)
                os.write(ready_w, b"r")
                select.select([], [], [], 60)
            finally:
                os._exit(0)
        os.read(ready_r, 1)
        return 0

    assert forked(middle) == 0
    os.close(w)
    try:
        assert select.select([r], [], [], 10)[0] == [r], "the child outlived its parent"
        assert os.read(r, 1) == b""
    finally:
        os.close(r)


def test_loopback_reads_as_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert linux.if_flags(s, "lo") & IFF_LOOPBACK
        mtu = struct.unpack_from("i", linux.ifreq(s, linux.SIOCGIFMTU, "lo"), 16)[0]
        assert mtu > 0
        with pytest.raises(OSError) as caught:
            linux.if_flags(s, "docker-up-none")
        assert caught.value.errno == errno.ENODEV


def test_an_unknown_machine_has_no_syscall_numbers_and_says_why() -> None:
    assert linux.machine_problem("x86_64") is None
    assert linux.machine_problem("aarch64") is None
    assert linux.machine_problem("riscv64") == (
        "docker-up knows no syscall numbers for this machine (riscv64)"
    )


def test_on_an_unknown_machine_the_port_proxy_loads_and_accel_is_off_with_its_reason() -> None:
    """The seccomp filter's and capset's numbers were looked up at import for x86_64 and
    aarch64 only: on any other machine the port proxy (which imports the filter's module)
    raised KeyError, so `docker run -p` failed. Played in a fresh interpreter whose
    os.uname() names another machine."""
    code = """
import os, sys
real = os.uname()
fake = os.uname_result((real.sysname, real.nodename, real.release, real.version, "riscv64"))
os.uname = lambda: fake
import dockerup.ports.proxy, dockerup.accel.creds, dockerup.accel.daemonfilter
from dockerup.accel.support import support_problems
from dockerup.linux.libc import machine_problem
actions = "kill_process user_notif errno allow"
runc = "runc version 1.1.5\\nlibseccomp: 2.5.4"
print(support_problems(actions, runc, True, machine_problem())[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "docker-up knows no syscall numbers for this machine (riscv64)"
