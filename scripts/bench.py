"""Start-up time and resident memory: docker-up beside Docker's own rootless launcher.

Both run as the same unprivileged user, in the same run, alternating, with the same MTU.
Launch-to-ready is measured from the moment the launcher is exec'd to the first successful
Engine API ping (docker-up prints its export line only after its own ping succeeds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dockerup.wire.ping import ping

ROOTLESS_SH = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
VENV = Path(os.environ.get("DOCKER_UP_VENV", "/opt/docker-up-venv"))
USER = os.environ.get("DOCKER_UP_TEST_USER", "dockerup-test")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
    return out


class Home:
    """A fresh set of XDG directories owned by the test user."""

    def __init__(self) -> None:
        pw = pwd.getpwnam(USER)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.root = Path(tempfile.mkdtemp(prefix="dockerup-bench-"))
        os.chmod(self.root, 0o755)
        for sub in ("run", "data", "config"):
            (self.root / sub).mkdir()
            os.chown(self.root / sub, self.uid, self.gid)
            os.chmod(self.root / sub, 0o700)

    def env(self) -> dict[str, str]:
        return {
            "HOME": self.home,
            "USER": USER,
            "LANG": "C.UTF-8",
            "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
        }

    def wipe_data(self) -> None:
        for sub in ("data", "run"):
            d = self.root / sub
            shutil.rmtree(d)
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)

    def popen(self, argv: list[str], extra_env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[str]:  # fmt: skip
        return subprocess.Popen(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={**self.env(), **(extra_env or {})},
            cwd=str(self.root),
            text=True,
            **kw,
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def wait_ping(sock: Path, p: subprocess.Popen[str], t0: float, name: str) -> float:
    """Seconds from t0 until the Engine API on sock answers /_ping, polled every 2 ms: the
    same for both launchers."""
    while not ping(sock):
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited {p.returncode}")
        if time.monotonic() - t0 > 60:
            raise RuntimeError(f"{name}: no answer in 60 s")
        time.sleep(0.002)
    return time.monotonic() - t0


def run_docker_up(home: Home) -> dict[str, Any]:
    sock = home.root / "run" / "docker-up" / "docker.sock"
    t0 = time.monotonic()
    p = home.popen(
        [str(VENV / "bin" / "docker-up")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert p.stdout
    try:
        ready = wait_ping(sock, p, t0, "docker-up")
        for line in p.stdout:
            if line.startswith("export DOCKER_HOST="):
                break
        else:
            raise RuntimeError(f"docker-up failed: exit {p.wait()}")
        announced = time.monotonic() - t0
        state = json.loads((home.root / "run" / "docker-up" / "state.json").read_text())
        time.sleep(1.0)  # let it settle: resident memory "once idle"
        mem = rss_kb(p.pid)
        phases = state["timings"]
        return {
            "ready": ready,
            "announced": announced,  # its `export DOCKER_HOST=` line
            "timings": phases,  # state.json's, from the executor's start (child_*: the child's)
            "rss_kb": mem,
            "phases": {
                "cli before the start (python, imports, probe, plan)": ready - phases["total"],
                "namespaces (unshare + id maps)": phases["namespaces"],
                "slirp4netns ready": phases["network_ready"] - phases["namespaces"],
                "dockerd exec to socket": phases["dockerd_socket"],
                "socket to API ready": phases["api_ready"],
            },
        }
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(60)


def run_rootless_sh(home: Home) -> dict[str, Any]:
    sock = home.root / "run" / "docker.sock"
    data = home.root / "data" / "docker"
    t0 = time.monotonic()
    p = home.popen(
        [ROOTLESS_SH, f"--data-root={data}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ready = wait_ping(sock, p, t0, "dockerd-rootless.sh")
        time.sleep(1.0)
        # dockerd-rootless.sh execs rootlesskit, whose child ("exe") runs dockerd.
        kids = [c for c in children(p.pid) if Path(f"/proc/{c}/comm").read_text().strip() == "exe"]
        mem = rss_kb(p.pid) + sum(rss_kb(c) for c in kids)
        return {"ready": ready, "rss_kb": mem}
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)


def measure_lazy(runs: int) -> dict[str, float]:
    """The first `docker ps` of a new shell, in seconds (median), on a warm data-root: with
    a daemon already running; with `docker-up -d` started at that moment (its ready time,
    and ready + ps); and with socket activation (`up --lazy` holding the socket: the ps
    starts dockerd and waits for it)."""
    home = Home()
    du = str(VENV / "bin" / "docker-up")
    host = f"unix://{home.root / 'run' / 'docker-up' / 'docker.sock'}"

    def run(*argv: str) -> float:
        t0 = time.monotonic()
        subprocess.run(list(argv), user=home.uid, group=home.gid, extra_groups=[],
                       env={**home.env(), "DOCKER_HOST": host}, capture_output=True,
                       check=True, timeout=120, cwd=str(home.root))  # fmt: skip
        return time.monotonic() - t0

    rows: dict[str, list[float]] = {"running": [], "eager_ready": [], "eager_then_ps": [],
                                    "lazy_first_ps": []}  # fmt: skip
    try:
        run(du, "-d")  # fill the data-root once
        run(du, "stop")
        for _ in range(runs):
            run(du, "-d")
            rows["running"].append(run("docker", "ps"))
            run(du, "stop")
            ready = run(du, "-d")
            rows["eager_ready"].append(ready)
            rows["eager_then_ps"].append(ready + run("docker", "ps"))
            run(du, "stop")
            run(du, "up", "--lazy")
            rows["lazy_first_ps"].append(run("docker", "ps"))
            run(du, "stop")
    finally:
        home.cleanup()
    out = {k: median(v) for k, v in rows.items()}
    out["lazy_minus_eager_ready"] = out["lazy_first_ps"] - out["eager_ready"]
    return out


def docker_cli(home: Home, host: str, *args: str, check: bool = True) -> str:
    env = {**home.env(), "DOCKER_HOST": host}
    r = subprocess.run(
        ["docker", *args],
        env=env,
        user=home.uid,
        group=home.gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr}")
    return r.stdout


def iperf_gbps(port: int, streams: int, seconds: int) -> float:
    """iperf3 client in the workspace (this namespace) to a published port."""
    for _ in range(50):  # the server in the container may still be starting
        r = subprocess.run(
            [
                "iperf3",
                "-c",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                str(seconds),
                "-P",
                str(streams),
                "-J",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0:
            doc = json.loads(r.stdout)
            return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9
        time.sleep(0.1)
    raise RuntimeError(f"iperf3 failed: {r.stdout[-500:]} {r.stderr[-500:]}")


@contextlib.contextmanager
def iperf_image() -> Iterator[Path]:
    """A tarball of an image with iperf3 in it (no registry), readable by the test user."""
    tar = Path(tempfile.mkdtemp(prefix="dockerup-iperf-")) / "iperf3.tar"
    try:
        os.chmod(tar.parent, 0o755)
        subprocess.run([str(Path(__file__).with_name("iperf3-rootfs")), str(tar)], check=True)
        os.chmod(tar, 0o644)
        yield tar
    finally:
        shutil.rmtree(tar.parent, ignore_errors=True)


@contextlib.contextmanager
def fresh_home() -> Iterator[Home]:
    home = Home()
    try:
        yield home
    finally:
        home.cleanup()


def by_streams(measure: Callable[[int], float], runs: int) -> dict[str, float]:
    """{"1 stream Gbit/s": median, "4 streams Gbit/s": median} of `runs` measurements."""
    return {
        f"{n} stream{'s' if n > 1 else ''} Gbit/s": median([measure(n) for _ in range(runs)])
        for n in (1, 4)
    }


def measure_ports(runs: int, seconds: int) -> dict[str, dict[str, float]]:
    """Workspace -> published port throughput, for each of docker-up's port forwarders and
    for rootlesskit's builtin and slirp4netns port drivers, in one run."""
    cases: list[tuple[str, list[str], dict[str, str]]] = [
        ("docker-up splice", ["--port-forwarder", "splice"], {}),
        ("docker-up slirp", ["--port-forwarder", "slirp"], {}),
        ("rootlesskit builtin", [], {"DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER": "builtin"}),
        ("rootlesskit slirp4netns", [],
         {"DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER": "slirp4netns"}),
    ]  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    port, rr_port = 25201, 25202
    with iperf_image() as tar, tempfile.TemporaryDirectory(prefix="dockerup-rr-") as tmp:
        tcprr = str(Path(tmp) / "tcprr")
        subprocess.run(["cc", "-O2", "-o", tcprr, str(Path(__file__).with_name("tcprr.c"))],
                       check=True)  # fmt: skip
        for name, args, env in cases:
            with fresh_home() as home, daemon(home, name, args, env) as run:
                docker_cli(home, run.host, "import", str(tar), "iperf:bench")
                docker_cli(home, run.host, "run", "-d", "-p", f"{port}:5201", "iperf:bench",
                           "iperf3", "-s")  # fmt: skip
                docker_cli(home, run.host, "run", "-d", "-p", f"{rr_port}:5300", "iperf:bench",
                           "tcprr", "-s", "5300", "0.0.0.0")  # fmt: skip
                results[name] = by_streams(lambda n: iperf_gbps(port, n, seconds), runs)
                results[name].update(published_rr(tcprr, rr_port, runs))
    return results


