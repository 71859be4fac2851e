"""docker-up's OCI runtime: runc, with docker-up's defaults added to each new container's spec.

dockerd 20.10 has no default sysctls for containers, but every container passes through
its runtime. daemon.runtime_script() is the runtime dockerd calls: a shell script that
execs runc directly for every command except `create`, which comes here first. Here the
bundle's config.json gets the sysctls a container did not set itself and, with --net-accel,
a seccomp listener for connect() (unless its label docker-up.net-accel=off says no) and, for
a dev container, views of the workspace's folders (dockerup/views, unmounted again at
`delete`, the other command that comes here when views are on); then runc runs.

Where docker-up pinned the cgroup driver and a limit cannot apply (dockerup/plan/cgroups.py),
a container that asks for it (--memory, --cpus, --pids-limit ...) is refused here, with why
and the fix: dockerd itself would drop the limit without a word (moby's withRootless).

Stdlib only, run as `python -S` (a few milliseconds, once per container). A default must
never keep a container from starting: any problem here leaves the spec as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

# This package, without site-packages (python -S): see dockerup/lean.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup.files import atomic_write
from dockerup.views import choose
from dockerup.wire.specs import RuntimeSpec


def adjust_spec(spec: dict[str, Any], sysctls: dict[str, str]) -> bool:
    """Add the sysctls the container did not set. Only for a container with a network
    namespace of its own: one that shares another's (--network host or container:X) must
    not change that one's settings. True if the spec changed."""
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return False
    if not _own_netns(linux):
        return False
    current = linux.get("sysctl") or {}
    missing = {k: v for k, v in sysctls.items() if k not in current}
    if not missing:
        return False
    linux["sysctl"] = {**current, **missing}
    return True


# The calls the acceleration agent (dockerup/accel/agent.py) is asked about.
NOTIFIED = ("connect",)
# io_uring runs socket operations (connect among them) without passing seccomp: in a
# container whose connect() the agent judges, a ring could reset a socket the agent put in
# place and aim it anywhere in the workspace. Off there, as Docker 25+ and containerd have
# it by default anyway.
DENIED = ("io_uring_setup", "io_uring_enter", "io_uring_register")
EPERM = 1


def add_listener(spec: dict[str, Any], listener: str) -> bool:
    """Route the container's connect() through docker-up's agent (seccomp user
    notification), which answers every such call itself, and deny io_uring. Only for a
    container with a seccomp profile and a network namespace of its own; a container
    without the profile (seccomp=unconfined) runs as before. True if the spec changed."""
    linux = spec.get("linux")
    if not isinstance(linux, dict) or not _own_netns(linux):
        return False
    seccomp = linux.get("seccomp")
    if not isinstance(seccomp, dict) or seccomp.get("listenerPath"):
        return False
    ours = (*NOTIFIED, *DENIED)
    rules = []
    for rule in seccomp.get("syscalls") or []:
        names = [n for n in rule.get("names", []) if n not in ours]
        # A rule about these calls with arguments or another action is kept as it was: one
        # syscall may not carry two different unconditional actions.
        if rule.get("action") != "SCMP_ACT_ALLOW" or rule.get("args"):
            names = rule.get("names", [])
        if names:
            rules.append({**rule, "names": names})
    kept = {n for r in rules for n in r["names"]}
    notify = [n for n in NOTIFIED if n not in kept]
    if not notify:
        return False
    rules.append({"names": notify, "action": "SCMP_ACT_NOTIFY"})
    if denied := [n for n in DENIED if n not in kept]:
        rules.append({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM})
    seccomp["syscalls"] = rules
    seccomp["listenerPath"] = listener
    return True


def _own_netns(linux: dict[str, Any]) -> bool:
    namespaces = linux.get("namespaces") or []
    return any(n.get("type") == "network" and not n.get("path") for n in namespaces)


def bundle_dir(args: list[str]) -> str | None:
    """The --bundle of `runc [global options] create [options] ID`; runc's default is the
    current directory. None when this is not a create."""
    if "create" not in args:
        return None
    rest = args[args.index("create") + 1 :]
    for i, a in enumerate(rest):
        if a in ("--bundle", "-b") and i + 1 < len(rest):
            return rest[i + 1]
        if a.startswith("--bundle="):
            return a.split("=", 1)[1]
    return "."


# A container with this label (docker run --label docker-up.net-accel=off) keeps every
# connect() on the helper's path: no listener, no agent, as with --no-net-accel.
OPT_OUT = "docker-up.net-accel"


