"""The acceleration agent's pure parts: the kernel ABI it packs (accel_kernel), address
parsing and the policy that decides every connect() of a container (accel_policy: a table,
what each case must get), the namespace's networks (accel_nets), and the agent going on
after a failed call (accel, accel_calls)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from dockerup.accel import (
    agent as accel,
)
from dockerup.accel import (
    calls as accel_calls,
)
from dockerup.accel import (
    nets as accel_nets,
)
from dockerup.accel import notify as kernel
from dockerup.accel import (
    policy as accel_policy,
)
from dockerup.accel import (
    support as accel_support,
)
from dockerup.accel.policy import Decision, Verdict
from dockerup.linux import libc as linux


def test_ioctl_numbers_match_linux_seccomp_h() -> None:
    # From <linux/seccomp.h> on x86-64 (SECCOMP_IOWR/SECCOMP_IOW with '!').
    assert kernel.NOTIF.size == 80 and kernel.RESP.size == 24 and kernel.ADDFD.size == 24
    assert kernel.IOCTL_RECV == 0xC0502100
    assert kernel.IOCTL_SEND == 0xC0182101
    assert kernel.IOCTL_ID_VALID == 0x40082102
    assert kernel.IOCTL_ADDFD == 0x40182103


def sockaddr_in(addr: str, port: int, family: int = socket.AF_INET) -> bytes:
    return struct.pack("=H", family) + struct.pack("!H", port) + socket.inet_aton(addr) + b"\0" * 8


SIX = struct.pack("=H", socket.AF_INET6) + b"\0" * 26
UNSPEC = struct.pack("=H", socket.AF_UNSPEC) + b"\0" * 14
UNIX = struct.pack("=H", socket.AF_UNIX) + b"/run/x.sock\0"
NETLINK = struct.pack("=HHII", socket.AF_NETLINK, 0, 0, 0)


def test_parse_inet_reads_only_ipv4() -> None:
    assert accel_policy.parse_inet(sockaddr_in("10.0.2.2", 8080)) == (accel_policy.GATEWAY, 8080)
    assert accel_policy.parse_inet(SIX) is None
    assert accel_policy.parse_inet(b"\x02\x00") is None  # too short to hold an address
    assert accel_policy.parse_inet(sockaddr_in("10.0.2.2", 80)[:12]) is None  # the kernel: EINVAL


ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
tap0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
tap0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-1\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""
NETS = accel_nets.connected_networks(ROUTES)


def test_only_addresses_behind_the_default_route_are_outside() -> None:
    assert len(NETS) == 3  # the default route is not a network of ours

    def out(a: str) -> bool:
        return accel_policy.outside(socket.inet_aton(a), NETS)

    assert out("192.168.88.2") and out("8.8.8.8")
    assert not out("172.17.0.5") and not out("172.18.3.4")  # docker networks
    assert not out("10.0.2.3") and not out("10.0.2.2")  # the helper's own network
    assert not out("127.0.0.1") and not out("0.0.0.0")  # the container's own
    assert not accel_policy.outside(socket.inet_aton("8.8.8.8"), [])  # no table: nothing


PERFORM = Decision(Verdict.perform)
OWN = "192.168.50.1"  # stands for the workspace's eth0 or veth address


def is_own(addr: bytes) -> bool:
    return addr == socket.inet_aton(OWN)


DELEGATE = Decision(Verdict.delegate)


def swap(addr: str, port: int, source: str) -> Decision:
    return Decision(Verdict.swap, (addr, port), source)


# (address copy, host loopback allowed, socket already swapped, fresh TCP socket) -> what
# the agent does. Nothing but a swap ever opens a workspace socket, and a swap only ever
# aims at 127.0.0.1 (from 10.0.2.2, with host loopback allowed) or at an outside address.
TABLE = [
    # The workspace's loopback, as containers see it.
    (sockaddr_in("10.0.2.2", 8080), True, False, True, swap("127.0.0.1", 8080, "127.0.0.1")),
    (sockaddr_in("10.0.2.2", 8080), False, False, True, PERFORM),  # the helper refuses it
    (sockaddr_in("10.0.2.2", 8080), True, False, False, PERFORM),  # bound, UDP...: own path
    # Outside every network of the namespace: through the workspace, with or without loopback.
    (sockaddr_in("192.168.88.2", 7070), False, False, True, swap("192.168.88.2", 7070, "0.0.0.0")),
    (sockaddr_in("192.168.88.2", 7070), True, False, True, swap("192.168.88.2", 7070, "0.0.0.0")),
    # The container's own loopback and networks: its own socket, its own namespace.
    (sockaddr_in("127.0.0.1", 8080), False, False, True, PERFORM),
    (sockaddr_in("127.0.0.1", 8080), True, False, True, PERFORM),
    (sockaddr_in("0.0.0.0", 8080), True, False, True, PERFORM),
    (sockaddr_in("127.1.2.3", 22), True, False, True, PERFORM),
    (sockaddr_in("172.17.0.5", 80), True, False, True, PERFORM),
    (sockaddr_in("10.0.2.3", 53), True, False, True, PERFORM),
    (sockaddr_in("10.0.2.3", 53), False, False, True, PERFORM),  # DNS: the helper's
    (sockaddr_in("10.0.2.77", 80), False, False, True, PERFORM),
    # Link-local (cloud metadata), multicast, reserved: the container's own path.
    (sockaddr_in("169.254.169.254", 80), False, False, True, PERFORM),
    (sockaddr_in("169.254.169.254", 80), True, False, True, PERFORM),
    (sockaddr_in("224.0.0.1", 80), False, False, True, PERFORM),
    (sockaddr_in("255.255.255.255", 80), False, False, True, PERFORM),
    # The workspace's own addresses: refused with host loopback closed, swapped when open.
    (sockaddr_in(OWN, 22), False, False, True, Decision.refuse(errno.ECONNREFUSED)),
    (sockaddr_in(OWN, 22), True, False, True, swap(OWN, 22, "0.0.0.0")),
    (sockaddr_in(OWN, 22), False, False, False, PERFORM),  # UDP, bound: the helper's path
    (SIX, True, False, True, PERFORM),
    (UNSPEC, True, False, True, PERFORM),  # resets the container's own socket
    (b"", True, False, True, PERFORM),  # the kernel answers EINVAL
    (sockaddr_in("10.0.2.2", 80)[:8], True, False, True, PERFORM),  # too short: EINVAL
    # Families whose connect() depends on the caller's root and credentials.
    (UNIX, True, False, False, DELEGATE),
    (NETLINK, True, False, False, DELEGATE),
    # A socket that already lives in the workspace: never re-aimed, never reset.
    (UNSPEC, True, True, False, Decision.refuse(errno.EOPNOTSUPP)),
    (UNSPEC, False, True, False, Decision.refuse(errno.EOPNOTSUPP)),
    (sockaddr_in("127.0.0.1", 8080), False, True, False, Decision.refuse(errno.EISCONN)),
    (sockaddr_in("127.0.0.1", 9999), True, True, False, Decision.refuse(errno.EISCONN)),
    (sockaddr_in("10.0.2.2", 8080), True, True, False, Decision.refuse(errno.EISCONN)),
    (sockaddr_in("192.168.88.2", 7070), True, True, False, Decision.refuse(errno.EISCONN)),
    (UNIX, True, True, False, Decision.refuse(errno.EISCONN)),
    (SIX, True, True, False, Decision.refuse(errno.EISCONN)),
]


@pytest.mark.parametrize(("raw", "loopback", "swapped", "fresh", "expected"), TABLE)
def test_policy(raw: bytes, loopback: bool, swapped: bool, fresh: bool, expected: Decision) -> None:
    got = accel_policy.decide(
        raw,
        allow_host_loopback=loopback,
        swapped=swapped,
        fresh_tcp=fresh,
        nets=lambda: NETS,
        local=is_own,
    )
    assert got == expected


def test_the_workspace_s_own_addresses_are_what_the_kernel_binds() -> None:
    assert accel_nets.workspace_address(socket.inet_aton("127.0.0.1"))
    assert not accel_nets.workspace_address(socket.inet_aton("192.0.2.254"))  # TEST-NET-1


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""


def test_local_addresses_from_fib_trie() -> None:
    assert accel_nets.local_addresses(FIB_TRIE) == {socket.inet_aton("192.0.2.2")}


def test_policy_never_swaps_toward_the_workspace_itself() -> None:
    """Whatever the container asks, a workspace socket is aimed only at 127.0.0.1 from
    10.0.2.2 with loopback allowed, or at an outside address: never at 127/8 or 0/8 as
    asked, nor at the namespace's own networks. The swaps it finds are checked too: a
    policy that never swapped would pass every rule above."""
    swapped: dict[tuple[str, bool], str] = {}
    for a in range(0, 256, 1):
        for addr in (
            f"127.0.0.{a}",
            f"0.0.0.{a}",
            f"{a}.0.0.1",
            f"10.0.2.{a}",
            f"172.17.0.{a}",
            f"169.254.{a}.1",
            f"192.168.50.{a}",
        ):
            for loopback in (True, False):
                d = accel_policy.decide(
                    sockaddr_in(addr, 80),
                    allow_host_loopback=loopback,
                    swapped=False,
                    fresh_tcp=True,
                    nets=lambda: NETS,
                    local=is_own,
                )
                if d.verdict is Verdict.swap:
                    assert d.target is not None
                    ip = d.target[0]
                    swapped[addr, loopback] = ip
                    if ip == "127.0.0.1":
                        assert addr == "10.0.2.2" and loopback
                    else:
                        assert accel_policy.outside(socket.inet_aton(ip), NETS), addr
                        assert loopback or not is_own(socket.inet_aton(ip)), addr
    assert swapped["10.0.2.2", True] == "127.0.0.1"
    assert ("10.0.2.2", False) not in swapped
    assert swapped["1.0.0.1", False] == swapped["1.0.0.1", True] == "1.0.0.1"
    inside = {k for k in swapped if k[0].startswith(("127.", "0.", "172.17.", "10.0.2."))}
    assert inside == {("10.0.2.2", True)}


def test_support_needs_user_notification_cookie_runc_1_1_and_libseccomp_2_5() -> None:
    runc = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nlibseccomp: 2.5.4"
    actions = "kill_process kill_thread trap errno user_notif trace log allow"
    assert accel_support.support_problems(actions, runc, True) == []
    (no_notif,) = accel_support.support_problems("kill_process errno allow", runc, True)
    assert "no seccomp user notification" in no_notif
    (no_cookie,) = accel_support.support_problems(actions, runc, False)
    assert "SO_NETNS_COOKIE" in no_cookie
    old = accel_support.support_problems(actions, "runc version 1.0.3\nlibseccomp: 2.5.1", True)
    assert len(old) == 1 and "runc (1, 0) cannot hand over" in old[0]
    assert (
        "libseccomp (2, 4)"
        in accel_support.support_problems(actions, "runc version 1.1.5\nlibseccomp: 2.4.3", True)[0]
    )


def test_quiet_log_says_the_first_lines_then_counts() -> None:
    lines: list[str] = []
    from dockerup.logs import QuietLog

    q = QuietLog(lines.append, first=3, window=3600, prefix="accel: ")
    for i in range(1000):
        q.say("bad pointer", f"line {i}")
    assert lines == ["accel: line 0", "accel: line 1", "accel: line 2"]
    q.since -= 3601  # a minute (here: an hour) later, one line counts the rest
    q.flush()
    assert lines[-1] == "accel: 997 more 'bad pointer' in the last minute" and len(lines) == 4


def test_status_of_a_thread_gives_its_ids_and_capabilities() -> None:
    from dockerup.accel.creds import parse_status

    text = (
        "Name:\tx\nTgid:\t7\nUid:\t0\t1\t2\t3\nGid:\t4\t5\t6\t7\nGroups:\t10 11 \n"
        "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n"
    )
    st = parse_status(text)
    assert st["Uid"] == [0, 1, 2, 3] and st["Gid"] == [4, 5, 6, 7]
    assert st["Groups"] == [10, 11] and st["CapEff"] == [0xA80425FB] and st["CapInh"] == [0]


def test_the_agent_answers_emfile_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of file descriptors (each call in flight holds a few), a connect() gets EMFILE:
    the agent neither dies nor leaves the caller waiting, and the next call is served."""
    import os
    import socket as socketmod

    a, b = socketmod.socketpair()
    agent = accel.Agent(a, True, lambda _: None, lambda: ROUTES)
    answers: list[tuple[int, int]] = []
    monkeypatch.setattr(agent, "respond", lambda nfd, nid, err: answers.append((nid, err)))
    monkeypatch.setattr(agent, "valid", lambda nfd, nid: None)
    monkeypatch.setattr(accel_calls, "read_memory", lambda tid, ptr, n: sockaddr_in("10.0.2.2", 80))

    def no_fds(tid: int, fd: int) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(accel_calls, "fetch_fd", no_fds)
    agent.dispatch(7, 1, os.getpid(), linux.syscall_number("connect"), [3, 0x1000, 16, 0, 0, 0])
    assert answers == [(1, errno.EMFILE)] and agent.calls == {}
    monkeypatch.setattr(accel_calls, "fetch_fd", lambda tid, fd: os.dup(b.fileno()))
    agent.dispatch(7, 2, os.getpid(), linux.syscall_number("connect"), [3, 0x1000, 16, 0, 0, 0])
    # The next call is served: here refused, as any socket of the workspace's own network
    # namespace is, however a container came by it.
    assert answers[1] == (2, errno.EISCONN)
    a.close()
    b.close()