def published_rr(tcprr: str, port: int, runs: int) -> dict[str, float]:
    """Round trips of 64 bytes on one connection, and connections (each with one round
    trip), from the workspace to a published port: what a short request costs."""
    rows = []
    for _ in range(runs):
        for _ in range(50):  # the server in the container may still be starting
            r = subprocess.run([tcprr, "127.0.0.1", str(port), "2000", "300"],
                               capture_output=True, text=True)  # fmt: skip
            if r.returncode == 0:
                break
            time.sleep(0.1)
        doc = json.loads(r.stdout)
        rows.append({"rtt p50 us": doc["rtt_p50_us"], "connects/s": doc["connects_per_s"]})
    return medians(rows)


REGISTRY_PORT = 25000
# Pulls and pushes through a registry on the workspace's loopback: docker-up's drivers with
# and without its daemon acceleration, and Debian's rootlesskit+slirp4netns (the peer).
REGISTRY_SETUPS: list[tuple[str, list[str]]] = [
    ("docker-up slirp4netns", ["--net", "slirp4netns", "--no-daemon-net-accel"]),
    ("docker-up slirp4netns + daemon-net-accel", ["--net", "slirp4netns", "--daemon-net-accel"]),
    ("docker-up pasta", ["--net", "pasta", "--no-daemon-net-accel"]),
    ("docker-up pasta + daemon-net-accel", ["--net", "pasta", "--daemon-net-accel"]),
    ("rootlesskit+slirp4netns", [f"--insecure-registry=10.0.2.2:{REGISTRY_PORT}"]),
]


