"""The inside of scripts/compat (root, in scripts/isolated's network namespace): per engine, a
workspace of its own as the unprivileged user, docker-up started with that engine first on
PATH, the test images imported from the busybox tarball, docker-py's integration tests run
against docker-up's socket, docker-up stopped and nothing left running. Then a summary of
the junit XML: counts per engine, and the tests whose outcome differs from the system's.

  compat.py --user U --venv V --client C --tests DIR --out DIR --timeout S NAME=BINDIR... -- ARGS
  compat.py --report DIR...   the matrix again from earlier runs' NAME.json and NAME.xml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

# The names docker-py's integration tests run containers from (TEST_IMG in
# tests/integration/base.py, and the ones its tests name without pulling), all the busybox
# rootfs: what a test needs beyond a shell and busybox's applets fails alike on every engine.
IMAGES = ("alpine:3.10", "alpine:latest", "alpine", "busybox:latest", "busybox")
# docker-py's default API version: a newer engine is driven at this one, an older at its own.
CLIENT_API = (1, 45)
# The whole run of one engine: a hung daemon must not hold the matrix up for ever.
RUN_LIMIT = 3 * 3600
# What a failure says when the test needed a registry (none is reachable here, by design).
REGISTRY_SIGNS = (
    "pull access denied",
    "dial tcp",
    "lookup ",
    "i/o timeout",
    "registry-1",
    "no such host",
    "network is unreachable",
    "connection refused",
    "TLS handshake timeout",
    "request canceled",
    "Client.Timeout",
    "failed to resolve",
    "server misbehaving",
)


class User:
    def __init__(self, name: str) -> None:
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, pw.pw_uid, pw.pw_gid


def as_user(user: User, env: dict[str, str], cwd: Path) -> dict[str, object]:
    return {"user": user.uid, "group": user.gid, "extra_groups": [], "env": env, "cwd": cwd}


def workspace(user: User, name: str) -> Path:
    """A directory of the user's own with its run, data, config, home and tmp dirs."""
    root = Path(tempfile.mkdtemp(prefix=f"dockerup-compat-{name}-", dir="/tmp"))
    os.chmod(root, 0o755)
    for sub in ("run", "data", "config", "home", "tmp"):
        (root / sub).mkdir(mode=0o700)
    for d in (root, *root.iterdir()):
        os.chown(d, user.uid, user.gid)
    return root


