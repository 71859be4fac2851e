"""What the lean programs and the CLI side share: one copy each (stdlib only)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import NoReturn

# Signals that stop docker-up, its keeper and the lazy holder in order.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def tail(path: str | os.PathLike[str], lines: int = 20) -> str:
    """The last lines of a log, for an error message; empty if it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int) -> str:
    """A returncode (negative: the signal that killed it) as words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def describe_status(status: int) -> str:
    """A wait status (os.waitpid) as words."""
    return describe_exit(os.waitstatus_to_exitcode(status))


def log_line(msg: str) -> str:
    """One line of docker-up.log."""
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n"


def append_log(path: str | os.PathLike[str], msg: str) -> None:
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(log_line(msg))


def atomic_write(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> None:
    """Replace a file in one step: readers see the old content or the new, never half.
    The temporary name is docker-up's own, beside the file (same filesystem)."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.docker-up.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def hand_over_socket(listen_fd: int | None, env: dict[str, str]) -> int:
    """Socket activation as systemd does it, for the process about to exec dockerd: the
    listening socket at fd 3, LISTEN_PID naming this process (exec keeps the PID). Returns
    the first fd that is not to be passed on."""
    if listen_fd is None:
        return 3
    os.dup2(listen_fd, 3, inheritable=True)
    env.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    return 4


def exec_dockerd(argv: list[str], env: dict[str, str], listen_fd: int | None) -> NoReturn:
    """Become dockerd: the one way it starts, in the namespace child at first (child.py)
    and in the keeper's fork after each restart (keeper.py), both already in the
    namespaces. exec keeps the PID (socket activation names it); nothing of docker-up's
    (the lock, the child's pipes, the helper's exit pipe, the namespaces' fds) may
    outlive this process inside dockerd."""
    env = dict(env)
    keep = hand_over_socket(listen_fd, env)
    os.closerange(keep, 65536)
    os.execve(argv[0], argv, env)


def start_containerd(argv: list[str], env: dict[str, str], pidfile: str) -> int:
    """containerd, as a child of this process, which is about to become dockerd: it gets
    SIGTERM when dockerd ends (as dockerd's own containerd would), inherits no fd but
    stdin, stdout and stderr, and its pid goes where the keeper looks before a restart."""
    from dockerup.linux import libc as linux

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            linux.die_with_parent(signal.SIGTERM, parent)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    atomic_write(pidfile, str(pid), 0o644)
    return pid


# iptables backends in docker-up's order of preference: legacy deletes a rule in ~2 ms, nft
# waits ~15 ms for the kernel on each (a warm dockerd deletes and re-adds the bridge's).
IPTABLES_BACKENDS = ("legacy", "nft")

# The port forwarders docker-up knows; the first is the default (ports/manager.py).
FORWARDERS = ("splice", "slirp")

# The namespace's addresses: slirp4netns' fixed 10.0.2.0/24 network, which docker-up sets up
# for pasta too. GATEWAY is the workspace as the namespace sees it.
GUEST_ADDR = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
PREFIXLEN = 24
# IPv6, when on: slirp4netns' fd00::/64 (its gateway fd00::2 is the workspace's ::1 when host
# loopback is allowed), set up for pasta too; containers get a ULA network of their own.
GUEST_ADDR6 = "fd00::100"
GATEWAY6 = "fd00::2"
PREFIXLEN6 = 64
CONTAINER_CIDR6 = "fd00:d0c::/64"


def route_rows(route_table: str) -> list[tuple[int, int, int]]:
    """(destination, gateway, mask) of each IPv4 route in a /proc/PID/net/route table, host
    order. The kernel prints each network-order word as a native integer."""
    import socket

    out = []
    for line in route_table.splitlines()[1:]:
        f = line.split()
        if len(f) > 7:
            dest, gw, mask = (socket.ntohl(int(f[i], 16)) for i in (1, 2, 7))
            out.append((dest, gw, mask))
    return out


def routes(route_table: str) -> list[tuple[int, int]]:
    """(destination, mask) of each IPv4 route, host order."""
    return [(dest, mask) for dest, _, mask in route_rows(route_table)]


def ipv6_default_gateways(ipv6_route: str) -> list[str]:
    """Gateways of the usable IPv6 default routes in a /proc/PID/net/ipv6_route table ("::"
    for one without a gateway), compressed. Reject routes (the kernel's unreachable default
    on lo) do not count."""
    out = []
    for line in ipv6_route.splitlines():
        f = line.split()
        if len(f) < 10 or f[0] != "0" * 32 or f[1] != "00" or f[9] == "lo":
            continue
        if int(f[8], 16) & 0x0200:  # RTF_REJECT
            continue
        out.append(ipv6_text(f[4]))
    return out


def ipv6_text(hex32: str) -> str:
    """An address as /proc prints it (32 hex digits) in compressed text. (Not ipaddress:
    its import costs every start about 3 ms.)"""
    import socket

    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex32))


def ipv6_addresses(if_inet6: str) -> list[tuple[str, int, str]]:
    """(address, prefix length, device) of each row of a /proc/PID/net/if_inet6 table."""
    rows = (line.split() for line in if_inet6.splitlines())
    return [(ipv6_text(f[0]), int(f[2], 16), f[5]) for f in rows if len(f) == 6]


def default_gateways(route_table: str) -> list[str]:
    """Gateways of the IPv4 default routes, dotted."""
    import socket
    import struct

    return [
        socket.inet_ntoa(struct.pack("!I", gw))
        for dest, gw, mask in route_rows(route_table)
        if dest == 0 and mask == 0
    ]
