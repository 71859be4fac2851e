"""The process that becomes dockerd, inside docker-up's new namespaces.

Stdlib only and started with `python -S`: it sits on the start-up path, so it must cost a few
milliseconds, not the ~0.3 s that the CLI's libraries take to import. It talks to the parent
over two pipes, one JSON object per line, and finally execs dockerd, so that dockerd is the
parent's direct child and holds the namespaces (nothing else stays resident).

Steps: unshare user+mount+net -> parent maps ids -> private mounts, /etc and /run copy-up,
sysctls, loopback, storage and iptables probes -> report -> parent says go (slirp4netns is
ready, daemon.json written) -> check the helper's work (namespace/netcheck.py), exec dockerd.
"""

from __future__ import annotations

import time

# CLOCK_MONOTONIC is the same clock in every process: the parent puts these on its timeline.
T_STARTED = time.monotonic()

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from typing import TypeVar

# This package, without site-packages (python -S): see dockerup/lean.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup.linux import libc as linux
from dockerup.namespace import netcheck
from dockerup.namespace.dockerd import exec_dockerd, start_containerd
from dockerup.wire.messages import (
    Failed,
    Go,
    Mapped,
    Prepared,
    Rooted,
    Start,
    Step,
    StepFailed,
    Unshared,
    Verified,
    read_step,
)
from dockerup.wire.specs import ChildSpec, SpecError

T_IMPORTED = time.monotonic()
T = TypeVar("T", bound=Step)

# The names the plan gives the namespaces (ChildSpec.unshare).
NAMESPACES = {"user": linux.CLONE_NEWUSER, "mount": linux.CLONE_NEWNS, "net": linux.CLONE_NEWNET}

# Host /run entries that must not show through the copy-up: things dockerd (or iptables, for
# its lock) creates for itself, which would otherwise point at root-owned host files.
RUN_PRIVATE = {"xtables.lock", "docker", "docker.sock", "docker.pid", "containerd"}
ETC_PRIVATE = {"resolv.conf"}


class ChildError(Exception):
    pass


class Channel:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.r = os.fdopen(rfd, "r", buffering=1)
        self.wfd = wfd

    def send(self, msg: Step) -> None:
        os.write(self.wfd, msg.line())

    def recv(self, kind: type[T]) -> T:
        line = self.r.readline()
        if not line:
            raise ChildError("parent went away")
        try:
            return read_step(line, kind)
        except (SpecError, StepFailed) as e:
            raise ChildError(f"the parent said: {e}") from None


def copy_up(base: str, dirs: list[str], resolv_conf: str | None, run_links: dict[str, str]) -> None:
    """Make /etc and /run writable in this mount namespace without touching the real ones:
    keep the originals reachable by a bind mount, cover the directory with a tmpfs, and put
    back every original entry as a symlink into the bind mount. run_links go into the new
    /run (its tmpfs, so the real /run never sees them)."""
    originals = {}
    for d in dirs:
        ro = os.path.join(base, d.strip("/"))
        os.makedirs(ro, exist_ok=True)
        linux.mount(d, ro, None, linux.MS_BIND | linux.MS_REC)
        originals[d] = ro
    for d, ro in originals.items():
        linux.mount("tmpfs", d, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=755")
        private = RUN_PRIVATE if d == "/run" else ETC_PRIVATE if d == "/etc" else set()
        for entry in os.listdir(ro):
            if entry not in private:
                os.symlink(os.path.join(ro, entry), os.path.join(d, entry))
    if "/run" in originals:
        for name, target in run_links.items():
            os.symlink(target, os.path.join("/run", name))
    if "/etc" in originals and resolv_conf is not None:
        with open("/etc/resolv.conf", "w") as f:
            f.write(resolv_conf)


def own_sysfs(base: str) -> str:
    """Mount a sysfs of this network namespace on /sys and put the host's cgroup tree back
    on /sys/fs/cgroup, as RootlessKit's child does. dockerd sees its own interfaces in
    /sys/class/net, and no /sys/kernel/security: on an AppArmor host (Debian 13) it would
    otherwise try to read and load its docker-default profile there and fail every
    container ("open /sys/kernel/security/apparmor/profiles: permission denied"), a profile
    a user namespace cannot load anyway. Why not, or "" when it worked."""
    keep = os.path.join(base, "sys-fs-cgroup")
    os.makedirs(keep, exist_ok=True)
    linux.mount("/sys/fs/cgroup", keep, None, linux.MS_BIND | linux.MS_REC)
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    try:
        linux.mount("sysfs", "/sys", "sysfs", flags)
    except linux.LinuxError as e:
        # A read-only /sys outside allows only a read-only one here (RootlessKit's fallback).
        try:
            linux.mount("sysfs", "/sys", "sysfs", flags | linux.MS_RDONLY)
        except linux.LinuxError:
            linux.umount(keep, linux.MNT_DETACH)
            return f"the host's /sys stays: {e}"
    linux.mount(keep, "/sys/fs/cgroup", None, linux.MS_MOVE)
    return ""


def set_sysctls(sysctls: dict[str, str]) -> None:
    # /proc/sys/net answers for the network namespace of the process that writes it: ours.
    for key, value in sysctls.items():
        try:
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)
        except OSError as e:
            raise ChildError(f"sysctl {key}={value}: {e.strerror}") from e


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        linux.set_if_flags(s, "lo", linux.if_flags(s, "lo") | linux.IFF_UP)


