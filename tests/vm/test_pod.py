"""The workspace pod on a real engine that reads Pod YAML: deploy/kubernetes/workspace-pod.yaml
played with podman kube play (Debian 13's podman 5.4) in a user namespace of 65536 ids, as a
kubelet does for hostUsers: false, with the seccomp profile shipped in deploy/kubernetes/seccomp.
Only `imagePullPolicy: Never` is added (no registry here). Inside the pod, as the workspace
user, docker-up's core path: start, a container, a published port, a build with a RUN step,
no zombie after a failed start or a dockerd crash, nothing left after stop. Then the CI-runner
example (arc-runner-values.yaml) with the runner replaced by a shell running a job.

Runs as root inside the VM scripts/vm boots; needs the workspace image in an image store
scripts/vm built ($DOCKER_UP_VM_IMAGES, used as podman's storage) and the tree under test
($DOCKER_UP_VM_TREE)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import wait_for

IMAGES = Path(os.environ.get("DOCKER_UP_VM_IMAGES", "/nonexistent"))
TREE = Path(os.environ.get("DOCKER_UP_VM_TREE", "/nonexistent"))
BUSYBOX = os.environ.get("DOCKER_UP_VM_BUSYBOX", "/vm/busybox.tar")
PODMAN = ["podman", "--root", str(IMAGES)]
# --userns=auto takes the pod's ids from the subordinate ranges of the user "containers".
AUTO_IDS = "containers:1000000:1000000\n"
KUBE = TREE / "deploy" / "kubernetes"
POD = "workspace"
CTR = "workspace-workspace"  # podman names a pod's container POD-CONTAINER
HOST = "unix:///tmp/docker-up-33333/docker.sock"
SLOW = 300  # under TCG a dockerd start or a build takes tens of seconds

pytestmark = pytest.mark.skipif(
    not (IMAGES / "overlay-images").is_dir() or not KUBE.is_dir(),
    reason="no workspace image or tree in this VM",
)


def run(
    *argv: str, timeout: float = SLOW, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if argv[0] == "podman":
        argv = (*PODMAN, *argv[1:])
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and r.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def play(manifest: Path, tmp: Path) -> Path:
    """manifest with imagePullPolicy: Never on each container, played as a kubelet would for
    hostUsers: false (65536 ids), seccomp profiles from deploy/kubernetes/seccomp."""
    text = manifest.read_text()
    lines = []
    for line in text.splitlines():
        lines.append(line)
        stripped = line.lstrip()
        if stripped.startswith("image: "):
            lines.append(" " * (len(line) - len(stripped)) + "imagePullPolicy: Never")
    played = tmp / manifest.name
    played.write_text("\n".join(lines) + "\n")
    # podman 5.4 ignores appArmorProfile: the field's Unconfined, as containers.conf says it.
    conf = tmp / "containers.conf"
    conf.write_text('[containers]\napparmor_profile = "unconfined"\n')
    env = {"CONTAINERS_CONF_OVERRIDE": str(conf)} if "type: Unconfined" in text else {}
    run("podman", "kube", "play", "--userns=auto:size=65536",
        "--seccomp-profile-root", str(KUBE / "seccomp"), str(played), env=env)  # fmt: skip
    return played


def user(*cmd: str, check: bool = True, timeout: float = SLOW) -> subprocess.CompletedProcess[str]:
    """A command in the workspace container as its user (33333), with docker-up's socket."""
    return run("podman", "exec", "-u", "33333", "-e", f"DOCKER_HOST={HOST}", CTR, *cmd,
               check=check, timeout=timeout)  # fmt: skip


def put(path: str, data: bytes, mode: int) -> None:
    """A file in the workspace container (podman cp refuses files whose owner, root here, is
    not in the pod's user namespace)."""
    argv = [*PODMAN, "exec", "-i", CTR, "sh", "-c", f"cat > {path} && chmod {mode:o} {path}"]
    subprocess.run(argv, input=data, check=True, timeout=SLOW)


# A dockerd that says its version, then dies at start.
DOCKERD_DIES = b"""#!/bin/sh
case "$*" in *version*) echo "Docker version 26.1.5+dfsg1, build a72d7cd"; exit 0 ;; esac
exit 1
"""


