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