def probe_overlay(probe_dir: str) -> str | None:
    """Mount a real overlay here: the only reliable answer to whether overlay2 works in this
    user namespace (kernel 5.11+ allows it, some distributions patch it out). Returns the
    reason it failed, or None."""
    shutil.rmtree(probe_dir, ignore_errors=True)
    parts = {n: os.path.join(probe_dir, n) for n in ("lower", "upper", "work", "merged")}
    for p in parts.values():
        os.makedirs(p)
    opts = "lowerdir={lower},upperdir={upper},workdir={work}".format(**parts)
    try:
        for extra in ("", ",userxattr"):
            try:
                linux.mount("overlay", parts["merged"], "overlay", 0, opts + extra)
            except linux.LinuxError as e:
                error = str(e)
                continue
            linux.umount(parts["merged"])
            return None
        return error
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def choose_storage(
    candidates: list[str], probe_dir: str, fuse_overlayfs: str | None
) -> tuple[str, str]:
    reasons = []
    for driver in candidates:
        if driver == "overlay2":
            failed = probe_overlay(probe_dir)
            if failed is None:
                return driver, "overlay mounts in the user namespace"
            reasons.append(f"overlay2: {failed}")
        elif driver == "fuse-overlayfs":
            if not fuse_overlayfs:
                reasons.append("fuse-overlayfs: not installed")
            elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
                reasons.append("fuse-overlayfs: /dev/fuse not accessible")
            else:
                return driver, "; ".join([*reasons, "fuse-overlayfs usable"])
        else:
            return driver, "; ".join([*reasons, f"{driver} chosen"])
    raise ChildError("no storage driver works: " + "; ".join(reasons))


