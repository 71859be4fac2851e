"""Check with pyroute2 what the network helper configured in docker-up's namespace.

Run by the namespace child (dockerup/programs/child.py) inside the namespace, as
`python -m dockerup.netcheck SPEC`, niced and off the start-up path: pyroute2 alone costs
about 0.1 s to import, and the child itself is stdlib-only. Prints one JSON line for the
parent: {"step": "verified", "ok": ..., "problems": [...]}.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from dockerup.programs.specs import NetCheck

IFF_UP = 0x1


def problems(spec: NetCheck) -> list[str]:
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo") or [None]
        if lo is None or not ipr.get_links(lo)[0]["flags"] & IFF_UP:
            found.append("lo is not up")
        idx = ipr.link_lookup(ifname=spec.tap)
        if not idx:
            return [*found, f"{spec.tap} does not exist"]
        link = ipr.get_links(idx[0])[0]
        if link.get_attr("IFLA_MTU") != spec.mtu:
            found.append(f"{spec.tap} MTU is {link.get_attr('IFLA_MTU')}, not {spec.mtu}")
        addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx[0])]
        if (spec.address, spec.prefixlen) not in addrs:
            found.append(f"{spec.tap} has {addrs}, not {spec.address}/{spec.prefixlen}")
        gws = [r.get_attr("RTA_GATEWAY") for r in ipr.get_default_routes(family=socket.AF_INET)]
        if spec.gateway not in gws:
            found.append(f"default route via {gws}, not {spec.gateway}")
    return found


def result(spec_json: str) -> dict[str, Any]:
    try:
        found = problems(NetCheck.from_json(spec_json))
    except Exception as e:  # report anything: the parent decides
        found = [f"the network check failed: {e!r}"]
    return {"step": "verified", "ok": not found, "problems": found}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(result(sys.argv[1])) + "\n")