@contextlib.contextmanager
def registry(home: Home) -> Iterator[None]:
    """Debian's docker-registry (distribution 2.8) on the workspace's 127.0.0.1, as the test
    user, with empty storage (a push uploads everything)."""
    d = Path(tempfile.mkdtemp(prefix="dockerup-registry-"))
    os.chown(d, home.uid, home.gid)
    config = d / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {d / 'data'}\nhttp:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n"
    )
    p = home.popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        import urllib.request

        for _ in range(200):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{REGISTRY_PORT}/v2/", timeout=1)
                break
            time.sleep(0.05)
        yield
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def big_image(layers: int, layer_mb: int) -> Iterator[Path]:
    """`docker save` of an image of `layers` random layers of layer_mb MiB each (random:
    nothing compresses), built once by a docker-up of its own."""
    out = Path(tempfile.mkdtemp(prefix="dockerup-big-"))
    os.chmod(out, 0o755)
    tar = out / "big.tar"
    try:
        with fresh_home() as home, daemon(home, "docker-up (build)", []) as run:
            subprocess.run([str(Path(__file__).with_name("busybox-rootfs")),
                            str(home.root / "bb.tar")], check=True)  # fmt: skip
            os.chmod(home.root / "bb.tar", 0o644)
            docker_cli(home, run.host, "import", str(home.root / "bb.tar"), "bb:bench")
            ctx = home.root / "ctx"
            ctx.mkdir()
            steps = [f"RUN dd if=/dev/urandom of=/layer{i} bs=1M count={layer_mb} 2>/dev/null"
                     for i in range(layers)]  # fmt: skip
            (ctx / "Dockerfile").write_text("\n".join(["FROM bb:bench", *steps]) + "\n")
            os.chown(ctx, home.uid, home.gid)
            docker_cli(home, run.host, "build", "-q", "-t", "big:bench", str(ctx))
            os.chown(out, home.uid, home.gid)
            docker_cli(home, run.host, "save", "-o", str(tar), "big:bench")
        os.chmod(tar, 0o644)
        yield tar
    finally:
        shutil.rmtree(out, ignore_errors=True)


def timed_cli(home: Home, host: str, *args: str) -> float:
    t0 = time.monotonic()
    docker_cli(home, host, *args)
    return time.monotonic() - t0


def measure_registry(runs: int, layers: int, layer_mb: int) -> dict[str, dict[str, float]]:
    """Push and pull of a big image through a registry in the workspace (10.0.2.2 from
    dockerd's side), seconds (median), and the network helper's CPU seconds for a pull."""
    results: dict[str, dict[str, float]] = {}
    image = f"10.0.2.2:{REGISTRY_PORT}/bench/big:1"
    with big_image(layers, layer_mb) as tar:
        for name, args in REGISTRY_SETUPS:
            rows = []
            with fresh_home() as home, net_daemon(home, name, args, 65520) as run:
                docker_cli(home, run.host, "load", "-i", str(tar))
                docker_cli(home, run.host, "tag", "big:bench", image)
                for _ in range(runs):
                    with registry(home):
                        push = timed_cli(home, run.host, "push", image)
                        docker_cli(home, run.host, "rmi", image, "big:bench")
                        cpu = cpu_s(run.helper)
                        pull = timed_cli(home, run.host, "pull", image)
                        rows.append({"push s": push, "pull s": pull,
                                     "helper CPU s (pull)": cpu_s(run.helper) - cpu})  # fmt: skip
                        docker_cli(home, run.host, "tag", image, "big:bench")
            results[name] = medians(rows)
    return results


def measure_shell(runs: int) -> dict[str, float]:
    """What docker-up's rc snippet adds to `bash -i -c exit`, in milliseconds (median)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dockerup import shellinit

    home = Home()
    rc = home.root / "home" / ".bashrc"
    rc.parent.mkdir()
    os.chown(rc.parent, home.uid, home.gid)

    def timed(text: str) -> float:
        rc.write_text(text)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(["bash", "-i", "-c", "exit"], user=home.uid, group=home.gid,
                           extra_groups=[], env={**home.env(), "HOME": str(rc.parent)},
                           capture_output=True, check=True)  # fmt: skip
            times.append(time.perf_counter() - t0)
        return median(times) * 1000

    du = str(VENV / "bin" / "docker-up")
    try:
        bare = timed("")
        # Not running: the snippet forks its background start; /bin/true stands in for
        # docker-up so that no daemon appears while we measure.
        not_running = timed(shellinit.snippet("bash", "/bin/true"))
        p = home.popen([du, "--detach"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.wait(120)
        time.sleep(3)  # a daemon that just started is still busy: measure it idle
        running = timed(shellinit.snippet("bash", du))
        subprocess.run([du, "stop"], user=home.uid, group=home.gid, extra_groups=[],
                       env=home.env(), capture_output=True, timeout=90)  # fmt: skip
    finally:
        home.cleanup()
    return {"bash -i -c exit (ms)": bare, "added, daemon running (ms)": running - bare,
            "added, daemon not running (ms)": not_running - bare}  # fmt: skip


@dataclass
class Running:
    """A daemon under test: its DOCKER_HOST, how long it took to answer, the PID of its
    network helper, and the PIDs of the launcher's own processes (for resident memory)."""

    host: str
    ready_s: float
    helper: int
    own: list[int]


# Container <-> workspace set-ups, all at the same MTU: docker-up with each driver, and
# Debian's rootlesskit with slirp4netns (the peer), with host loopback allowed everywhere.
# "untuned" is docker-up's slirp4netns without the containers' send-buffer cap: what
# slirp4netns at MTU 65520 does by itself, the baseline of the targets.
NET_SETUPS: list[tuple[str, list[str], dict[str, str]]] = [
    ("docker-up slirp4netns (default)", ["--net", "slirp4netns"], {}),
    ("docker-up slirp4netns untuned", ["--net", "slirp4netns"],
     {"DOCKER_UP_TCP_WMEM_MAX": "0"}),
    ("docker-up pasta", ["--net", "pasta"], {}),
    ("docker-up slirp4netns + net-accel", ["--net", "slirp4netns", "--net-accel"], {}),
    ("rootlesskit+slirp4netns", [], {}),
]  # fmt: skip
LOOPBACK = "host loopback (the limit)"
THROUGHPUT = ("c->w 1 stream", "c->w 4 streams", "w->c 1 stream", "w->c 4 streams")