def user_env(root: Path, user: User, venv: Path, bindir: str) -> dict[str, str]:
    path = f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"
    return {
        # The engine first on PATH, as a user who installed it has it (test_engines.py).
        "PATH": f"{bindir}:{path}" if bindir else path,
        "HOME": str(root / "home"),
        "USER": user.name,
        "LANG": "C.UTF-8",
        "TMPDIR": str(root / "tmp"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "NO_COLOR": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run(
    argv: list[str], user: User, env: dict[str, str], cwd: Path, timeout: float, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, text=True, timeout=timeout, **as_user(user, env, cwd), **kw)  # type: ignore[call-overload, no-any-return]


def api_version(text: str) -> str:
    """The API version docker-py talks: the engine's own, or docker-py's default if newer."""
    mine = tuple(int(x) for x in text.strip().split("."))
    return text.strip() if mine < CLIENT_API else ".".join(map(str, CLIENT_API))


def processes_of(uid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if (
                    d.stat().st_uid == uid
                    and "Z" not in (d / "stat").read_text().rsplit(")")[1][:3]
                ):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def stop(root: Path, user: User, env: dict[str, str], venv: Path) -> list[int]:
    """docker-up stop, then what it left (if anything), ended by PID: returns those PIDs."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        run([f"{venv}/bin/docker-up", "stop"], user, env, root, 180, capture_output=True)
    deadline = time.monotonic() + 30
    while (left := processes_of(user.uid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def one_engine(name: str, bindir: str, a: argparse.Namespace, user: User) -> dict[str, object]:
    root = workspace(user, name)
    env = user_env(root, user, a.venv, bindir)
    log = open(a.out / f"{name}.log", "w")  # noqa: SIM115 - closed below
    info: dict[str, object] = {"engine": name, "bindir": bindir}
    try:
        t0 = time.monotonic()
        up = run([f"{a.venv}/bin/docker-up", "--detach"], user, env, root, 180, capture_output=True)
        log.write(f"$ docker-up --detach -> {up.returncode}\n{up.stdout}{up.stderr}\n")
        if up.returncode != 0:
            info["error"] = f"docker-up --detach exited {up.returncode}: {up.stderr.strip()[-500:]}"
            return info
        info["start_s"] = round(time.monotonic() - t0, 2)
        env["DOCKER_HOST"] = f"unix://{root}/run/docker-up/docker.sock"
        ver = run(
            ["docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
            user,
            env,
            root,
            60,
            capture_output=True,
            check=True,
        )
        info["version"], server_api = ver.stdout.split()
        info["api"] = env["DOCKER_TEST_API_VERSION"] = api_version(server_api)
        first, *rest = IMAGES
        run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["/bin/sh"]',
                str(a.tests / "busybox.tar"),
                first,
            ],
            user,
            env,
            root,
            120,
            capture_output=True,
            check=True,
        )
        for img in rest:
            run(["docker", "tag", first, img], user, env, root, 60, capture_output=True, check=True)
        try:
            info["features"] = features(root, user, env)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            info["features"] = {"error": repr(e)}
        junit = root / "junit.xml"
        argv = [
            f"{a.client}/bin/python",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-v",
            f"--timeout={a.timeout}",
            f"--junitxml={junit}",
            *a.pytest,
        ]
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        t0 = time.monotonic()
        try:
            r = run(argv, user, env, a.tests, RUN_LIMIT, stdout=log, stderr=subprocess.STDOUT)
            info["pytest_exit"] = r.returncode
        except subprocess.TimeoutExpired:
            info["pytest_exit"] = "timeout"
        info["tests_s"] = round(time.monotonic() - t0)
        if junit.exists():
            shutil.copy(junit, a.out / f"{name}.xml")
    finally:
        info["left_running"] = stop(root, user, env, a.venv)
        logs = root / "run" / "docker-up" / "logs"
        if logs.is_dir():
            shutil.copytree(logs, a.out / f"{name}-logs", dirs_exist_ok=True)
        log.close()
        # The data-root holds files of subordinate ids: only root removes them.
        shutil.rmtree(root, ignore_errors=True)
    return info


def http_get(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip()


def rlk_ports(sock: Path) -> object:
    """GET /v1/ports from docker-up's RootlessKit API (root may connect to its socket)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(b"GET /v1/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1] or b"null")


def children_of(pid: int) -> set[str]:
    """What dockerd runs (from every thread's children: Go starts them from any thread),
    by the name of the program (a script: its interpreter's argument)."""
    names = set()
    for kids in Path(f"/proc/{pid}/task").glob("*/children"):
        for k in kids.read_text().split():
            try:
                argv = Path(f"/proc/{k}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"python" in argv[0]:
                argv = [a for a in argv[1:] if not a.startswith(b"-")] or argv
            prog = argv[0]
            names.add(Path(prog.decode()).name)
    return names


def features(root: Path, user: User, env: dict[str, str]) -> dict[str, object]:
    """What this engine got from docker-up, as seen from outside: dockerd's environment and
    files, docker info's cgroup lines, and the path a published port takes."""
    rt = root / "run" / "docker-up"
    state = json.loads((rt / "state.json").read_text())
    denv = dict(
        kv.split("=", 1)
        for kv in (Path(f"/proc/{state['dockerd_pid']}/environ").read_text().split("\0"))
        if "=" in kv
    )
    rlk = Path(denv.get("ROOTLESSKIT_STATE_DIR", rt / "rootlesskit"))
    toml = (rt / "exec" / "containerd" / "containerd.toml").read_text()
    fmt = "{{json .CgroupVersion}} {{json .CgroupDriver}} {{json .Warnings}}"
    cg, drv, warn = run(
        ["docker", "info", "--format", fmt], user, env, root, 60, capture_output=True, check=True
    ).stdout.split(" ", 2)
    f: dict[str, object] = {
        "engine_state": state.get("engine"),
        "ROOTLESSKIT_STATE_DIR": "ROOTLESSKIT_STATE_DIR" in denv,
        "rootlesskit_api_sock": (rlk / "api.sock").exists(),
        "detached_netns": (rlk / "netns").exists(),
        "userland_proxy_path": json.loads((rt / "daemon.json").read_text()).get(
            "userland-proxy-path"
        ),
        "containerd_config_version": next(
            (ln.split("=")[1].strip() for ln in toml.splitlines() if ln.startswith("version")), None
        ),
        "cgroup_version": json.loads(cg),
        "cgroup_driver": json.loads(drv),
        "info_warnings": json.loads(warn),
    }
    # A published port, from the workspace's side (this namespace is the workspace's).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cid = run(
        [
            "docker",
            "run",
            "-d",
            "-p",
            f"{port}:80",
            "alpine",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ],
        user,
        env,
        root,
        60,
        capture_output=True,
        check=True,
    ).stdout.strip()
    deadline, got = time.monotonic() + 15, ""
    while time.monotonic() < deadline and got != cid[:12]:
        try:
            got = http_get(port)
        except OSError:
            time.sleep(0.2)
    f["published_port_answers"] = got == cid[:12]
    f["dockerd_port_proxy"] = sorted(children_of(int(state["dockerd_pid"])) - {"containerd"})
    f["rootlesskit_api_ports"] = rlk_ports(rlk / "api.sock") if f["rootlesskit_api_sock"] else None
    run(["docker", "rm", "-f", cid], user, env, root, 60, capture_output=True)
    return f


KINDS = ("passed", "failed", "registry", "skipped")
NONE = ("absent", "")
ORDER = {"system": 0, "trixie": 1, "sid": 2}


def outcomes(xml: Path) -> dict[str, tuple[str, str]]:
    """test id -> (passed|failed|skipped|registry, first line of the reason)."""
    got: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).iter("testcase"):
        tid = f"{case.get('classname')}::{case.get('name')}"
        result, why = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                text = f"{child.get('message') or ''}\n{child.text or ''}"
                why = (
                    (child.get("message") or (child.text or "").strip()).splitlines()[0][:300]
                    if text.strip()
                    else ""
                )
                if child.tag == "skipped":
                    result = "skipped"
                elif any(s in text for s in REGISTRY_SIGNS) or "pull(" in text:
                    result = "registry"
                else:
                    result = "failed"
                break
        got[tid] = (result, why)
    return got


def summary(dirs: list[Path]) -> str:
    """The matrix from the NAME.json and NAME.xml that runs left in these directories."""
    per: dict[str, dict[str, tuple[str, str]]] = {}
    lines = [
        "engine | version | API | passed | failed | needs a registry | skipped | total | took",
        "--- | --- | --- | --- | --- | --- | --- | --- | ---",
    ]
    runs = [p for d in dirs for p in d.glob("*.json") if p.with_suffix(".xml").exists()]
    for f in sorted(runs, key=lambda p: (ORDER.get(p.stem, len(ORDER)), p.stem)):
        i = json.loads(f.read_text())
        per[name := str(i["engine"])] = o = outcomes(f.with_suffix(".xml"))
        n = {k: sum(1 for r, _ in o.values() if r == k) for k in KINDS}
        lines.append(
            f"{name} | {i['version']} | {i['api']} | {n['passed']} | {n['failed']} | "
            f"{n['registry']} | {n['skipped']} | {len(o)} | {i.get('tests_s')} s"
        )
    base = per.get("system", {})
    for name, o in per.items():
        if name == "system":
            continue
        diff = sorted(t for t in set(base) | set(o) if base.get(t, NONE)[0] != o.get(t, NONE)[0])
        lines += ["", f"## system -> {name}: {len(diff)} tests differ"]
        for t in diff:
            b, e = base.get(t, NONE), o.get(t, NONE)
            lines.append(f"- {t}: {b[0]} -> {e[0]}: {e[1] or b[1]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    if sys.argv[1:2] == ["--report"]:
        print(summary([Path(d) for d in sys.argv[2:]]), end="")
        return 0
    p = argparse.ArgumentParser()
    for opt in ("--user", "--venv", "--client", "--tests", "--out"):
        p.add_argument(opt, required=True)
    p.add_argument("--timeout", type=int, default=120)
    p.add_argument("engines", nargs="+", help="NAME=BINDIR (empty: the system's)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:split])
    a.pytest = argv[split + 1 :] or ["tests/integration"]
    a.venv, a.client, a.tests, a.out = map(Path, (a.venv, a.client, a.tests, a.out))
    user = User(a.user)
    infos = []
    for spec in a.engines:
        name, bindir = spec.split("=", 1)
        print(f"compat: {name}: docker-py's tests on docker-up ...", flush=True)
        infos.append(info := one_engine(name, bindir, a, user))
        (a.out / f"{name}.json").write_text(json.dumps(info, indent=1))
        print(f"compat: {name}: {json.dumps(info)}", flush=True)
    text = summary([a.out])
    (a.out / "summary.md").write_text(text)
    print(text)
    return 1 if any(i.get("left_running") or i.get("error") for i in infos) else 0


if __name__ == "__main__":
    sys.exit(main())
