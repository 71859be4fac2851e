"""Joining docker-up's namespaces and nesting a user namespace inside them (for `run`).

Python 3.11 has neither os.setns nor os.unshare: libc's, through linux/libc.py. Kernel
rules that shape the order of things (user_namespaces(7), setns(2)):
- setns into a user namespace needs a single-threaded caller, and gives every capability
  there; the mount and network namespaces are joined after it, with those capabilities.
- Joining a mount namespace resets the working directory to its root: the caller's directory
  is entered again by its path afterwards.
- A process may map only its own id into a user namespace it made, and only with setgroups
  denied; any wider map must be written by a process in the parent namespace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dockerup import proc
from dockerup.errors import DockerUpError
from dockerup.linux import libc as linux


def open_namespaces(pid: int, kinds: Sequence[str]) -> list[tuple[str, int]]:
    """The namespace files of a process, opened now (before anything is joined: /proc is
    the workspace's until the mount namespace changes)."""
    fds = []
    try:
        for kind in kinds:
            fds.append((kind, os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as e:
        for _, fd in fds:
            os.close(fd)
        raise DockerUpError(
            f"cannot open docker-up's namespaces (/proc/{pid}/ns): {e.strerror}",
            hint="is docker-up restarting? see docker-up status",
        ) from e
    return fds


def join(fds: list[tuple[str, int]]) -> None:
    for kind, fd in fds:
        try:
            linux.setns(fd, linux.NAMESPACES[kind], f"joining docker-up's {kind} namespace")
        except linux.LinuxError as e:
            raise DockerUpError(str(e)) from e
        os.close(fd)


def become_root() -> None:
    """Root in the user namespace just joined (userns keep-id, where the user is itself)."""
    try:
        linux.become_root()
    except OSError as e:
        raise DockerUpError(f"becoming root in docker-up's namespace: {e.strerror}") from e


def nest_own_ids(inner_uid: int, inner_gid: int) -> None:
    """A new user namespace where this process's own ids (root's in docker-up's namespace)
    are inner_uid/inner_gid: not root, so no capability survives the exec, and none reaches
    the namespaces docker-up's user namespace owns."""
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    _new_userns()
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{inner_uid} {outer_uid} 1\n")
    _write("/proc/self/gid_map", f"{inner_gid} {outer_gid} 1\n")


def identity_map(current: str) -> str:
    """Every id of the current user namespace mapped to itself (pure; current is a
    /proc/self/uid_map or gid_map, "inside outside count" per line)."""
    lines = [line.split() for line in current.splitlines() if line.strip()]
    return "".join(f"{inside} {inside} {count}\n" for inside, _, count in lines)


def nest_identity() -> None:
    """A new user namespace that maps every id to itself: root stays root for every file,
    but has no capability over the namespaces its parent owns (docker-up's). A forked
    helper, still in the parent namespace, writes the maps (see the module's docstring)."""
    maps = {k: identity_map(_read(f"/proc/self/{k}_map")) for k in ("uid", "gid")}
    me = os.getpid()
    r, w = os.pipe()

    def write_maps() -> None:
        os.close(w)
        if os.read(r, 1) != b"u":  # the parent went away before unsharing
            raise OSError("no go")
        for kind, text in maps.items():
            _write(f"/proc/{me}/{kind}_map", text)

    pid = proc.forked(write_maps)
    os.close(r)
    try:
        _new_userns()
        os.write(w, b"u")
    finally:
        os.close(w)
        status = os.waitpid(pid, 0)[1]
    if status != 0:
        raise DockerUpError("mapping ids into the program's user namespace failed")


def _new_userns() -> None:
    try:
        linux.unshare(linux.CLONE_NEWUSER, "creating the user namespace for the program")
    except linux.LinuxError as e:
        raise DockerUpError(str(e)) from e


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise DockerUpError(f"writing {path}: {e.strerror}") from e
