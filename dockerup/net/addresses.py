"""The addresses of docker-up's network namespace, which every network driver sets up alike
(stdlib only, pure data: the lean programs read them too)."""

from __future__ import annotations

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
