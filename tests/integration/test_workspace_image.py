"""Everything that runs docker-up as real root, which is one daemon per machine
(/run/docker-up): so one module, which runs on one test worker (scripts/test: --dist
loadscope), privileged mode first, then the workspace image on its own outer daemon.

The product's reason to exist: an unprivileged workspace container (no --privileged, no
CAP_NET_ADMIN on its node) runs docker-up, and real containers inside it.

The outer daemon is docker-up itself, as root (privileged mode, in its own network
namespace), so nothing touches this machine's network. The image is built once per run by
scripts/build-image (from the debootstrap base that scripts/prepare caches, outside the
isolated namespace). With scripts/test --fresh the outer daemon's data-root is new too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.manifest import docker_run_options, load

from .harness import VENV, Namespace, pid_alive, wait_for

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "docker-up-workspace"
# The minimum, read from the Kubernetes manifest users deploy (deploy/kubernetes, whose
# comments say why each is there) and translated into docker run options: the manifest
# cannot drift from what this test proves. Each carries the words its absence fails with.
NEEDED, OTHER = docker_run_options(load()["spec"])
RUN_OPTS = [arg for n in NEEDED for arg in n.options] + OTHER
INNER_HOST = "unix:///tmp/docker-up-33333/docker.sock"
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    "HOME": "/root",
    "NO_COLOR": "1",
}


@pytest.mark.parametrize("host_network", [False, True])
def test_privileged_mode(tmp_path: Path, busybox_tar: Path, host_network: bool) -> None:
    """Real root (this test process; CI is root). Its own network namespace by default; with
    --host-network, the current one: here that is the test's isolated namespace."""
    env = {
        "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": "/root",
        "NO_COLOR": "1",
    }
    args = ["--host-network"] if host_network else []
    p = subprocess.Popen(
        [f"{VENV}/bin/docker-up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "export DOCKER_HOST=unix:///run/docker-up/docker.sock", (
            p.stderr.read() if p.poll() is not None else line
        )  # type: ignore[union-attr]
        state = json.loads(Path("/run/docker-up/state.json").read_text())
        assert state["mode"] == "privileged"
        netns = Namespace(state["dockerd_pid"], "net")
        assert netns.has("self") == host_network
        denv = {**env, "DOCKER_HOST": "unix:///run/docker-up/docker.sock"}
        subprocess.run(
            ["docker", "import", str(busybox_tar), "bb:test"],
            env=denv,
            check=True,
            capture_output=True,
        )
        r = subprocess.run(
            ["docker", "run", "--rm", "bb:test", "echo", "priv"],
            env=denv,
            capture_output=True,
            text=True,
            check=True,
        )
        assert r.stdout.strip() == "priv"
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0
    with netns:
        wait_for(lambda: host_network or not netns.members(), 30, "nothing left")
    helper = state.get("net_pid")
    assert (helper is None) == host_network
    wait_for(lambda: helper is None or not pid_alive(helper), 30, "slirp4netns gone")
    if host_network:
        wait_for(lambda: not pid_alive(state["dockerd_pid"]), 30, "dockerd gone")


def outer(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "DOCKER_HOST": "unix:///run/docker-up/docker.sock", "DOCKER_BUILDKIT": "0"}
    r = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {args}: {r.stderr}")
    return r


def inner(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command in the workspace container, as its user, with the inner DOCKER_HOST."""
    return outer(
        "exec",
        "-u",
        "gitpod",
        "-e",
        f"DOCKER_HOST={INNER_HOST}",
        "-e",
        "DOCKER_BUILDKIT=0",
        "ws",
        *cmd,
        check=check,
    )


class OuterDaemon:
    """docker-up as real root: the daemon the workspace container runs on. Restarted with
    --userns-remap, every container of it is in a user namespace of exactly 65536 ids, as
    a Kubernetes pod with hostUsers: false."""

    def __init__(self) -> None:
        self.p: subprocess.Popen[str] | None = None

    def start(self, remap: bool = False) -> None:
        # No connect() bypass for the workspace containers: its runc wrapper would give each
        # a seccomp listener (their profile is not Unconfined), and the kernel allows one
        # listener per filter chain: the docker-up inside could not add its own (EBUSY).
        env = {**ENV, "DOCKER_UP_NET_ACCEL": "0"}
        if data := os.environ.get("DOCKER_UP_TEST_OUTER_DATA"):
            env["DOCKER_UP_DATA_ROOT"] = data
        if remap:
            env["DOCKER_UP_DOCKERD_ARGS"] = "--userns-remap=dockerup-remap"
        self.p = subprocess.Popen(
            [f"{VENV}/bin/docker-up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        assert line.startswith("export DOCKER_HOST="), self.p.stderr.read()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.p is not None:
            self.p.send_signal(signal.SIGINT)
            self.p.wait(120)
            self.p = None


@pytest.fixture(scope="module")
def outer_daemon() -> Iterator[OuterDaemon]:
    d = OuterDaemon()
    d.start()
    try:
        yield d
    finally:
        d.stop()


def build_image(tag: str = IMAGE, dockerfile: Path | None = None) -> None:
    t0 = time.monotonic()
    env = {**ENV, "DOCKER_HOST": "unix:///run/docker-up/docker.sock", "DOCKER_UP_VENV": str(VENV)}
    if cache := os.environ.get("DOCKER_UP_CACHE"):
        env["DOCKER_UP_CACHE"] = cache
    argv = [str(ROOT / "scripts" / "build-image"), tag, *([str(dockerfile)] if dockerfile else [])]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"workspace image built in {time.monotonic() - t0:.1f} s")


@pytest.fixture(scope="module")
def workspace_image(outer_daemon: OuterDaemon) -> str:
    build_image()
    return IMAGE


@pytest.fixture
def workspace(workspace_image: str, busybox_tar: Path) -> Iterator[None]:
    outer("rm", "-f", "ws", check=False)
    outer("run", "-d", "--name", "ws", *RUN_OPTS, workspace_image, "sleep", "infinity")
    outer("cp", str(busybox_tar), "ws:/tmp/bb.tar")
    try:
        yield
    finally:
        inner("docker-up", "stop", check=False)
        outer("rm", "-f", "ws", check=False)
        outer("volume", "rm", "-f", "ws-docker-data", check=False)


def test_unprivileged_workspace_runs_docker(workspace: None) -> None:
    inspect = json.loads(outer("inspect", "ws").stdout)[0]["HostConfig"]
    # No --privileged, and no capability added (no SYS_ADMIN, no NET_ADMIN).
    assert inspect["Privileged"] is False and not inspect["CapAdd"], inspect["CapAdd"]
    print("workspace container run with exactly:", " ".join(RUN_OPTS))
    r = inner("docker-up", "--detach")
    assert r.returncode == 0 and INNER_HOST in r.stdout
    assert inner("docker-up", "status", "--json", check=False).returncode == 0
    inner("docker", "import", "/tmp/bb.tar", "bb:test")
    assert (
        inner("docker", "run", "--rm", "bb:test", "echo", "nested hi").stdout.strip() == "nested hi"
    )
    inner(
        "sh",
        "-c",
        "mkdir -p /tmp/ctx && printf 'FROM bb:test\\nRUN echo built > /b\\n' > /tmp/ctx/Dockerfile",
    )
    inner("docker", "build", "-q", "-t", "bb:built", "/tmp/ctx")
    assert inner("docker", "run", "--rm", "bb:built", "cat", "/b").stdout.strip() == "built"
    # --stop-timeout: its init (sh) ignores SIGTERM; the teardown's stop need not wait 10 s.
    inner(
        "docker",
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "-p",
        "18080:80",
        "bb:test",
        "sh",
        "-c",
        "mkdir /w && echo nested-web > /w/index.html && httpd -f -p 80 -h /w",
    )
    get = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc 127.0.0.1 18080"
    wait_for(
        lambda: "nested-web" in inner("sh", "-c", get, check=False).stdout,
        30,
        "the published port inside the workspace container",
    )


@pytest.mark.parametrize("drop", range(len(NEEDED)))
def test_each_run_option_is_needed(workspace_image: str, busybox_tar: Path, drop: int) -> None:
    """Without any one of the manifest's fields, docker-up cannot run containers in there."""
    opts = [arg for i, n in enumerate(NEEDED) if i != drop for arg in n.options] + OTHER
    outer("rm", "-f", "ws", check=False)
    outer("run", "-d", "--name", "ws", *opts, workspace_image, "sleep", "infinity")
    try:
        outer("cp", str(busybox_tar), "ws:/tmp/bb.tar")
        steps = (
            ("docker-up", "--detach", "--timeout", "30"),
            ("docker", "import", "/tmp/bb.tar", "bb:test"),
            ("docker", "run", "--rm", "bb:test", "true"),
        )
        failed = next((r for step in steps if (r := inner(*step, check=False)).returncode), None)
        assert failed is not None, f"works without {NEEDED[drop].field}: drop it"
        # It fails for the reason the field is there, not for any other (a timeout, a
        # broken image).
        said = failed.stdout + failed.stderr
        assert NEEDED[drop].fails_with in said, said[-2000:]
    finally:
        inner("docker-up", "stop", check=False)
        outer("rm", "-f", "ws", check=False)
        outer("volume", "rm", "-f", "ws-docker-data", check=False)


FEATURE = ROOT / "deploy" / "devcontainer" / "src" / "docker-up"
EXAMPLE = ROOT / "deploy" / "devcontainer" / "example" / ".devcontainer" / "devcontainer.json"


def feature_run_options() -> list[str]:
    """What the dev containers CLI gives a container with the feature: its capAdd,
    securityOpt, mounts and privileged, and the example devcontainer.json's runArgs."""
    feature = json.loads((FEATURE / "devcontainer-feature.json").read_text())
    assert feature["privileged"] is False
    opts = [arg for cap in feature["capAdd"] for arg in ("--cap-add", cap)]
    opts += [arg for so in feature["securityOpt"] for arg in ("--security-opt", so)]
    for m in feature["mounts"]:
        source = m["source"].replace("${devcontainerId}", "test")
        opts += ["--mount", f"type={m['type']},source={source},target={m['target']}"]
    return opts + json.loads(EXAMPLE.read_text())["runArgs"]


def test_dev_container_feature(outer_daemon: OuterDaemon, busybox_tar: Path) -> None:
    """The feature's install.sh applied to a Debian base, the result run with only what the
    feature and the example devcontainer.json say: the user's first docker command starts
    dockerd (lazily) and runs a container."""
    build_image("docker-up-devcontainer", ROOT / "tests" / "devcontainer" / "Dockerfile")
    opts = feature_run_options()
    assert "--privileged" not in opts and "NET_ADMIN" not in " ".join(opts)
    outer("rm", "-f", "dc", check=False)
    outer("run", "-d", "--name", "dc", *opts, "docker-up-devcontainer")
    try:
        outer("cp", str(busybox_tar), "dc:/tmp/bb.tar")
        outer("exec", "dc", "chmod", "644", "/tmp/bb.tar")

        def as_user(*cmd: str) -> subprocess.CompletedProcess[str]:
            # A login shell: the feature's profile.d names DOCKER_HOST.
            return outer("exec", "-u", "vscode", "dc", "bash", "-lc", " ".join(cmd), check=False)

        def lazy_holder() -> bool:
            try:
                return json.loads(as_user("docker-up", "status", "--json").stdout)["lazy"] is True
            except (ValueError, KeyError):
                return False

        # The entrypoint starts the holder (a Python start, seconds under load) while `docker
        # run -d` has already returned: it is waited for, not asked once.
        wait_for(lazy_holder, 60, "the entrypoint's lazy holder")
        r = as_user("docker", "import", "/tmp/bb.tar", "bb:test")
        assert r.returncode == 0, r.stderr
        r = as_user("docker", "run", "--rm", "bb:test", "echo", "from-the-feature")
        assert r.stdout.strip() == "from-the-feature", r.stderr
        data_root = json.loads(as_user("docker-up", "status", "--json").stdout)["data_root"]
        assert data_root == "/var/lib/docker-up-data/docker"  # on the feature's volume
    except AssertionError as e:  # what docker-up said inside, or the failure says nothing
        logs = as_user("tail -n 25 /tmp/docker-up-*/logs/*.log").stdout
        raise AssertionError(f"{e}\n--- docker-up's logs in the dev container:\n{logs}") from None
    finally:
        outer("exec", "-u", "vscode", "dc", "docker-up", "stop", check=False)
        outer("rm", "-f", "dc", check=False)
        outer("volume", "rm", "-f", "docker-up-data-test", check=False)


def test_workspace_in_a_pod_user_namespace_of_65536_ids(
    outer_daemon: OuterDaemon, workspace_image: str, busybox_tar: Path
) -> None:
    """hostUsers: false gives a pod 65536 ids. The workspace container runs in exactly such
    a user namespace (the outer dockerd's --userns-remap), with the manifest's options:
    docker-up maps the image's subordinate ranges around the user's own id, and containers
    get ids 0-65534; doctor says so."""
    outer_daemon.stop()
    outer_daemon.start(remap=True)
    try:
        build_image()  # a remapped daemon keeps its own images
        outer("run", "-d", "--name", "ws", *RUN_OPTS, workspace_image, "sleep", "infinity")
        outer("cp", str(busybox_tar), "ws:/tmp/bb.tar")
        uid_map = inner("cat", "/proc/self/uid_map").stdout.split()
        assert uid_map[0] == "0" and uid_map[2] == "65536", uid_map  # the pod's 65536 ids
        doctor = json.loads(inner("docker-up", "doctor", "--json", check=False).stdout)
        (ids,) = [c for c in doctor["checks"] if c["id"] == "ids.subuid"]
        assert ids["status"] == "ok" and "containers get uids 0-65534" in ids["detail"], ids
        r = inner("docker-up", "--detach", check=False)
        assert r.returncode == 0, r.stderr
        inner("docker", "import", "/tmp/bb.tar", "bb:test")
        # nobody (65534), the highest id containers get, owns a file and runs a process.
        out = inner(
            "docker",
            "run",
            "--rm",
            "-u",
            "65534:65534",
            "bb:test",
            "sh",
            "-c",
            "touch /tmp/n && stat -c %u /tmp/n && id -u",
        ).stdout.split()
        assert out == ["65534", "65534"], out
    finally:
        inner("docker-up", "stop", check=False)
        outer("rm", "-f", "ws", check=False)
        outer("volume", "rm", "-f", "ws-docker-data", check=False)
        outer_daemon.stop()
        outer_daemon.start()
