"""Commands the CLI side runs and waits for: one copy of running, probing and stopping them.
Each long-running program has its own one launcher instead (tests/unit/test_layout.py lists
them all)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dockerup.errors import DockerUpError


def output(argv: Sequence[str], timeout: float = 10.0) -> str:
    """stdout+stderr of a short probe command; empty when it cannot run at all."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout + r.stderr


def tty_output(argv: Sequence[str], timeout: float = 10.0) -> str:
    """As output(), with a terminal for stdout and stderr: for a program that leaves the
    process without flushing stdio (Debian 13's pasta: `--version` printed nothing into a
    pipe, `--help` its first 4096 bytes), whose terminal output is line-buffered."""
    import select

    master, slave = os.openpty()
    try:
        p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    except OSError:
        os.close(master)
        return ""
    finally:
        os.close(slave)
    data = b""
    try:
        while select.select([master], [], [], timeout)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
        p.wait()
    return data.decode(errors="replace").replace("\r\n", "\n")


@dataclass(frozen=True)
class Probe:
    ok: bool
    output: str


def probe(argv: Sequence[str], timeout: float = 20.0) -> Probe:
    """Try a command for real (doctor's probes): did it succeed, and what did it say."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Probe(False, str(e))
    return Probe(r.returncode == 0, r.stdout + r.stderr)


def first_line(argv: Sequence[str]) -> str:
    lines = output(argv).splitlines()
    return lines[0] if lines else ""


def run(argv: Sequence[str], what: str, timeout: float = 30.0) -> str:
    """Run a command that must succeed; its failure becomes a DockerUpError."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as e:
        raise DockerUpError(f"{what}: cannot run {argv[0]}: {e.strerror}") from e
    except subprocess.TimeoutExpired as e:
        raise DockerUpError(f"{what}: {argv[0]} did not finish in {timeout:.0f} s") from e
    if r.returncode != 0:
        raise DockerUpError(
            f"{what} failed: {' '.join(argv)} exited with {r.returncode}",
            detail=(r.stderr or r.stdout).strip(),
        )
    return r.stdout


def run_together(commands: Sequence[tuple[Sequence[str], str]], timeout: float = 30.0) -> None:
    """Commands that must all succeed and do not depend on each other, run at once (each
    takes a few milliseconds to start: newuidmap and newgidmap)."""
    started = []
    for argv, what in commands:
        try:
            p = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except OSError as e:
            raise DockerUpError(f"{what}: cannot run {argv[0]}: {e.strerror}") from e
        started.append((p, argv, what))
    failed = []
    for p, argv, what in started:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            failed.append(DockerUpError(f"{what}: {argv[0]} did not finish in {timeout:.0f} s"))
            continue
        if p.returncode != 0:
            failed.append(
                DockerUpError(
                    f"{what} failed: {' '.join(argv)} exited with {p.returncode}",
                    detail=out.strip(),
                )
            )
    if failed:
        raise failed[0]


def stop(p: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> int:
    """Ask a helper to stop, then kill it after `timeout`. Returns its exit status."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
    return p.wait()


def forked(task: Callable[[], None]) -> int:
    """Run `task` in a forked copy of this process (it shares what was set up so far, which a
    new program would not: namespaces, open pipes). The copy ends with status 0 when the task
    returns, 1 when it raises, and never returns into the caller's code. Its PID, to reap."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            task()
            code = 0
        finally:
            os._exit(code)
    return pid