def container_file(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """One of dockerd's own files of this container (config.v2.json, hostconfig.json):
    neither the OCI spec nor runc's arguments carry what they say; dockerd keeps them next
    to the hostname file it mounts at /etc/hostname, which the spec names. {} when it
    cannot be read."""
    for m in spec.get("mounts") or []:
        if isinstance(m, dict) and m.get("destination") == "/etc/hostname":
            path = os.path.join(os.path.dirname(str(m.get("source", ""))), name)
            try:
                with open(path) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                return {}
            return doc if isinstance(doc, dict) else {}
    return {}


def opted_out(spec: dict[str, Any]) -> bool:
    """Whether the container's labels say docker-up.net-accel=off (or false, 0, no). A
    file that cannot be read leaves the container as by default."""
    try:
        labels = (container_file(spec, "config.v2.json").get("Config") or {}).get("Labels")
    except AttributeError:
        return False
    value = labels.get(OPT_OUT) if isinstance(labels, dict) else None
    return str(value).lower() in ("off", "false", "0", "no")


# hostconfig.json's fields for each controller, and the docker run flag that sets each.
LIMIT_FIELDS = {
    "memory": {
        "Memory": "--memory",
        "MemoryReservation": "--memory-reservation",
        "MemorySwap": "--memory-swap",
    },
    "cpu": {
        "NanoCpus": "--cpus",
        "CpuQuota": "--cpu-quota",
        "CpuPeriod": "--cpu-period",
        "CpuShares": "--cpu-shares",
    },
    "pids": {"PidsLimit": "--pids-limit"},
}


def asked_limits(hostconfig: dict[str, Any], refused: list[str]) -> list[str]:
    """The flags of the limits this container asks for that cannot apply here. dockerd
    sets MemorySwap to twice Memory itself when only --memory is given: not named then."""
    derived = {"MemorySwap": 2 * v} if isinstance(v := hostconfig.get("Memory"), int) else {}
    return [
        flag
        for controller in refused
        for key, flag in LIMIT_FIELDS.get(controller, {}).items()
        if isinstance(v := hostconfig.get(key), int)
        and not isinstance(v, bool)
        and v > 0
        and v != derived.get(key)
    ]


class Refused(Exception):
    pass


def refuse_limits(spec: dict[str, Any], defaults: RuntimeSpec) -> None:
    if not defaults.refused:
        return
    flags = asked_limits(container_file(spec, "hostconfig.json"), defaults.refused)
    if flags:
        raise Refused(
            f"docker-up: {', '.join(flags)} cannot apply here: {defaults.refused_why} "
            f"(or run the container without {', '.join(flags)})"
        )


def log_path(args: list[str]) -> str | None:
    """runc's global --log: containerd's shim reads the last error from it."""
    for i, a in enumerate(args):
        if a == "create":
            return None
        if a == "--log" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--log="):
            return a.split("=", 1)[1]
    return None


def say_refused(args: list[str], message: str) -> None:
    """Where `docker run` shows it: containerd's shim reports the last error in runc's
    JSON log (the OCI runtime's own words), stderr otherwise."""
    print(message, file=sys.stderr)
    path = log_path(args)
    if path:
        with contextlib.suppress(OSError), open(path, "a") as f:
            f.write(json.dumps({"level": "error", "msg": message}) + "\n")


def add_views(spec: dict[str, Any], defaults: RuntimeSpec, cid: str) -> bool:
    """A dev container's bind mounts of the workspace user's folders get views in which
    the uid the Dev Containers CLI gives its user writes as the workspace user
    (dockerup/views). A view that cannot be made leaves that mount as it was. True if the
    spec changed."""
    if not defaults.views:
        return False
    config = container_file(spec, "config.v2.json")
    if not choose.wanted((config.get("Config") or {}).get("Labels")):
        return False
    from dockerup.views import serve  # only for dev containers: what it imports costs a start

    mounts = spec.get("mounts") or []
    found = choose.sources(mounts, choose.bind_destinations(config))
    views = choose.choose(found, serve.probe([src for _, src in found]))
    changed = False
    for n, view in enumerate(views):
        try:
            home = serve.container_dir(defaults.views, cid)
            serve.make_private(defaults.views)
            os.makedirs(home, 0o700, exist_ok=True)
            target = os.path.join(home, str(n))
            argv = choose.bindfs_argv(
                defaults.bindfs, defaults.user_uid, defaults.user_gid, choose.SOURCE, choose.VIEW
            )
            serve.serve(target, view.source, argv)
        except (OSError, ValueError) as e:
            print(f"docker-up runtime: {view.source} mounted as it is: {e}", file=sys.stderr)
            continue
        mounts[view.index]["source"] = target
        changed = True
    return changed


def rewrite(path: str, defaults: RuntimeSpec, cid: str) -> None:
    with open(path) as f:
        spec = json.load(f)
    refuse_limits(spec, defaults)
    changed = adjust_spec(spec, defaults.sysctls)
    if defaults.listener and not opted_out(spec):
        changed = add_listener(spec, defaults.listener) or changed
    changed = add_views(spec, defaults, cid) or changed
    if changed:
        atomic_write(path, json.dumps(spec), os.stat(path).st_mode & 0o777)


def remove_views(args: list[str], defaults: RuntimeSpec) -> None:
    """At runc's delete: the container's views go (none: nothing to do)."""
    if defaults.views and "delete" in args:
        from dockerup.views import serve

        try:
            serve.remove(defaults.views, args[-1])
        except (OSError, ValueError) as e:
            print(f"docker-up runtime: views of {args[-1]}: {e}", file=sys.stderr)


def main(argv: list[str]) -> None:
    defaults, args = RuntimeSpec.from_json(argv[1]), argv[2:]
    bundle = bundle_dir(args)
    remove_views(args, defaults)
    if bundle is not None:
        try:
            rewrite(os.path.join(bundle, "config.json"), defaults, args[-1] if args else "")
        except Refused as e:
            say_refused(args, str(e))
            sys.exit(1)
        except (OSError, ValueError) as e:
            print(f"docker-up runtime: spec left as it was: {e}", file=sys.stderr)
    os.execv(defaults.runc, [defaults.runc, *args])


if __name__ == "__main__":
    main(sys.argv)