def loopback_launcher(home: Home) -> str:
    """Debian's dockerd-rootless.sh hard-codes --disable-host-loopback: a copy without it."""
    script = home.root / "dockerd-rootless-loopback.sh"
    script.write_text(Path(ROOTLESS_SH).read_text().replace("--disable-host-loopback ", ""))
    script.chmod(0o755)
    return str(script)


def net_daemon(home: Home, name: str, args: list[str], mtu: int,
               env: dict[str, str] | None = None) -> AbstractContextManager[Running]:  # fmt: skip
    """A daemon for the container <-> workspace set-ups: host loopback allowed, this MTU."""
    if name.startswith("docker-up"):
        pre = ["--allow-host-loopback", "--mtu", str(mtu)]
        if "--net-accel" not in args:  # on by default with host loopback: the helper's path
            pre.append("--no-net-accel")
        return daemon(home, name, [*pre, *args], env)
    # The same MTU for rootlesskit's tap and for dockerd's bridge (the launcher passes its
    # arguments on to dockerd).
    return daemon(home, name, [f"--mtu={mtu}", *args],
                  {"DOCKERD_ROOTLESS_ROOTLESSKIT_MTU": str(mtu)},
                  launcher=loopback_launcher(home))  # fmt: skip


@contextlib.contextmanager
def daemon(home: Home, name: str, args: list[str], env: dict[str, str] | None = None,
           launcher: str = ROOTLESS_SH) -> Iterator[Running]:  # fmt: skip
    """docker-up (names starting with "docker-up") or Docker's rootless launcher (its args go
    on to dockerd), as the test user; yields it running; removes its containers and stops
    it."""
    t0 = time.monotonic()
    if name.startswith("docker-up"):
        p = home.popen([str(VENV / "bin" / "docker-up"), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, extra_env=env)  # fmt: skip
        assert p.stdout
        line = next((ln for ln in p.stdout if ln.startswith("export DOCKER_HOST=")), "")
        if not line:
            raise RuntimeError(f"{name} did not start: exit {p.wait()}")
        ready = time.monotonic() - t0
        state = json.loads((home.root / "run" / "docker-up" / "state.json").read_text())
        run = Running(line.strip().split("=", 1)[1], ready, state["net_pid"],
                      [p.pid, state["net_pid"]])  # fmt: skip
        stop = signal.SIGINT
    else:
        p = home.popen([launcher, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       extra_env=env)  # fmt: skip
        sock = home.root / "run" / "docker.sock"
        while not ping(sock):
            if p.poll() is not None or time.monotonic() - t0 > 60:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.002)
        ready = time.monotonic() - t0
        kids = {c: Path(f"/proc/{c}/comm").read_text().strip() for c in children(p.pid)}
        slirp = next(c for c, comm in kids.items() if comm == "slirp4netns")
        own = [p.pid, slirp, *[c for c, comm in kids.items() if comm == "exe"]]
        run = Running(f"unix://{sock}", ready, slirp, own)
        stop = signal.SIGTERM
    try:
        yield run
    finally:
        containers = docker_cli(home, run.host, "ps", "-aq", check=False).split()
        if containers:
            docker_cli(home, run.host, "rm", "-f", *containers, check=False)
        p.send_signal(stop)
        p.wait(90)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iperf_json(doc: dict[str, Any], what: str) -> tuple[float, float]:
    """(Gbit/s, bytes) received, from iperf3 -J output."""
    if "error" in doc:
        raise RuntimeError(f"{what}: iperf3: {doc['error']}")
    end = doc["end"]["sum_received"]
    return float(end["bits_per_second"]) / 1e9, float(end["bytes"])


def one_setup_run(home: Home, run: Running, ports: tuple[int, int], seconds: int,
                  tar: Path) -> dict[str, float]:  # fmt: skip
    """One run of every measure against one running daemon."""
    iperf_port, rr_port = ports
    docker_cli(home, run.host, "import", str(tar), "iperf:bench")
    row: dict[str, float] = {}
    for col in THROUGHPUT:
        streams = "1" if "1 stream" in col else "4"
        reverse = ["-R"] if col.startswith("w->c") else []
        cpu0 = cpu_s(run.helper)
        out = docker_cli(home, run.host, "run", "--rm", "iperf:bench", "iperf3", "-c",
                         "10.0.2.2", "-p", str(iperf_port), "-t", str(seconds), "-P", streams,
                         "-J", *reverse)  # fmt: skip
        gbps, moved = iperf_json(json.loads(out), col)
        row[col] = gbps
        if col == "c->w 1 stream":
            row["helper CPU s/GB"] = (cpu_s(run.helper) - cpu0) / (moved / 1e9)
    out = docker_cli(home, run.host, "run", "--rm", "iperf:bench", "tcprr", "10.0.2.2",
                     str(rr_port), "2000", "300")  # fmt: skip
    row.update(json.loads(out))
    row["ready s"] = run.ready_s
    row["resident MiB"] = sum(rss_kb(p) for p in run.own) / 1024
    return row


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: median([r[k] for r in rows]) for k in rows[0]}


