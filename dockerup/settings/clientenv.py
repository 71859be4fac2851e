"""What docker-up exports for the clients beside DOCKER_HOST (pure, stdlib only).

Testcontainers (Java's DockerClientConfigUtils, Go, Node, Python's core/docker_client.py)
decide where a container's mapped port answers from DOCKER_HOST's scheme and /.dockerenv:
with a unix socket inside a container (a dev container, a Docker-based workspace) they dial
the default gateway, or the container network's gateway. Here the daemon's bridge and its
gateway exist only inside docker-up's network namespace; the published ports answer on this
machine's loopback. So the shell that gets DOCKER_HOST also gets the host Testcontainers must
use; Python's library would still pick the container network's gateway for a loopback host
inside a container (its connection mode), hence the mode too.

Only the user's shell gets these. A container that mounts /var/run/docker.sock does not, and
must not: there, the libraries' own choice (the gateway of the container's network, in
docker-up's namespace) is the right one.
"""

from __future__ import annotations

import shlex

TESTCONTAINERS = (
    ("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1"),
    ("TESTCONTAINERS_CONNECTION_MODE", "docker_host"),
)


def export_lines(docker_host: str) -> str:
    """The lines a POSIX shell evals after `docker-up up`: DOCKER_HOST first, alone on its
    line (scripts read it), then the clients' settings."""
    rest = " ".join(f"{k}={shlex.quote(v)}" for k, v in TESTCONTAINERS)
    return f"export DOCKER_HOST={docker_host}\nexport {rest}"


def posix_exports() -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in TESTCONTAINERS]


def fish_exports() -> list[str]:
    return [f"set -gx {k} {v}" for k, v in TESTCONTAINERS]
