"""Which bind mounts of a new container get a view, and how bindfs serves one (pure).

docker-up's default user namespace maps the workspace user W to 0 and subordinate ids to the
rest, so the workspace's folders are root's inside it. The Dev Containers CLI gives its
non-root remoteUser the uid W (updateRemoteUserUID, process.getuid() of the CLI): a
subordinate id there, which may not write the folder. In a view, 0 shows as W (and the
user's group G as gid G) and what W creates is stored as 0, the workspace user: the
container's dev writes as the user, and root in the container writes as before."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The label the Dev Containers CLI puts on every container it makes (the folder it opened).
DEVCONTAINER_LABEL = "devcontainer.local_folder"
# Where bindfs finds the folder and mounts the view, in the root of its own it runs in
# (views/serve.py: confine).
SOURCE, VIEW = "/src", "/view"
# A dev container with this label off (devcontainer.json: "runArgs": ["--label",
# "docker-up.views=off"]) keeps its raw bind mounts: the folder at native speed, root's there.
OPT_OUT = "docker-up.views"
# The uid and gid of the workspace user inside docker-up's namespace (the default map).
INSIDE_ROOT = 0


@dataclass(frozen=True)
class Candidate:
    """A bind mount as the probe saw its source: a directory, and whose."""

    is_dir: bool
    uid: int


@dataclass(frozen=True)
class View:
    index: int  # the mount's position in the spec's mounts
    source: str  # the folder itself


def wanted(labels: object) -> bool:
    """Views only for a container the Dev Containers CLI made, unless it says no: every other
    container keeps its raw bind mounts (what its root writes is the user's, as before)."""
    if not isinstance(labels, dict) or DEVCONTAINER_LABEL not in labels:
        return False
    return str(labels.get(OPT_OUT)).lower() not in ("off", "false", "0", "no")


def bind_destinations(config_v2: Mapping[str, Any]) -> set[str]:
    """The destinations of the container's own bind mounts (-v /path:..., --mount
    type=bind), as dockerd records them: not its volumes (also binds in the OCI spec, from
    the data-root) nor dockerd's /etc/hosts and friends (not in MountPoints)."""
    points = config_v2.get("MountPoints")
    if not isinstance(points, dict):
        return set()
    return {
        str(p["Destination"])
        for p in points.values()
        if isinstance(p, dict) and p.get("Type") == "bind" and p.get("Destination")
    }


def sources(mounts: Iterable[object], destinations: set[str]) -> list[tuple[int, str]]:
    """(index, source) of the spec's bind mounts at those destinations."""
    found = []
    for i, m in enumerate(mounts):
        if not isinstance(m, dict) or m.get("destination") not in destinations:
            continue
        if (
            m.get("type") == "bind"
            or "bind" in (m.get("options") or [])
            or "rbind" in (m.get("options") or [])
        ):
            found.append((i, str(m.get("source", ""))))
    return found


def choose(found: list[tuple[int, str]], probed: Mapping[str, Candidate]) -> list[View]:
    """The folders of the workspace user's (0 inside): a file, a socket, a folder of
    another id (a subordinate id's, root's of the host: nobody) keeps its raw bind mount."""
    return [
        View(i, src)
        for i, src in found
        if (c := probed.get(src)) is not None and c.is_dir and c.uid == INSIDE_ROOT
    ]


def bindfs_argv(bindfs: str, uid: int, gid: int, source: str, target: str) -> list[str]:
    """bindfs, as root of docker-up's namespace: --map=0/W shows files of 0 as W's and
    stores what W creates (bindfs creates as the caller when run as root, then maps) or
    chowns to W as 0; the same for the groups. It adds allow_other (the kernel still lets
    no process outside docker-up's user namespace in: the connection belongs to it) and
    default_permissions (the kernel checks each access against the owners and modes the
    view shows, as on any filesystem); nosuid as a bind mount from a container would have."""
    return [
        bindfs,
        "-f",  # in the foreground: the process serve.py started is the one serving
        "-o",
        "nosuid,nodev",
        f"--map={INSIDE_ROOT}/{uid}:@{INSIDE_ROOT}/@{gid}",
        source,
        target,
    ]
