"""Soak and fault figures for docs/reliability.md: many start/stop cycles, kill -9 of each
part with the time to recover and what was lost, parallel starts, a full data-root disk.

Run through scripts/soak (as root, in the isolated namespace, acting as the test user). It
stops everything it started, by PID, and prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dockerup.wire.ping import ping
from tests.integration.harness import User, Workspace, pid_alive, processes_naming  # noqa: E402


def workspace(user: User) -> Workspace:
    return Workspace.create(user, "dockerup-soak-")


def state(ws: Workspace) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ws.runtime_dir / "docker-up" / "state.json").read_text())
    return doc


def sock(ws: Workspace) -> Path:
    return ws.runtime_dir / "docker-up" / "docker.sock"


def until(cond: Any, timeout: float) -> float:
    """Seconds until cond() holds (polled every 20 ms), or raise."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.02)
    return time.monotonic() - t0


def cycles(user: User, n: int) -> dict[str, Any]:
    ws = workspace(user)
    failures, times = [], []
    try:
        for i in range(n):
            t0 = time.monotonic()
            r = ws.docker_up("-d")
            if r.returncode != 0:
                failures.append(f"start {i}: {r.stderr.strip()[-300:]}")
                continue
            times.append(time.monotonic() - t0)
            if ws.docker_up("stop", timeout=90).returncode != 0:
                failures.append(f"stop {i}")
    finally:
        ws.docker_up("stop", timeout=90)
        shutil.rmtree(ws.root, ignore_errors=True)
    return {"cycles": n, "failures": failures, "start_median_s": statistics.median(times)}


def in_netns_of(pid: int, exe_name: str) -> int | None:
    ns = os.readlink(f"/proc/{pid}/ns/net")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            same_ns = os.readlink(d / "ns" / "net") == ns
            if same_ns and Path(os.readlink(d / "exe")).name == exe_name:
                return int(d.name)
        except OSError:
            continue
    return None


def faults(user: User, busybox: Path) -> dict[str, Any]:
    ws = workspace(user)
    out: dict[str, Any] = {}
    try:
        assert ws.docker_up("-d").returncode == 0
        ws.docker("import", str(busybox), "bb:soak")
        ws.docker("volume", "create", "keep")
        ws.docker("run", "--rm", "-v", "keep:/v", "bb:soak", "sh", "-c", "echo kept > /v/f")

        def intact() -> bool:
            r = ws.docker("run", "--rm", "-v", "keep:/v", "bb:soak", "cat", "/v/f", check=False)
            return r.stdout.strip() == "kept"

        def runs() -> bool:
            return ws.docker("run", "--rm", "bb:soak", "true", check=False).returncode == 0

        st = state(ws)
        os.kill(st["dockerd_pid"], signal.SIGKILL)
        t = until(lambda: state(ws)["dockerd_pid"] != st["dockerd_pid"] and ping(sock(ws)), 60)
        out["dockerd"] = {"recovered_s": round(t, 2), "images_and_volumes": intact()}

        containerd = in_netns_of(state(ws)["dockerd_pid"], "containerd")
        assert containerd
        os.kill(containerd, signal.SIGKILL)
        t = until(runs, 60)
        out["containerd"] = {"recovered_s": round(t, 2), "images_and_volumes": intact()}

        st = state(ws)
        os.kill(st["net_pid"], signal.SIGKILL)
        t = until(lambda: state(ws)["net_pid"] != st["net_pid"] and pid_alive(state(ws)["net_pid"]),
                  60)  # fmt: skip
        out["network helper"] = {"recovered_s": round(t, 2), "images_and_volumes": intact()}

        port = 18000 + os.getpid() % 1000
        ws.docker("run", "-d", "--name", "web", "-p", f"{port}:80", "bb:soak", "sh", "-c",
                  "mkdir -p /w && echo up > /w/index.html && httpd -f -p 80 -h /w")  # fmt: skip
        until(lambda: get(port) == "up", 30)
        proxy = next(p for p in Path("/proc").iterdir() if p.name.isdigit()
                     and b"ports/proxy.py" in read(p / "cmdline") and str(port).encode()
                     in read(p / "cmdline"))  # fmt: skip
        os.kill(int(proxy.name), signal.SIGKILL)
        answered_after_kill = get(port) == "up"
        ws.docker("restart", "web")
        t = until(lambda: get(port) == "up", 60)
        out["port proxy"] = {"answers_after_kill": answered_after_kill,
                             "recovered_after_docker_restart_s": round(t, 2)}  # fmt: skip
        ws.docker("rm", "-f", "web")

        keeper = state(ws)["pid"]
        os.kill(keeper, signal.SIGKILL)
        until(lambda: not pid_alive(state(ws)["dockerd_pid"]), 60)
        t0 = time.monotonic()
        assert ws.docker_up("-d").returncode == 0
        out["keeper (docker-up)"] = {"next_start_ready_s": round(time.monotonic() - t0, 2),
                                     "images_and_volumes": intact()}  # fmt: skip
    finally:
        ws.docker_up("stop", timeout=90)
        shutil.rmtree(ws.root, ignore_errors=True)
    return out


