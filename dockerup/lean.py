"""The lean programs: what runs inside or beside docker-up's namespaces, stdlib only.

Each is started as `python -S dockerup/PACKAGE/NAME.py SPEC` (no site-packages: a few
milliseconds instead of the ~0.3 s the CLI's libraries take): the namespace child that
becomes dockerd, the keeper that stays resident, the lazy socket holder, the port proxy
dockerd runs, the runc wrapper, auto ports' inside helper, and the acceleration agent (in
the keeper). They live in the package of what they do; what they import, to its whole
closure, is the standard library and stdlib-only modules of this package
(tests/unit/test_layout.py checks it), and they read their spec from one typed dataclass in
wire/specs.py, written by the CLI side.
"""

from __future__ import annotations

import os.path

HERE = os.path.dirname(os.path.abspath(__file__))
# What a program puts first on sys.path to import this package without site-packages.
ROOT = os.path.dirname(HERE)

# Each lean program by name, and where it lives in this package.
PROGRAMS = {
    "child": "namespace/child.py",
    "keeper": "keeper/resident.py",
    "lazy": "keeper/lazy.py",
    "portproxy": "ports/proxy.py",
    "runtime": "accel/ociruntime.py",
    "autoinside": "autoports/inside.py",
}


def script(name: str) -> str:
    """The path of a lean program, for its command line."""
    return os.path.join(HERE, PROGRAMS[name])
