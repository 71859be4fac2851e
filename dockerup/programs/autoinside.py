"""Auto ports' inside helper: a process of its own in docker-up's user and network
namespaces (setns must be the first thing a single-threaded process does, so it cannot be
a thread of the keeper). The keeper (programs/autoports.py) hands it each connection
accepted on the workspace's loopback, the fd itself with the target's address and port; it
connects to the listener inside and moves the bytes with splice(2), with the published
ports' forwarder (portproxy.serve). A UDP port comes as the bound workspace socket and a
stop socket, relayed as published UDP ports are (portproxy.UdpRelay) until the stop
socket's other end closes. Stdlib only: `python -S autoinside.py CONN USER NET`
(fds; USER -1 when there is no user namespace to enter)."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

# This package, without site-packages (python -S): see dockerup/programs/__init__.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG = 1


def inside(conn_fd: int, user_fd: int, net_fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, 9)
    for fd, kind in ((user_fd, CLONE_NEWUSER), (net_fd, CLONE_NEWNET)):
        if fd >= 0 and libc.setns(fd, kind) != 0:
            sys.exit(f"docker-up auto-ports: setns: {os.strerror(ctypes.get_errno())}")
        if fd >= 0:
            os.close(fd)
    from dockerup.programs.messages import Connect
    from dockerup.programs.portproxy import Slots, UdpRelay, serve

    conn = socket.socket(fileno=conn_fd)
    slots = Slots()
    while True:
        msg, fds, _, _ = socket.recv_fds(conn, 512, 2)
        if not msg:
            return  # the keeper went away
        try:
            what = Connect.from_json(msg)
        except ValueError:
            what = None  # not ours to act on: its fds are closed below
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


if __name__ == "__main__":
    inside(*(int(a) for a in sys.argv[1:4]))