def loopback_row(ports: tuple[int, int], runs: int, seconds: int, tcprr: str) -> dict[str, float]:
    rows = []
    for _ in range(runs):
        row = {}
        for col in THROUGHPUT:
            streams = 1 if "1 stream" in col else 4
            row[col] = iperf_gbps(ports[0], streams, seconds)
        r = subprocess.run([tcprr, "127.0.0.1", str(ports[1]), "2000", "300"],
                           capture_output=True, text=True, check=True)  # fmt: skip
        rows.append({**row, **json.loads(r.stdout)})
    return medians(rows)


def measure_net(runs: int, seconds: int, mtu: int) -> dict[str, dict[str, float]]:
    """Container <-> workspace loopback (servers on the workspace's 127.0.0.1, reached as
    10.0.2.2), per set-up, beside the machine's own loopback: the limit. Every set-up runs
    `runs` times, a fresh start each time, alternating, so drift hits them alike."""
    ports = (25301, 25302)
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in NET_SETUPS}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dockerup-rr-")))
        tcprr = str(tmp / "tcprr")
        subprocess.run(["cc", "-O2", "-o", tcprr, str(Path(__file__).with_name("tcprr.c"))],
                       check=True)  # fmt: skip
        for argv in (["iperf3", "-s", "-B", "127.0.0.1", "-p", str(ports[0])],
                     [tcprr, "-s", str(ports[1])]):  # fmt: skip
            server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(server.wait)
            stack.callback(server.terminate)
        time.sleep(0.3)  # the servers bind; iperf_gbps retries anyway
        out = {LOOPBACK: loopback_row(ports, runs, seconds, tcprr)}
        tar = stack.enter_context(iperf_image())
        homes_ = {name: stack.enter_context(fresh_home()) for name, _, _ in NET_SETUPS}
        for _ in range(runs):
            for name, args, env in NET_SETUPS:
                with net_daemon(homes_[name], name, args, mtu, env) as run:
                    results[name].append(one_setup_run(homes_[name], run, ports, seconds, tar))
    out.update({name: medians(rows) for name, rows in results.items()})
    return out


# Container -> a test host on the workspace's network (issue 27): a network namespace of
# this machine behind a veth, an address only the default route leads to. docker-up with no
# options (the fast path on, host loopback closed), docker-up on the helper's path, and
# Debian's rootless launcher as it ships (host loopback closed), MTU 65520 for it too.
REMOTE_NET = "192.168.120"
REMOTE_SETUPS: list[tuple[str, list[str], dict[str, str]]] = [
    ("docker-up, no options", [], {}),
    ("docker-up --no-net-accel (slirp4netns path)", ["--no-net-accel"], {}),
    ("rootlesskit+slirp4netns, MTU 65520", ["--mtu=65520"],
     {"DOCKERD_ROOTLESS_ROOTLESSKIT_MTU": "65520"}),
]  # fmt: skip
REMOTE_WORKSPACE = "the workspace itself"
REMOTE_COLS = ("1 stream Gbit/s", "connects/s")


@contextlib.contextmanager
def remote_host(tcprr: str, ports: tuple[int, int]) -> Iterator[str]:
    """A test host: a network namespace with an iperf3 and a tcprr server, NET.2 over a
    veth whose workspace end is NET.1. Yields NET.2; removes all of it."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    near, far, peer = "dupbencha", "dupbenchb", f"{REMOTE_NET}.2"
    servers: list[subprocess.Popen[bytes]] = []
    try:
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            time.sleep(0.01)
        ns = ["nsenter", "-t", str(holder.pid), "-n"]
        for cmd in (["ip", "link", "add", near, "type", "veth", "peer", "name", far,
                     "netns", str(holder.pid)],
                    ["ip", "addr", "add", f"{REMOTE_NET}.1/24", "dev", near],
                    ["ip", "link", "set", near, "up"],
                    [*ns, "ip", "addr", "add", f"{peer}/24", "dev", far],
                    [*ns, "ip", "link", "set", far, "up"],
                    [*ns, "ip", "link", "set", "lo", "up"]):  # fmt: skip
            subprocess.run(cmd, check=True)
        for argv in (["iperf3", "-s", "-B", peer, "-p", str(ports[0])],
                     [tcprr, "-s", str(ports[1]), peer]):  # fmt: skip
            servers.append(subprocess.Popen([*ns, *argv], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))  # fmt: skip
        time.sleep(0.3)  # the servers bind; the clients retry anyway
        yield peer
    finally:
        for p in (*servers, holder):
            p.kill()
            p.wait()
        subprocess.run(["ip", "link", "del", near], stderr=subprocess.DEVNULL, check=False)


def remote_row(client: Callable[[list[str]], str], peer: str, ports: tuple[int, int],
               seconds: int) -> dict[str, float]:  # fmt: skip
    """iperf3 (1 stream) and tcprr's connection rate to the test host, from one client."""
    for _ in range(50):  # the iperf3 server may still be starting
        with contextlib.suppress(RuntimeError, ValueError):
            doc = json.loads(client(["iperf3", "-c", peer, "-p", str(ports[0]), "-t",
                                     str(seconds), "-J"]))  # fmt: skip
            gbps, _ = iperf_json(doc, "remote")
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("iperf3 to the test host failed")
    rr = json.loads(client(["tcprr", peer, str(ports[1]), "2000", "1000"]))
    return {"1 stream Gbit/s": gbps, "connects/s": float(rr["connects_per_s"])}