def read_comm(pid: int) -> bytes:
    return read(Path(f"/proc/{pid}/comm")).strip()


def read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def get(port: int) -> str:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            data = s.makefile("rb").read()
    except OSError:
        return ""
    return data.decode(errors="replace").rsplit("\n", 2)[-2].strip() if data else ""


def parallel(user: User, n: int) -> dict[str, Any]:
    ws = workspace(user)
    try:
        with ThreadPoolExecutor(n) as pool:
            codes = list(pool.map(lambda _: ws.docker_up("-d").returncode, range(n)))
        dockerds = [p for p in processes_naming(ws.root) if read_comm(p) == b"dockerd"]
        return {"starts": n, "exit_codes": sorted(set(codes)), "dockerd_processes": len(dockerds)}
    finally:
        ws.docker_up("stop", timeout=90)
        shutil.rmtree(ws.root, ignore_errors=True)


def full_disk(user: User, busybox: Path) -> dict[str, Any]:
    """data-root on a small filesystem that fills up while docker-up runs."""
    ws = workspace(user)
    mnt = Path(tempfile.mkdtemp(prefix="dockerup-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=96m,uid={user.uid},mode=0700",
                    "tmpfs", str(mnt)], check=True)  # fmt: skip
    ws.extra_env["DOCKER_UP_DATA_ROOT"] = str(mnt / "docker")
    out: dict[str, Any] = {}
    try:
        r = ws.docker_up("-d")
        out["start"] = r.returncode == 0
        ws.docker("import", str(busybox), "bb:soak")
        r = ws.docker("run", "--rm", "bb:soak", "dd", "if=/dev/zero", "of=/big", "bs=1M",
                      "count=200", check=False)  # fmt: skip
        lines = (r.stdout + r.stderr).splitlines()
        out["filling_container_error"] = next((ln for ln in lines if "No space" in ln), "")
        r = ws.docker("run", "--rm", "bb:soak", "true", check=False)
        out["next_container"] = "runs" if r.returncode == 0 else r.stderr.strip()[-200:]
        stop = ws.docker_up("stop", timeout=90)
        out["stop_exit"] = stop.returncode
        out["left_running"] = processes_naming(ws.root)
        # Now start on a disk that is already full.
        ws.run(["sh", "-c", f"cat /dev/zero > {mnt}/filler"], check=False)
        r = ws.docker_up("-d")
        out["start_on_full_disk"] = {"exit": r.returncode,
                                     "message": r.stderr.strip().splitlines()[-3:]}  # fmt: skip
        ws.docker_up("stop", timeout=90)
        out["left_running_after_that"] = processes_naming(ws.root)
    finally:
        ws.docker_up("stop", timeout=90)
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()
        shutil.rmtree(ws.root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=20)
    args = ap.parse_args()
    user = User.get()
    tmp = Path(tempfile.mkdtemp(prefix="dockerup-soak-img-"))
    os.chmod(tmp, 0o755)
    busybox = tmp / "bb.tar"
    subprocess.run([str(ROOT / "scripts" / "busybox-rootfs"), str(busybox)], check=True)
    os.chmod(busybox, 0o644)
    try:
        report = {
            "start_stop": cycles(user, args.cycles),
            "kill_9": faults(user, busybox),
            "parallel_starts": parallel(user, args.parallel),
            "full_data_root": full_disk(user, busybox),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
