"""Auto ports' inside helper: a process of its own in docker-up's user and network
namespaces (setns must be the first thing a single-threaded process does, so it cannot be
a thread of the keeper). The keeper (autoports/scanner.py) hands it each connection
accepted on the workspace's loopback, the fd itself with the target's address and port; it
connects to the listener inside and moves the bytes with splice(2), with the published
ports' forwarder (portproxy.serve). A UDP port comes as the bound workspace socket and a
stop socket, relayed as published UDP ports are (portproxy.UdpRelay) until the stop
socket's other end closes. Stdlib only: `python -S autoports/inside.py CONN USER NET KEEPER`
(fds; USER -1 when there is no user namespace to enter; KEEPER: the keeper's PID)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING

# This package, without site-packages (python -S): see dockerup/lean.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup.linux import libc as linux

if TYPE_CHECKING:
    from dockerup.wire.messages import OwnersQuery

MAX_MESSAGE = 65536  # a message from the keeper: a Connect, or an OwnersQuery's inodes


def inside(conn_fd: int, user_fd: int, net_fd: int, keeper: int) -> None:
    linux.die_with_parent(signal.SIGKILL, keeper)
    for fd, kind in ((user_fd, linux.CLONE_NEWUSER), (net_fd, linux.CLONE_NEWNET)):
        if fd >= 0:
            try:
                linux.setns(fd, kind)
            except OSError as e:
                sys.exit(f"docker-up auto-ports: {e}")
            os.close(fd)
    from dockerup.ports.proxy import Slots, UdpRelay, serve
    from dockerup.wire.messages import Connect, OwnersQuery

    conn = socket.socket(fileno=conn_fd)
    slots = Slots()
    while True:
        msg, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 2)
        if not msg:
            return  # the keeper went away
        try:
            what = Connect.from_json(msg)
        except ValueError:
            what = None  # not ours to act on: its fds are closed below
            if not fds:
                with contextlib.suppress(ValueError, OSError):
                    answer_owners(conn, OwnersQuery.from_json(msg))
        target = (what.host, what.port) if what else ("", 0)
        if what and what.proto == "udp" and len(fds) == 2:  # [bound socket, stop]
            outside, stop = (socket.socket(fileno=fd) for fd in fds)
            threading.Thread(target=UdpRelay(outside, target, stop).run, daemon=True).start()
            continue
        for fd in fds[1:]:
            os.close(fd)
        if not fds or not what or what.proto != "tcp":
            for fd in fds[:1]:
                os.close(fd)
            continue
        client = socket.socket(fileno=fds[0])  # a TCP client's connection
        if not slots.take():
            client.close()
            continue
        threading.Thread(target=serve, args=(client, target, slots), daemon=True).start()


def answer_owners(conn: socket.socket, query: OwnersQuery) -> None:
    """The processes holding the keeper's sockets, looked up here: under keep-id dockerd
    and its plumbing are a subordinate id, whose /proc/PID/fd only a process with
    capabilities in docker-up's user namespace (this one, not the keeper) may list."""
    from dockerup.autoports.rules import socket_owners
    from dockerup.wire.messages import OwnersAnswer, SocketOwner

    netns = os.stat("/proc/self/ns/net").st_ino
    found = socket_owners(netns, set(query.inodes))
    owners = [
        SocketOwner(inode, o.pid, o.command, o.container, o.own) for inode, o in found.items()
    ]
    conn.send(OwnersAnswer(query.id, owners).to_json().encode())


if __name__ == "__main__":
    inside(*(int(a) for a in sys.argv[1:5]))
