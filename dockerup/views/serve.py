"""Serving a view (effects): bindfs mounts it, runc's delete unmounts it.

Run by docker-up's OCI runtime wrapper, as root of docker-up's user namespace, in its mount
namespace: where runc builds the container. Each view is views/CONTAINER/N (the runtime
directory is the user's, 0700; every process outside docker-up's user namespace is refused
by the kernel anyway: the FUSE connection belongs to that namespace).

bindfs works on paths relative to the folder, as it finds them, as root of the namespace: a
link raced into the folder by anyone who writes it raw (another container) would lead it
anywhere the user can reach (measured: a dev container read a 0600 file of the user's outside
the folder). So it runs confined, in a mount namespace of its own whose root holds only the
folder and what its program needs. Debian's bindfs (libfuse 2) mounts the view itself and
takes no FUSE fd: it mounts it inside that root, and a copy of the mount is moved here
(open_tree, move_mount)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import time

from dockerup.linux import libc, procid
from dockerup.views.choose import SOURCE, VIEW, Candidate

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


# What the dynamic loader and bindfs need in bindfs' own root, read-only (links kept as links:
# a merged /usr).
SYSTEM = ("usr", "lib", "lib64", "lib32", "libx32", "bin", "sbin")
MOUNTED_WITHIN = 10.0  # seconds bindfs has to mount the view


def serve(target: str, source: str, argv: list[str]) -> None:
    """Mount the view of source on target (made here, 0700): bindfs, confined to a root of
    its own (confine), mounts it there; a copy of that mount is moved here (open_tree and
    move_mount) and bindfs' own is dropped, so the view lives only where runc needs it and
    ends with its last unmount. Returns once the view is mounted; OSError otherwise (then
    nothing of it is left running)."""
    os.mkdir(target, 0o700)
    root = f"{target}.root"
    os.mkdir(root, 0o700)
    pid = _start(root, source, argv, f"{target}.log")
    try:
        _wait_mounted(pid, f"{target}.log")
        fd = _take_view(pid)
        try:
            libc.attach_mount(fd, target)
        finally:
            os.close(fd)
    except BaseException:
        _end(pid)
        raise


def _start(root: str, source: str, argv: list[str], log: str) -> int:
    """bindfs, confined, as a grandchild (runc replaces this process and exits after
    create; the shim's subreaper adopts it). Its PID."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            child = os.fork()
            if child == 0:
                _confined(root, source, argv, log)
            os.write(write, str(child).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as r:
        said = r.read()
    if not said:
        raise OSError("the view's helper did not start")
    return int(said)


def _confined(root: str, source: str, argv: list[str], log: str) -> None:
    try:
        os.setsid()
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        confine(root, source)
        os.execv(argv[0], argv)
    except BaseException as e:  # a child: it says why and ends, never returns
        with contextlib.suppress(OSError):
            os.write(2, f"docker-up view: {e}\n".encode())
    os._exit(127)


def confine(root: str, source: str) -> None:
    """This process's own mount namespace, every mount in it private (nothing done here
    reaches docker-up's namespace), with root a read-only tmpfs that holds the folder at
    /src, the system directories read-only, /dev/fuse, an empty /view and nothing else:
    any path bindfs follows, a planted link or .. included, resolves there."""
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("tmpfs", root, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0755,size=64k")
    for name in SYSTEM:
        host, here = f"/{name}", os.path.join(root, name)
        if os.path.islink(host):
            os.symlink(os.readlink(host), here)
        elif os.path.isdir(host):
            os.mkdir(here)
            _bind(host, here, readonly=True)
    os.mkdir(root + SOURCE)
    libc.mount(source, root + SOURCE, None, libc.MS_BIND | libc.MS_REC)
    os.mkdir(root + VIEW)
    os.makedirs(os.path.join(root, "dev"))
    open(os.path.join(root, "dev", "fuse"), "w").close()
    _bind("/dev/fuse", os.path.join(root, "dev", "fuse"), readonly=False)
    os.mkdir(os.path.join(root, "etc"))
    # libfuse 2 updates /etc/mtab unless it is a link.
    os.symlink("/proc/self/mounts", os.path.join(root, "etc", "mtab"))
    flags = libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV
    libc.mount("none", root, None, flags)
    os.chdir(root)
    libc.pivot_root(".", ".")
    libc.umount(".", libc.MNT_DETACH)
    os.chdir("/")


def _bind(src: str, dest: str, readonly: bool) -> None:
    libc.mount(src, dest, None, libc.MS_BIND | libc.MS_REC)
    if readonly:
        flags = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY
        libc.mount("none", dest, None, flags)


def _wait_mounted(pid: int, log: str) -> None:
    """Until bindfs has mounted /view in its namespace (its mountinfo says so); OSError if
    it ends or takes too long."""
    deadline = time.monotonic() + MOUNTED_WITHIN
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                lines = f.read().splitlines()
            with open(f"/proc/{pid}/stat") as f:
                dead = procid.state(f.read()) in procid.EXITED
        except OSError:
            dead, lines = True, []
        if any(_is_view(line) for line in lines):
            return
        if dead:
            raise OSError(f"bindfs ended: {_last_line(log)}".rstrip(": "))
        time.sleep(0.01)
    raise OSError(f"bindfs did not mount in {MOUNTED_WITHIN:.0f} s")


def _is_view(line: str) -> bool:
    fields = line.split()
    return len(fields) > 8 and fields[4] == VIEW and " - fuse" in line


def _last_line(log: str) -> str:
    with contextlib.suppress(OSError), open(log, errors="replace") as f:
        return (f.read().strip().splitlines() or [""])[-1]
    return ""


def _take_view(pid: int) -> int:
    """A copy of bindfs' /view, as a detached mount fd; bindfs' own is dropped. Done by a
    child that enters bindfs' mount namespace: this process never leaves its own (runc
    runs from it), and the fd comes back over a socket pair."""
    mine, theirs = socket.socketpair()
    helper = os.fork()
    if helper == 0:
        try:
            mine.close()
            with open(f"/proc/{pid}/ns/mnt") as ns:
                libc.setns(ns.fileno(), libc.CLONE_NEWNS)
            fd = libc.clone_mount(VIEW)
            libc.umount(VIEW, libc.MNT_DETACH)
            socket.send_fds(theirs, [b"v"], [fd])
        except BaseException as e:
            with contextlib.suppress(OSError):
                theirs.sendall(f"!{e}".encode())
        finally:
            os._exit(0)
    theirs.close()
    try:
        msg, fds, _, _ = socket.recv_fds(mine, 4096, 1)
    finally:
        mine.close()
        os.waitpid(helper, 0)
    if not fds:
        raise OSError(f"the view could not be taken: {msg.decode(errors='replace')[1:]}")
    return fds[0]


def _end(pid: int) -> None:
    with contextlib.suppress(OSError):
        fd = os.pidfd_open(pid)
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            os.close(fd)


def clear(views: str) -> None:
    """What is left of every container's views once docker-up's namespace is gone (from
    the keeper, outside it: nothing is mounted there). Empty directories and logs only,
    never a directory with something in it."""
    with contextlib.suppress(OSError):
        for cid in os.listdir(views):
            d = os.path.join(views, cid)
            for name in os.listdir(d):
                path = os.path.join(d, name)
                with contextlib.suppress(OSError):
                    if os.path.isdir(path) and not os.path.islink(path):
                        os.rmdir(path)
                    elif name.endswith(".log"):
                        os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(d)


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
