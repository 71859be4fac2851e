"""The probe cache runs a program again exactly when the binary changed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from dockerup.host.probecache import ProbeCache


def test_a_binary_is_asked_once_until_it_changes(tmp_path: Path) -> None:
    binary = tmp_path / "slirp4netns"
    binary.write_text("#!/bin/sh\necho v1\n")
    binary.chmod(0o755)
    ran: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> str:
        ran.append(argv)
        return binary.read_text()

    cache_path = tmp_path / "cache" / "probes.json"
    assert ProbeCache(cache_path, run).output([str(binary), "--help"]) == binary.read_text()
    # A new process (a new ProbeCache) reads the file and runs nothing.
    assert ProbeCache(cache_path, run).output([str(binary), "--help"]) == binary.read_text()
    assert len(ran) == 1
    assert oct(cache_path.stat().st_mode & 0o777) == "0o600"
    # Another argument is another question.
    ProbeCache(cache_path, run).output([str(binary), "--version"])
    assert len(ran) == 2
    # The binary replaced (new content, size and mtime): asked again, new answer kept.
    binary.write_text("#!/bin/sh\necho version 2, longer\n")
    os.utime(binary, ns=(1, 1))
    assert "version 2" in ProbeCache(cache_path, run).output([str(binary), "--help"])
    assert len(ran) == 3


def test_a_damaged_cache_or_a_relative_name_just_runs(tmp_path: Path) -> None:
    cache_path = tmp_path / "probes.json"
    cache_path.write_text("{not json")
    calls = []

    def run(argv: Sequence[str]) -> str:
        calls.append(argv)
        return "out"

    assert ProbeCache(cache_path, run).output(["slirp4netns", "--help"]) == "out"
    assert ProbeCache(cache_path, run).output(["slirp4netns", "--help"]) == "out"
    assert len(calls) == 2  # never cached: no file to check it against


# A program that leaves without flushing its stdio, as Debian 13's pasta does.
# (open() of a terminal is line-buffered, of a pipe block-buffered, whatever PYTHONUNBUFFERED.)
UNFLUSHED = "import os; f = open(1, 'w'); f.write('x' * 5000 + '\\nthe end\\n'); os._exit(0)"


def test_a_program_that_leaves_unflushed_is_read_through_a_terminal() -> None:
    """Into a pipe its output is block-buffered and lost (pasta's --version said nothing,
    its --help stopped at 4096 bytes, so docker-up refused it as lacking --config-net);
    on a terminal it is line-buffered, and all of it arrives."""
    import sys

    from dockerup import proc

    argv = [sys.executable, "-c", UNFLUSHED]
    assert "the end" not in proc.output(argv)
    out = proc.tty_output(argv)
    assert out.endswith("the end\n") and "\r" not in out
    assert proc.tty_output(["/nonexistent/binary"]) == ""


def test_a_terminal_probe_is_cached_apart(tmp_path: Path) -> None:
    binary = tmp_path / "pasta"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    cache = ProbeCache(tmp_path / "probes.json", lambda argv: "piped", lambda argv: "tty")
    assert cache.output([str(binary), "--help"]) == "piped"
    assert cache.output([str(binary), "--help"], tty=True) == "tty"


def test_a_process_reads_the_cache_file_once(tmp_path: Path) -> None:
    """Every group of facts a start probes (host, engine, accel, pasta) shares one cache."""
    from dockerup.host.probecache import probes

    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert probes(env, "/nonexistent") is probes(env, "/nonexistent")
    assert probes({"XDG_CACHE_HOME": str(tmp_path / "other")}, "/x") is not probes(env, "/x")


def test_a_slow_program_gets_time_to_say_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load `dockerd --version` took over 10 s; an empty answer picks the newest
    engine's settings for whatever dockerd this is. The probe waits as long as it takes."""
    from dockerup import proc
    from dockerup.host import probecache

    asked: list[float] = []

    def output(argv: object, timeout: float = 10.0) -> str:
        asked.append(timeout)
        return "Docker version 20.10.24+dfsg1, build 297e128"

    monkeypatch.setattr(proc, "output", output)
    monkeypatch.setattr(probecache, "_OPEN", {})
    binary = tmp_path / "dockerd"
    binary.write_text("#!/bin/sh\n")
    cache = probecache.probes({"XDG_CACHE_HOME": str(tmp_path)}, str(tmp_path))
    assert "20.10.24" in cache.output([str(binary), "--version"])
    assert asked == [probecache.PROBE_TIMEOUT] and probecache.PROBE_TIMEOUT >= 60