def try_iptables(path: str) -> str | None:
    """Does this iptables work in this network namespace? Why not, or None. (doctor runs
    this very function in a throwaway namespace: `up` and doctor cannot disagree.)"""
    if not os.path.exists(path):
        return f"{path} missing"
    r = subprocess.run([path, "-w", "-t", "nat", "-S"], capture_output=True, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {r.returncode}"
    return None


PROBE = "probe"  # `python -S child.py probe WHAT ARG`: one probe, for doctor


def run_probe(what: str, arg: str) -> None:
    """doctor's way in: the probe `up` runs, in the namespace doctor made (unshare), with
    the answer on stdout ("" for works)."""
    if what == "iptables":
        # A /run of its own, as the copy-up gives dockerd: legacy's lock must be writable.
        linux.mount("tmpfs", "/run", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=755")
        failed = try_iptables(arg)
    else:
        failed = probe_overlay(arg)
    sys.stdout.write(failed or "")


# The mark and routing table that bring replies to the port proxy's transparent sockets.
MARK, TABLE = "0x1d0c", "7436"


def route_back(spec: ChildSpec) -> str:
    """Let the port proxy connect to containers from a remote client's own address: a
    container's reply to that address (its default route leads here) belongs to a local
    transparent socket; mark it and deliver it locally instead of routing it out. Only in
    docker-up's own network namespace. Why not, or "" when it works."""
    marker = spec.transparent_marker
    if marker:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
    if not spec.transparent_ip or not marker:
        return "off"
    why = route_back_family(spec, "4")
    if why:
        return why
    families = ["4"]
    if spec.ipv6:
        # IPv6 clients only: IPv4 ones keep their addresses whatever happens here.
        why6 = route_back_family(spec, "6")
        if why6:
            print(
                f"docker-up: IPv6 clients of published ports show as the proxy: {why6}", flush=True
            )
        else:
            families.append("6")
    # The families that route back: the port proxy reads them (portproxy.from_client).
    with open(marker, "w") as f:
        f.write(" ".join(families) + "\n")
    return ""


def route_back_family(spec: ChildSpec, family: str) -> str:
    assert spec.transparent_ip is not None
    tables = os.path.join(spec.bin_dir, "iptables" if family == "4" else "ip6tables")
    ip = [spec.transparent_ip, f"-{family}"]
    anywhere = "0.0.0.0/0" if family == "4" else "::/0"
    failed = run_all(
        [
            [
                tables,
                "-w",
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-m",
                "socket",
                "--transparent",
                "-j",
                "MARK",
                "--set-mark",
                MARK,
            ],
            [*ip, "rule", "add", "fwmark", MARK, "lookup", TABLE],
            [*ip, "route", "add", "local", anywhere, "dev", "lo", "table", TABLE],
        ]
    )
    return f"IPv{family} {failed[0]}" if failed else ""


def choose_iptables(
    candidates: list[list[str]], bin_dir: str, ipv6: bool = False
) -> tuple[str, str]:
    """Try each backend for real in this namespace (its ip6tables too with IPv6: dockerd
    sets up both); link the first that works into the directory that comes first on
    dockerd's PATH."""
    errors = []
    for name, path in candidates:
        failed = try_iptables(path)
        if failed is None and ipv6:
            six = try_iptables(os.path.join(os.path.dirname(path), f"ip6tables-{name}"))
            failed = None if six is None else f"ip6tables: {six}"
        if failed is not None:
            errors.append(f"{name}: {failed}")
            continue
        os.makedirs(bin_dir, exist_ok=True)
        for tool in ("iptables", "ip6tables"):
            link = os.path.join(bin_dir, tool)
            target = os.path.join(os.path.dirname(path), f"{tool}-{name}")
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
        return name, "; ".join([*errors, f"{name} works"])
    raise ChildError("no iptables backend works in the namespace: " + "; ".join(errors))


def watch_dockerd(agent_socket: str) -> str:
    """dockerd's own IPv4 connects go to the acceleration agent (accel/daemonfilter.py); why not."""
    from dockerup.accel.daemonfilter import watch_connects

    try:
        watch_connects(agent_socket)
    except OSError as e:
        return str(e)
    return ""


def run_all(commands: list[list[str]]) -> list[str]:
    """Run each command in turn; what failed, as problems (stop at the first)."""
    for argv in commands:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            return [f"{' '.join(argv[1:])}: {r.stderr.strip() or r.returncode}"]
    return []


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def take_spec(ch: Channel) -> ChildSpec:
    """The first message is the spec: the child may be started before docker-up has planned
    (its Python start then overlaps the CLI's imports). From here on it writes to the log
    and runs with the environment dockerd will have (the iptables probe uses its PATH)."""
    spec = ch.recv(Start).spec
    log = os.open(spec.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(spec.dockerd.env)
    return spec


def main() -> None:
    if sys.argv[1] == PROBE:
        try:
            run_probe(sys.argv[2], sys.argv[3])
        except (ChildError, OSError) as e:
            sys.stdout.write(str(e))
        return
    ch = Channel(int(sys.argv[1]), int(sys.argv[2]))
    parent = int(sys.argv[3])  # docker-up, which becomes the keeper: dockerd's parent
    try:
        spec = take_spec(ch)
        t_spec = time.monotonic()
    except ChildError:
        sys.exit(1)  # the parent gave up before planning, or died: nothing to report to
    try:
        flags = 0
        for ns in spec.unshare:
            flags |= NAMESPACES[ns]
        linux.unshare(flags)
        ch.send(Unshared(T_STARTED, T_IMPORTED, t_spec))
        ch.recv(Mapped)  # the ids are mapped: from here on this process is root in it
        if spec.become_root:  # keep-id: it is the user's own id there until it changes
            linux.become_root()
            ch.send(Rooted())
        os.chdir("/")
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        if spec.copyup:
            copy_up(spec.copyup_base, spec.copyup, spec.resolv_conf, spec.run_links)
        if spec.sysfs and (why := own_sysfs(spec.copyup_base)):
            print(f"docker-up: {why}", flush=True)
        set_sysctls(spec.sysctls)
        if spec.loopback:
            loopback_up()
        storage, storage_reason = choose_storage(
            spec.storage_candidates, spec.storage_probe_dir, spec.fuse_overlayfs
        )
        iptables, iptables_reason = choose_iptables(spec.iptables, spec.bin_dir, spec.ipv6)
        client_address = route_back(spec)
        # Shared again, as dockerd expects (rshared/rslave binds need the source's mount to
        # be shared). Everything was made private above, so these peer groups are new and
        # live in this namespace only: nothing propagates to or from the workspace.
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_SHARED)
        # containerd boots while the network helper comes up and dockerd starts.
        start_containerd(spec.containerd.argv, spec.containerd.env, spec.containerd_pidfile)
    except (ChildError, OSError) as e:
        ch.send(Failed(str(e)))
        sys.exit(1)
    ch.send(Prepared(storage, storage_reason, iptables, iptables_reason, client_address))
    try:
        ch.recv(Go)
    except ChildError:
        sys.exit(1)  # the parent gave up (it reports why)
    # The helper is ready (the parent said go): check its work before dockerd relies on it.
    found = run_all(spec.ipv6_commands)
    if spec.verify and not found:
        found = netcheck.problems(
            spec.verify,
            read("/proc/net/route"),
            *(read(f"/proc/net/{t}") for t in ("if_inet6", "ipv6_route") if spec.ipv6),
        )
    watch = watch_dockerd(spec.watch_connects) if spec.watch_connects and not found else ""
    ch.send(Verified(ok=not found and not watch, problems=found, watch=watch))
    if found or watch:
        sys.exit(1)
    # dockerd gets SIGTERM if docker-up dies without stopping it (kill -9): no orphan daemon.
    linux.die_with_parent(signal.SIGTERM, parent)
    exec_dockerd(spec.dockerd.argv, spec.dockerd.env, spec.listen_fd)


if __name__ == "__main__":
    main()
