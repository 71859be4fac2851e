"""What a program says about itself (`--help`, `--version`) does not change until the
program does: each user caches it, keyed by the command line and the binary's size, mtime
and inode, so that a start spends no process on it (about 2.5 ms each, on the start-up
path). Anything unexpected (no cache, a damaged one, a binary that is not a plain file)
means running the program, as without a cache."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dockerup import proc
from dockerup.files import atomic_write
from dockerup.wire.specs import Spec


@dataclasses.dataclass(frozen=True)
class Probe(Spec):
    stamp: list[int]  # the binary's size, mtime and inode when it said out
    out: str


@dataclasses.dataclass(frozen=True)
class ProbeFile(Spec):
    """probes.json: the whole cache is dropped when any of it is not as declared."""

    entries: dict[str, Probe]  # the command line, NUL-joined -> what it said


_OPEN: dict[Path, ProbeCache] = {}

# How long a program may take to say what it is. Generous: under load (a workspace's start,
# a VM under TCG) `dockerd --version` took over 10 s, and an unreadable dockerd version is
# taken as the newest engine (plan/engine.py): dockerd 20.10 then got 28's environment and
# refused to start. A program that answers at once costs nothing more.
PROBE_TIMEOUT = 90.0


def _run(argv: Sequence[str]) -> str:
    return proc.output(argv, timeout=PROBE_TIMEOUT)


def _tty_run(argv: Sequence[str]) -> str:
    return proc.tty_output(argv, timeout=PROBE_TIMEOUT)


def probes(env: Mapping[str, str], home: str) -> ProbeCache:
    """What binaries say about themselves, cached per user: one cache for the process, so
    a start reads probes.json once, not once for each group of facts it probes."""
    path = cache_file(env, home)
    if path not in _OPEN:
        _OPEN[path] = ProbeCache(path, _run, _tty_run)
    return _OPEN[path]


def cache_file(env: Mapping[str, str], home: str) -> Path:
    base = env.get("XDG_CACHE_HOME") or f"{home}/.cache"
    return Path(base) / "docker-up" / "probes.json"


def stamp(binary: str) -> list[int] | None:
    try:
        st = os.stat(binary)
    except OSError:
        return None
    if not os.path.isabs(binary) or not os.path.isfile(binary):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class ProbeCache:
    def __init__(
        self,
        path: Path,
        run: Callable[[Sequence[str]], str],
        tty_run: Callable[[Sequence[str]], str] | None = None,
    ) -> None:
        self.path = path
        self.run = run
        self.tty_run = tty_run or run
        self.entries: dict[str, Probe] = {}
        with contextlib.suppress(OSError, ValueError):
            self.entries = ProbeFile.from_json(path.read_text()).entries

    def output(self, argv: Sequence[str], tty: bool = False) -> str:
        """argv's output, from the cache when its binary is unchanged (tty: run with a
        terminal for its output: tty_run; cached apart)."""
        key = "\0".join(["tty", *argv] if tty else argv)
        now = stamp(argv[0])
        entry = self.entries.get(key)
        if now is not None and entry is not None and entry.stamp == now:
            return entry.out
        out = self.tty_run(argv) if tty else self.run(argv)
        if now is not None and out:
            self.entries[key] = Probe(now, out)
            with contextlib.suppress(OSError):  # a cache that cannot be written is no cache
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                atomic_write(self.path, ProbeFile(self.entries).to_json(), 0o600)
        return out