def measure_remote(runs: int, seconds: int) -> dict[str, dict[str, float]]:
    """Each round: the workspace itself, then every set-up (a fresh start each), in turn,
    so drift hits them alike; medians of the rounds."""
    ports = (25321, 25322)
    rows: dict[str, list[dict[str, float]]] = {REMOTE_WORKSPACE: []}
    rows.update({name: [] for name, _, _ in REMOTE_SETUPS})
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dockerup-rr-")))
        tcprr = str(tmp / "tcprr")
        subprocess.run(["cc", "-O2", "-o", tcprr, str(Path(__file__).with_name("tcprr.c"))],
                       check=True)  # fmt: skip
        peer = stack.enter_context(remote_host(tcprr, ports))
        tar = stack.enter_context(iperf_image())
        homes_ = {name: stack.enter_context(fresh_home()) for name, _, _ in REMOTE_SETUPS}

        def here(argv: list[str]) -> str:
            argv = [tcprr, *argv[1:]] if argv[0] == "tcprr" else argv
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(r.stdout[-300:] + r.stderr[-300:])
            return r.stdout

        for _ in range(runs):
            rows[REMOTE_WORKSPACE].append(remote_row(here, peer, ports, seconds))
            for name, args, env in REMOTE_SETUPS:
                home = homes_[name]
                with daemon(home, name, args, env) as run:
                    docker_cli(home, run.host, "import", str(tar), "iperf:bench")

                    def inside(argv: list[str], home: Home = home, host: str = run.host) -> str:
                        return docker_cli(home, host, "run", "--rm", "iperf:bench", *argv)

                    rows[name].append(remote_row(inside, peer, ports, seconds))
    return {name: medians(r) for name, r in rows.items()}


# What was tried to tune the default (docs/performance.md): the container's TCP send buffer
# cap, per driver, at MTU 65520; then the MTU with the chosen cap. "kernel" leaves the
# container's net.ipv4.tcp_wmem at the kernel's default (max 4 MiB).
WMEM_CAPS = ("kernel", "524288", "262144", "131072", "65536", "32768")
TUNE_MTUS = (1500, 9000, 65520)


def container_iperf(home: Home, run: Running, port: int, seconds: int, streams: int,
                    wmem: str, reverse: bool = False) -> dict[str, float]:  # fmt: skip
    sysctl = [] if wmem == "kernel" else ["--sysctl", f"net.ipv4.tcp_wmem=4096 16384 {wmem}"]
    out = docker_cli(home, run.host, "run", "--rm", *sysctl, "iperf:bench", "iperf3", "-c",
                     "10.0.2.2", "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J",
                     *(["-R"] if reverse else []))  # fmt: skip
    doc = json.loads(out)
    gbps, _ = iperf_json(doc, "tune")
    return {"Gbit/s": gbps, "retransmits": float(doc["end"]["sum_sent"].get("retransmits", 0))}


def measure_tune(runs: int, seconds: int) -> dict[str, dict[str, float]]:
    port = 25311
    rows: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        stack.callback(server.wait)
        stack.callback(server.terminate)
        tar = stack.enter_context(iperf_image())
        cases = [(d, 65520, w) for d in ("slirp4netns", "pasta") for w in WMEM_CAPS]
        cases += [(d, m, w) for d in ("slirp4netns", "pasta") for m in TUNE_MTUS[:-1]
                  for w in ("kernel", "65536")]  # fmt: skip
        by_daemon: dict[tuple[str, int], list[str]] = {}
        for d, m, w in cases:
            by_daemon.setdefault((d, m), []).append(w)
        for (driver, mtu), caps in by_daemon.items():
            # No default cap: each row sets its own with --sysctl, "kernel" none at all.
            no_cap = {"DOCKER_UP_TCP_WMEM_MAX": "0"}
            name = f"docker-up {driver}"
            with fresh_home() as home, net_daemon(home, name, ["--net", driver], mtu,
                                                  no_cap) as run:  # fmt: skip
                docker_cli(home, run.host, "import", str(tar), "iperf:bench")
                for wmem in caps:
                    one = [container_iperf(home, run, port, seconds, 1, wmem)
                           for _ in range(runs)]  # fmt: skip
                    four = [container_iperf(home, run, port, seconds, 4, wmem)
                            for _ in range(runs)]  # fmt: skip
                    rows[f"{driver} MTU {mtu} wmem {wmem}"] = {
                        "c->w 1 stream": median([r["Gbit/s"] for r in one]),
                        "c->w 4 streams": median([r["Gbit/s"] for r in four]),
                        "retransmits (1 stream)": median([r["retransmits"] for r in one]),
                    }
    return rows


def net_targets(net: dict[str, dict[str, float]]) -> dict[str, float]:
    """The issue's ratios, from this run: the default against the peer at the same MTU, and
    the best driver against slirp4netns."""
    col = "c->w 1 stream"
    default = net["docker-up slirp4netns (default)"][col]
    untuned = net["docker-up slirp4netns untuned"][col]
    drivers = ("docker-up slirp4netns (default)", "docker-up pasta")
    best = max(net[k][col] for k in drivers)
    accel = net["docker-up slirp4netns + net-accel"]
    return {
        "default / rootlesskit+slirp4netns (target >= 1.0)":
            default / net["rootlesskit+slirp4netns"][col],
        "best driver / untuned slirp4netns (target >= 2.0)": best / untuned,
        "net-accel / host loopback (target >= 0.8)": accel[col] / net[LOOPBACK][col],
        "net-accel / untuned slirp4netns (target >= 3.0)": accel[col] / untuned,
        "net-accel / slirp4netns connects per s (target >= 1.0)":
            accel["connects_per_s"] / net["docker-up slirp4netns (default)"]["connects_per_s"],
    }  # fmt: skip


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


