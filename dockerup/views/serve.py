"""Serving a view (effects): bindfs mounts it, runc's delete unmounts it.

Run by docker-up's OCI runtime wrapper, as root of docker-up's user namespace, in its mount
namespace: where runc builds the container. Each view is views/CONTAINER/N (the runtime
directory is the user's, 0700; every process outside docker-up's user namespace is refused
by the kernel anyway: the FUSE connection belongs to that namespace).

bindfs (libfuse 2 on Debian 12 and 13) mounts the view itself, so it runs here, in this mount
namespace; it works on paths relative to the folder (README: the trade-offs)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess

from dockerup.linux import libc
from dockerup.views.choose import Candidate

# runc's rule for a container ID: the only names this module joins into a path.
CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def probe(sources: list[str]) -> dict[str, Candidate]:
    """Each source as runc will see it (symlinks followed); one that cannot be read is
    left out, and keeps its raw bind mount."""
    found = {}
    for src in sources:
        with contextlib.suppress(OSError):
            st = os.stat(src)
            found[src] = Candidate(is_dir=stat.S_ISDIR(st.st_mode), uid=st.st_uid)
    return found


def container_dir(views: str, cid: str) -> str:
    if not CONTAINER_ID.match(cid):
        raise ValueError(f"not a container ID: {cid!r}")
    return os.path.join(views, cid)


def make_private(views: str) -> None:
    """The views' directory, 0700 and the user's (the runtime directory above it is too):
    another local user reaches no view through it."""
    os.makedirs(views, 0o700, exist_ok=True)
    os.chmod(views, 0o700)


def serve(target: str, argv: list[str]) -> None:
    """Mount the view of source on target (made here, 0700): bindfs mounts it, then goes
    to the background (adopted by the shim's subreaper: runc replaces this process and
    exits after create). Returns once it is mounted; OSError otherwise."""
    os.mkdir(target, 0o700)
    log = f"{target}.log"
    with open(log, "ab") as out:
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=20
            )
        except subprocess.TimeoutExpired as e:
            raise OSError(f"bindfs did not mount in {e.timeout} s") from None
    if done.returncode != 0:
        with contextlib.suppress(OSError):
            os.rmdir(target)
        with open(log, errors="replace") as said:
            last = (said.read().strip().splitlines() or [""])[-1]
        raise OSError(f"bindfs exited with status {done.returncode}: {last}".rstrip(": "))


def remove(views: str, cid: str) -> None:
    """Unmount and remove every view of the container (at runc's delete): lazily, as the
    container's own mount may still hold one. bindfs ends when the last mount goes."""
    d = container_dir(views, cid)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for name in sorted(names):
        path = os.path.join(d, name)
        if name.isdigit():
            with contextlib.suppress(OSError):
                libc.umount(path, libc.MNT_DETACH)
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                os.rmdir(path)
            else:
                os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(d)
