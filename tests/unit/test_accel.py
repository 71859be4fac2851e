"""The acceleration agent's pure parts: the kernel ABI it packs, and address parsing."""

from __future__ import annotations

import socket
import struct

from dockerup import accel


def test_ioctl_numbers_match_linux_seccomp_h() -> None:
    # From <linux/seccomp.h> on x86-64 (SECCOMP_IOWR/SECCOMP_IOW with '!').
    assert accel.NOTIF.size == 80 and accel.RESP.size == 24 and accel.ADDFD.size == 24
    assert accel.IOCTL_RECV == 0xC0502100
    assert accel.IOCTL_SEND == 0xC0182101
    assert accel.IOCTL_ID_VALID == 0x40082102
    assert accel.IOCTL_ADDFD == 0x40182103


def sockaddr_in(addr: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \
        socket.inet_aton(addr) + b"\0" * 8  # fmt: skip


def test_parse_inet_reads_only_ipv4() -> None:
    assert accel.parse_inet(sockaddr_in("10.0.2.2", 8080)) == (accel.GATEWAY, 8080)
    six = struct.pack("=H", socket.AF_INET6) + b"\0" * 26
    assert accel.parse_inet(six) is None
    assert accel.parse_inet(b"\x02\x00") is None  # too short to hold an address


ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
tap0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
tap0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-1\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def test_only_addresses_behind_the_default_route_are_outside() -> None:
    nets = accel.connected_networks(ROUTES)
    assert len(nets) == 3  # the default route is not a network of ours

    def out(a: str) -> bool:
        return accel.outside(socket.inet_aton(a), nets)

    assert out("192.168.88.2") and out("8.8.8.8")
    assert not out("172.17.0.5") and not out("172.18.3.4")  # docker networks
    assert not out("10.0.2.3") and not out("10.0.2.2")  # the helper's own network
    assert not out("127.0.0.1") and not out("0.0.0.0")  # the container's own
    assert not accel.outside(socket.inet_aton("8.8.8.8"), [])  # no table: nothing


def test_support_needs_user_notification_runc_1_1_and_libseccomp_2_5() -> None:
    runc = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nlibseccomp: 2.5.4"
    actions = "kill_process kill_thread trap errno user_notif trace log allow"
    assert accel.support_problems(actions, runc) == []
    (no_notif,) = accel.support_problems("kill_process errno allow", runc)
    assert "no seccomp user notification" in no_notif
    old = accel.support_problems(actions, "runc version 1.0.3\nlibseccomp: 2.5.1")
    assert len(old) == 1 and "runc (1, 0) cannot hand over" in old[0]
    assert (
        "libseccomp (2, 4)"
        in accel.support_problems(actions, "runc version 1.1.5\nlibseccomp: 2.4.3")[0]
    )