@contextlib.contextmanager
def homes() -> Iterator[tuple[Home, Home]]:
    a, b = Home(), Home()
    try:
        yield a, b
    finally:
        a.cleanup()
        b.cleanup()


def measure(runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not os.access(ROOTLESS_SH, os.X_OK) or not shutil.which("rootlesskit"):
        sys.exit(
            f"{ROOTLESS_SH} and rootlesskit are needed (apt-get install docker.io rootlesskit)"
        )
    with homes() as (du_home, rl_home), iperf_image() as tar:
        for temp in ("cold", "warm", "used"):
            du, rl = [], []
            if temp == "warm":  # one untimed start fills the data-root for both
                run_docker_up(du_home)
                run_rootless_sh(rl_home)
            if temp == "used":  # a data-root as a working day leaves it
                fill(du_home, True, tar)
                fill(rl_home, False, tar)
            for i in range(runs):
                if temp == "cold":
                    du_home.wipe_data()
                    rl_home.wipe_data()
                # Both orders, alternating: whichever runs second finds warmer caches.
                if i % 2 == 0:
                    du.append(run_docker_up(du_home))
                    rl.append(run_rootless_sh(rl_home))
                else:
                    rl.append(run_rootless_sh(rl_home))
                    du.append(run_docker_up(du_home))
            results[temp] = {"docker-up": du, "dockerd-rootless.sh": rl}
    return results


USED_IMAGES = USED_CONTAINERS = 20


def fill(home: Home, docker_up: bool, tar: Path) -> None:
    """20 images (one layer each, their own configs) and 20 stopped containers in the
    launcher's data-root: what dockerd loads at every start of a home in use."""
    t0 = time.monotonic()
    if docker_up:
        sock = home.root / "run" / "docker-up" / "docker.sock"
        p = home.popen([str(VENV / "bin" / "docker-up")], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
    else:
        sock = home.root / "run" / "docker.sock"
        p = home.popen([ROOTLESS_SH, f"--data-root={home.root / 'data' / 'docker'}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ping(sock, p, t0, "fill")
        host = f"unix://{sock}"
        for i in range(USED_IMAGES):
            docker_cli(home, host, "import", "--change", f"LABEL n={i}", str(tar), f"used{i}:b")
        for i in range(USED_CONTAINERS):
            docker_cli(home, host, "run", "--name", f"stopped{i}", f"used{i}:b", "iperf3", "-v")
    finally:
        p.send_signal(signal.SIGINT if docker_up else signal.SIGTERM)
        p.wait(90)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for temp, by in results.items():
        du = median([r["ready"] for r in by["docker-up"]])
        rl = median([r["ready"] for r in by["dockerd-rootless.sh"]])
        phases = by["docker-up"][0]["phases"].keys()
        summary[temp] = {
            "docker-up_ready_s": du,
            # Its `export DOCKER_HOST=` line: after the API answers, state.json is written.
            "docker-up_announced_s": median([r["announced"] for r in by["docker-up"]]),
            "dockerd-rootless.sh_ready_s": rl,
            "ratio": du / rl,
            "docker-up_phases_s": {
                k: median([r["phases"][k] for r in by["docker-up"]]) for k in phases
            },
            "docker-up_resident_kb": median([r["rss_kb"] for r in by["docker-up"]]),
            "rootlesskit_parent+child_kb": median([r["rss_kb"] for r in by["dockerd-rootless.sh"]]),
        }
    return summary


def render(summary: dict[str, Any], runs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title=f"launch to /_ping answering, polled every 2 ms (median of {runs}, "
                    "both orders)")  # fmt: skip
    for col in ("", "docker-up", "dockerd-rootless.sh", "ratio", "docker-up's export line"):
        t.add_column(col, justify="right")
    for temp, s in summary.items():
        t.add_row(
            f"{temp} data-root",
            f"{s['docker-up_ready_s']:.3f} s",
            f"{s['dockerd-rootless.sh_ready_s']:.3f} s",
            f"{s['ratio']:.2f}x",
            f"{s['docker-up_announced_s']:.3f} s",
        )
    c.print(t)
    b = Table(title="docker-up, by phase (median), s")
    b.add_column("phase")
    temps = [t for t in ("warm", "used") if t in summary]
    for temp in temps:
        b.add_column(temp, justify="right")
    for k in summary["warm"]["docker-up_phases_s"]:
        b.add_row(k, *(f"{summary[t]['docker-up_phases_s'][k]:.3f}" for t in temps))
    c.print(b)
    m = Table(title="resident memory of the launcher's own processes, idle (median)")
    m.add_column("docker-up (keeper)", justify="right")
    m.add_column("rootlesskit parent+child", justify="right")
    w = summary["warm"]
    m.add_row(
        f"{w['docker-up_resident_kb'] / 1024:.1f} MiB",
        f"{w['rootlesskit_parent+child_kb'] / 1024:.1f} MiB",
    )
    c.print(m)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument(
        "--only",
        choices=("startup", "ports", "shell", "net", "remote", "tune", "registry"),
        help="one part (tune: the tuning sweep, not part of the default report)",
    )
    ap.add_argument("--seconds", type=int, default=3, help="length of each iperf3 run")
    ap.add_argument("--mtu", type=int, default=65520, help="MTU of every set-up in --only net")
    ap.add_argument("--layers", type=int, default=3, help="random layers of --only registry")
    ap.add_argument("--layer-mb", type=int, default=100, help="each layer's size in MiB")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    machine = {"kernel": os.uname().release, "cpus": os.cpu_count()}
    if args.only in (None, "startup"):
        results = measure(args.runs)
        summary = summarize(results)
        doc = {"version": 1, "runs": args.runs, "summary": summary, "raw": results,
               "machine": machine}  # fmt: skip
        doc["lazy"] = lazy = measure_lazy(args.runs)
        (out / "startup.json").write_text(json.dumps(doc, indent=2))
        render(summary, args.runs)
        for k, v in lazy.items():
            print(f"first docker ps, {k}: {v:.3f} s")
        print(f"written: {out / 'startup.json'}")
    if args.only in (None, "shell"):
        shell = measure_shell(max(args.runs * 4, 20))
        (out / "shell.json").write_text(json.dumps({"version": 1, "results": shell}, indent=2))
        for k, v in shell.items():
            print(f"{k}: {v:.1f}")
        print(f"written: {out / 'shell.json'}")
    if args.only in (None, "net"):
        runs = max(1, min(args.runs, 3))
        net = measure_net(runs, args.seconds, args.mtu)
        targets = net_targets(net)
        doc = {"version": 2, "runs": runs, "seconds": args.seconds, "mtu": args.mtu,
               "results": {k: {c: v[c] for c in THROUGHPUT} for k, v in net.items()},
               "all": net, "targets": targets, "machine": machine}  # fmt: skip
        (out / "net.json").write_text(json.dumps(doc, indent=2))
        render_table(f"container <-> workspace loopback, MTU {args.mtu}, Gbit/s unless named",
                     net, runs, LOOPBACK)  # fmt: skip
        for k, v in targets.items():
            print(f"{k}: {v:.2f}x")
        print(f"written: {out / 'net.json'}")
    if args.only in (None, "remote"):
        runs = max(1, min(args.runs, 3))
        remote = measure_remote(runs, args.seconds)
        base = remote[REMOTE_WORKSPACE]
        for row in remote.values():
            row["x native"] = row["1 stream Gbit/s"] / base["1 stream Gbit/s"]
        doc = {"version": 1, "runs": runs, "seconds": args.seconds, "results": remote,
               "machine": machine}  # fmt: skip
        (out / "remote.json").write_text(json.dumps(doc, indent=2))
        render_table("container -> a test host on the workspace's network (veth), 1 stream",
                     remote, runs, REMOTE_WORKSPACE)  # fmt: skip
        print(f"written: {out / 'remote.json'}")
    if args.only == "tune":
        runs = max(1, min(args.runs, 3))
        tune = measure_tune(runs, args.seconds)
        doc = {"version": 1, "runs": runs, "seconds": args.seconds, "results": tune,
               "machine": machine}  # fmt: skip
        (out / "tune.json").write_text(json.dumps(doc, indent=2))
        render_table("tuning: container -> workspace loopback, Gbit/s", tune, runs,
                     "slirp4netns MTU 65520 wmem kernel")  # fmt: skip
        print(f"written: {out / 'tune.json'}")
        return
    if args.only in (None, "ports"):
        runs = max(1, min(args.runs, 3))
        ports = measure_ports(runs, args.seconds)
        doc = {"version": 1, "runs": runs, "seconds": args.seconds, "results": ports,
               "machine": machine}  # fmt: skip
        (out / "ports.json").write_text(json.dumps(doc, indent=2))
        render_table("workspace -> published port, iperf3", ports, runs, "rootlesskit builtin")
        print(f"written: {out / 'ports.json'}")
    if args.only in (None, "registry"):
        runs = max(1, min(args.runs, 3))
        reg = measure_registry(runs, args.layers, args.layer_mb)
        doc = {"version": 1, "runs": runs, "layers": args.layers, "layer_mb": args.layer_mb,
               "results": reg, "machine": machine}  # fmt: skip
        (out / "registry.json").write_text(json.dumps(doc, indent=2))
        render_table(f"push and pull of {args.layers} x {args.layer_mb} MiB random layers, "
                     "registry in the workspace, seconds", reg, runs,
                     "docker-up slirp4netns")  # fmt: skip
        print(f"written: {out / 'registry.json'}")
    png = chart(out)
    if png:
        print(f"written: {png}")


def chart(out: Path) -> Path | None:
    """One PNG with a panel per throughput table found in out/ (docs/performance.md embeds
    it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f, t) for f, t in (("net.json", "container -> workspace loopback"),
                                  ("ports.json", "workspace -> published port"))
              if (out / f).exists()]  # fmt: skip
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (file, title) in zip(axes[0], panels, strict=True):
        rows = json.loads((out / file).read_text())["results"]
        names = list(rows)
        cols = list(next(iter(rows.values())))
        width = 0.8 / len(cols)
        for i, col in enumerate(cols):
            xs = [j + i * width for j in range(len(names))]
            ax.bar(xs, [rows[n][col] for n in names], width, label=col)
        ax.set_xticks([j + width * (len(cols) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("Gbit/s (iperf3, median)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "performance.png"
    fig.savefig(path, dpi=110)
    return path


def render_table(title: str, rows: dict[str, dict[str, float]], runs: int, base_name: str
                 ) -> None:  # fmt: skip
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{title} (median of {runs}; throughput ratio to {base_name})")
    t.add_column("set-up")
    cols = list(dict.fromkeys(c for row in rows.values() for c in row))
    for c in cols:
        t.add_column(c, justify="right")
    base = rows.get(base_name, {})
    for name, row in rows.items():
        cells = []
        for c in cols:
            if c not in row:
                cells.append("-")
                continue
            ratio = f" ({row[c] / base[c]:.2f}x)" if base.get(c) and "stream" in c else ""
            cells.append(f"{row[c]:.2f}{ratio}")
        t.add_row(name, *cells)
    Console(width=max(120, 16 * (len(cols) + 1))).print(t)


if __name__ == "__main__":
    main()
