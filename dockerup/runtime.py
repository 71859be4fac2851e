"""docker-up's OCI runtime: runc, with docker-up's defaults added to each new container's spec.

dockerd 20.10 has no default sysctls for containers, but every container passes through
its runtime. daemon.runtime_script() is the runtime dockerd calls: a shell script that
execs runc directly for every command except `create`, which comes here first. Here the
bundle's config.json gets the sysctls a container did not set itself, then runc runs.

Stdlib only, run as `python -S` (a few milliseconds, once per container). A default must
never keep a container from starting: any problem here leaves the spec as it was.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def adjust_spec(spec: dict[str, Any], sysctls: dict[str, str]) -> bool:
    """Add the sysctls the container did not set. Only for a container with a network
    namespace of its own: one that shares another's (--network host or container:X) must
    not change that one's settings. True if the spec changed."""
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return False
    namespaces = linux.get("namespaces") or []
    if not any(n.get("type") == "network" and not n.get("path") for n in namespaces):
        return False
    current = linux.get("sysctl") or {}
    missing = {k: v for k, v in sysctls.items() if k not in current}
    if not missing:
        return False
    linux["sysctl"] = {**current, **missing}
    return True


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


def rewrite(path: str, sysctls: dict[str, str]) -> None:
    with open(path) as f:
        spec = json.load(f)
    if adjust_spec(spec, sysctls):
        tmp = path + ".docker-up"
        with open(tmp, "w") as f:
            json.dump(spec, f)
        os.replace(tmp, path)


def main(argv: list[str]) -> None:
    sysctls, runc, args = json.loads(argv[1]), argv[2], argv[3:]
    bundle = bundle_dir(args)
    if bundle is not None:
        try:
            rewrite(os.path.join(bundle, "config.json"), sysctls)
        except (OSError, ValueError) as e:
            print(f"docker-up runtime: spec left as it was: {e}", file=sys.stderr)
    os.execv(runc, [runc, *args])


if __name__ == "__main__":
    main(sys.argv)