def processes() -> list[tuple[int, int, str, str]]:
    """(pid, ppid, state, command) of every process in the workspace container."""
    out = run("podman", "exec", CTR, "ps", "-eo", "pid=,ppid=,stat=,comm=").stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [(int(p), int(pp), s, c) for p, pp, s, c in rows if c != "ps"]


def zombies() -> list[tuple[int, int, str, str]]:
    return [p for p in processes() if p[2].startswith("Z")]


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    for f in ("/etc/subuid", "/etc/subgid"):
        ids = Path(f)
        if "containers:" not in ids.read_text():
            ids.write_text(ids.read_text() + AUTO_IDS)
    t0 = time.monotonic()
    played = play(KUBE / "workspace-pod.yaml", tmp_path_factory.mktemp("pod"))
    try:
        print(f"pod played in {time.monotonic() - t0:.0f} s")
        put("/tmp/bb.tar", Path(BUSYBOX).read_bytes(), 0o644)
        yield
    finally:
        user("docker-up", "stop", check=False)
        run("podman", "kube", "down", "--force", str(played), check=False)


def test_the_pod_is_what_the_manifest_says(pod: None) -> None:
    """The engine applied the manifest's fields: a user namespace of 65536 ids, tini as PID 1,
    the shipped seccomp profile (not Unconfined), not privileged."""
    uid_map = run("podman", "exec", CTR, "cat", "/proc/self/uid_map").stdout.split()
    assert uid_map[0] == "0" and uid_map[1] != "0" and uid_map[2] == "65536", uid_map
    assert processes()[0][:2] == (1, 0) and processes()[0][3] == "tini"
    info = json.loads(run("podman", "inspect", CTR).stdout)[0]
    assert info["HostConfig"]["Privileged"] is False and not info["HostConfig"]["CapAdd"]
    # The runtime was given the shipped profile: its additions are there, the rest refused.
    seccomp = json.loads(Path(info["OCIConfigPath"]).read_text())["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO", seccomp["defaultAction"]
    allowed = {
        n for r in seccomp["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]
    }
    assert {"setns", "sethostname"} <= allowed
    status = run("podman", "exec", CTR, "grep", "^Seccomp:", "/proc/1/status").stdout
    assert status.split() == ["Seccomp:", "2"], status  # a filter is on


def test_a_failed_start_leaves_no_zombie(pod: None) -> None:
    """docker-up started with a dockerd that dies at start: it fails, and what it started is
    reaped (tini), not left <defunct> under PID 1 (with sleep as PID 1: docker-up and
    containerd stay zombies, README's table)."""
    put("/tmp/dockerd-dies", DOCKERD_DIES, 0o755)
    r = user("docker-up", "--detach", "--timeout", "60", "--dockerd", "/tmp/dockerd-dies",
             check=False)  # fmt: skip
    assert r.returncode != 0 and "dockerd exited" in r.stderr, r.stdout + r.stderr
    wait_for(lambda: not zombies(), 30, f"no zombies after a failed start: {zombies()}")
    assert [p for p in processes() if p[3] in ("docker-up", "dockerd", "slirp4netns")] == []


def test_docker_up_starts_and_a_container_runs(pod: None) -> None:
    r = user("docker-up", "--detach", "--timeout", str(SLOW))
    assert HOST in r.stdout, r.stdout + r.stderr
    user("docker", "import", "/tmp/bb.tar", "bb:test")
    assert user("docker", "run", "--rm", "bb:test", "echo", "in-the-pod").stdout.strip() == (
        "in-the-pod"
    )


def test_a_published_port_answers_inside_the_pod(pod: None) -> None:
    user("docker", "run", "-d", "--name", "web", "--stop-timeout", "1", "-p", "18080:80",
         "bb:test", "sh", "-c",
         "mkdir /w && echo pod-web > /w/index.html && exec httpd -f -p 80 -h /w")  # fmt: skip
    get = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc 127.0.0.1 18080"
    wait_for(lambda: "pod-web" in user("sh", "-c", get, check=False).stdout, 60,
             "the published port on the pod's loopback")  # fmt: skip
    user("docker", "rm", "-f", "web")


def test_an_image_with_a_run_step_builds(pod: None) -> None:
    user("sh", "-c", "mkdir -p /tmp/ctx && printf 'FROM bb:test\\nRUN echo built > /b\\n'"
         " > /tmp/ctx/Dockerfile")  # fmt: skip
    user("docker", "build", "-q", "-t", "bb:built", "/tmp/ctx")
    assert user("docker", "run", "--rm", "bb:built", "cat", "/b").stdout.strip() == "built"


def test_a_dockerd_crash_leaves_no_zombie(pod: None) -> None:
    """dockerd killed: docker-up restarts it; whatever the dead one orphaned is reaped."""
    (dockerd,) = [p for p in processes() if p[3] == "dockerd"]
    run("podman", "exec", CTR, "kill", "-KILL", str(dockerd[0]))
    wait_for(
        lambda: [p for p in processes() if p[3] == "dockerd" and p[0] != dockerd[0]],
        SLOW,
        "docker-up restarting dockerd",
    )
    wait_for(lambda: user("docker", "info", check=False).returncode == 0, SLOW, "dockerd back")
    wait_for(lambda: not zombies(), 60, f"no zombies after dockerd's crash: {zombies()}")


def test_stop_leaves_nothing(pod: None) -> None:
    user("docker-up", "stop")
    left = lambda: [p for p in processes() if p[0] != 1 and p[3] != "sleep"]  # noqa: E731
    wait_for(lambda: not left(), 60, f"nothing but tini and sleep after stop: {left()}")
    assert zombies() == []


def test_the_ci_runner_pod_runs_a_job(tmp_path: Path) -> None:
    """arc-runner-values.yaml's pod template, the runner replaced by a shell running a job's
    docker commands, with this image and its user (the runner image is not built here)."""
    import yaml  # scripts/vm installs PyYAML for the bed

    values = yaml.safe_load((KUBE / "arc-runner-values.yaml").read_text())
    template = values["template"]
    spec = template["spec"]
    (runner,) = spec["containers"]
    job = (
        "set -e; docker-up --detach --timeout 300; docker import /job/bb.tar bb:job;"
        " docker run --rm bb:job echo job-container-ran;"
        " mkdir /tmp/job; printf 'FROM bb:job\\nRUN echo built > /b\\n' > /tmp/job/Dockerfile;"
        " docker build -q -t job:built /tmp/job; docker-up stop; echo JOB-OK"
    )
    runner.update(image="docker-up-workspace", args=["sh", "-c", job])
    runner["securityContext"].update(runAsUser=33333, runAsGroup=33333)
    runner["env"] = [{"name": "DOCKER_HOST", "value": HOST}]
    # podman kube play names an emptyDir's volume after the manifest's volume, not after the
    # pod: "docker-data" would be the workspace pod's (its fixture is still up), its files of
    # another --userns=auto range, docker-up's 0700 directory among them. A kubelet gives
    # each pod an emptyDir of its own.
    for m in runner["volumeMounts"]:
        if m["name"] == "docker-data":
            m.update(name="runner-docker-data", mountPath="/home/gitpod/.local/share")
    for v in spec["volumes"]:
        if v["name"] == "docker-data":
            v["name"] = "runner-docker-data"
    # The job's image comes in as a file (a real job pulls it from a registry).
    runner["volumeMounts"].append({"name": "job", "mountPath": "/job/bb.tar", "readOnly": True})
    spec["volumes"].append({"name": "job", "hostPath": {"path": BUSYBOX, "type": "File"}})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "runner", **template["metadata"]}, "spec": spec}  # fmt: skip
    manifest = tmp_path / "runner-pod.yaml"
    manifest.write_text(yaml.safe_dump(pod, sort_keys=False))
    played = play(manifest, tmp_path)
    try:
        ctr = "runner-runner"
        code = run("podman", "wait", ctr, timeout=2 * SLOW).stdout.strip()
        r = run("podman", "logs", ctr)
        logs = r.stdout + r.stderr
        assert code == "0" and "job-container-ran" in logs and "JOB-OK" in logs, logs
    finally:
        run("podman", "kube", "down", "--force", str(played), check=False)
