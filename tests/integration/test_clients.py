"""The clients people point at a workspace's Docker, for real (issue 34): compose v2 and buildx
(Debian sid's, fetched by scripts/clients), a container that mounts /var/run/docker.sock, and
testcontainers-python, in the workspace and in such a container. One docker-up for the module,
as the unprivileged test user, with docker-up's defaults.

A container here runs the machine's own dynamic programs (the docker CLI, the test venv's
Python) with /usr and /lib mounted read-only into bb:test: no image is pulled or debootstrapped
for it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clienttools import (
    TESTS,
    copy_tree,
    devcontainer_round_trip,
    docker,
    http_get,
    started_with_plugins,
)
from .harness import DOCKER_CLI, VENV, User, Workspace, live_pids_where, wait_for

# The machine's programs and libraries, read-only, in a busybox container.
HOST_TOOLS = ["-v", "/usr:/usr:ro", "-v", "/lib:/lib:ro", "-v", "/lib64:/lib64:ro"]
SOCKET = ["-v", "/var/run/docker.sock:/var/run/docker.sock"]


@pytest.fixture(scope="module")
def daemon(user: User, busybox_tar: Path) -> Iterator[Workspace]:
    """docker-up -d for the test user, with compose and buildx as the user's CLI plugins."""
    plugins = ("docker-compose", "docker-buildx")
    with started_with_plugins(user, busybox_tar, "dockerup-clients-", plugins) as ws:
        yield ws


def test_compose_v2(daemon: Workspace) -> None:
    """Build, two services on their own network, a healthcheck gating depends_on, a named
    volume, a published port on the workspace's loopback; `down -v` leaves nothing."""
    project = copy_tree(daemon, TESTS / "compose" / "v2", "compose")
    compose = [DOCKER_CLI, "compose", "-f", str(project / "compose.yml"), "-p", "duclients"]
    label = "label=com.docker.compose.project=duclients"
    try:
        daemon.run(
            [*compose, "up", "-d", "--build", "--wait", "--wait-timeout", "240"],
            timeout=300,
            check=True,
        )
        ps = daemon.run([*compose, "ps", "--format", "json"], check=True).stdout
        states = {s["Service"]: s for s in map(json.loads, ps.splitlines())}
        assert states["web"]["Health"] == "healthy", states
        # The client fetched the page as it started: the healthcheck held it back until then.
        seen = daemon.run([*compose, "exec", "-T", "client", "cat", "/data/seen-by-client"])
        assert "hello-from-compose-v2" in seen.stdout, seen
        port = daemon.run([*compose, "port", "web", "80"], check=True).stdout.strip()
        assert "hello-from-compose-v2" in http_get("127.0.0.1", int(port.rsplit(":", 1)[1]))
    finally:
        down = daemon.run([*compose, "down", "-v"], timeout=120)
    assert down.returncode == 0, down.stderr
    for kind in ("container", "network", "volume"):
        extra = ["-a"] if kind == "container" else []
        left = docker(daemon, kind, "ls", *extra, "-q", "--filter", label)
        assert left.strip() == "", f"{kind}s left after down -v: {left}"


def test_buildx_default_builder(daemon: Workspace) -> None:
    """buildx's default builder is dockerd's BuildKit: multi-stage, a cache mount that
    outlives the build, --load into the daemon's images."""
    ctx = copy_tree(daemon, TESTS / "buildx", "buildx")
    builders = docker(daemon, "buildx", "ls")
    assert any(line.startswith("default") and "docker" in line for line in builders.splitlines())
    counts = []
    for run in ("1", "2"):
        tag = f"du-buildx:{run}"
        docker(
            daemon, "buildx", "build", "--load", "-t", tag, "--build-arg", f"RUN_ID={run}", str(ctx)
        )
        counts.append(int(docker(daemon, "run", "--rm", tag, "cat", "/built")))
    # The second build's RUN found what the first left in the cache mount.
    assert counts[1] == counts[0] + 1, counts


def run_lstat(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mode)


def test_a_container_that_mounts_the_socket_talks_to_this_daemon(daemon: Workspace) -> None:
    """Ryuk, act, Portainer, docker-outside-of-docker: `-v /var/run/docker.sock:...` (and
    /run/docker.sock) is this daemon's socket; the workspace's own /run does not change."""
    before = {p: run_lstat(p) for p in ("/run/docker.sock", "/var/run/docker.sock")}
    want = docker(daemon, "info", "--format", "{{.ID}}").strip()
    for path in ("/var/run/docker.sock", "/run/docker.sock"):
        got = docker(
            daemon,
            "run",
            "--rm",
            *HOST_TOOLS,
            "-v",
            f"{path}:/var/run/docker.sock",
            "bb:test",
            "/usr/bin/docker",
            "info",
            "--format",
            "{{.ID}}",
        )
        assert got.strip() == want, f"{path} in a container is another daemon: {got}"
    # What dockerd resolves lives in docker-up's namespace only.
    assert {p: run_lstat(p) for p in before} == before


ATTACK = r"""
found=
# The copy-up's /run: a tmpfs in docker-up's mount namespace whose entries link to the real
# /run, bind-mounted elsewhere: an attacker follows the links.
for e in /host/run/*; do
  if [ -L "$e" ]; then t=$(readlink "$e"); real="/host${t%/*}"; break; fi
done
touch "$real/du-attack-$1" 2>/dev/null && echo WROTE-REAL-RUN
echo x > "/host/run/du-attack-$1" && echo WROTE-COPY-RUN
shadow=$(readlink /host/etc/shadow || echo /etc/shadow)
cat "/host$shadow" >/dev/null 2>&1 && echo READ-SHADOW
cat "/host$2/secret" >/dev/null 2>&1 && echo READ-VICTIM
touch "/host$2/pwned" 2>/dev/null && echo WROTE-VICTIM
touch "/host$3/mine" && echo WROTE-OWN
"""


def test_a_container_with_the_socket_can_do_no_more_than_the_user(daemon: Workspace) -> None:
    """The attacker holds the socket and starts a --privileged container with the whole
    filesystem mounted: it is the user's daemon in the user's namespace, so it reaches what
    the user reaches and nothing else (not root's files, not the real /run)."""
    victim = Path(tempfile.mkdtemp(prefix="du-victim-", dir="/var/tmp"))  # root's, 0700
    (victim / "secret").write_text("root's\n")
    os.chmod(victim / "secret", 0o600)
    own = daemon.root / "own"
    own.mkdir()
    os.chown(own, daemon.user.uid, daemon.user.gid)
    tag = os.path.basename(victim)
    try:
        out = docker(
            daemon,
            "run",
            "--rm",
            *HOST_TOOLS,
            *SOCKET,
            "bb:test",
            "/usr/bin/docker",
            "run",
            "--rm",
            "--privileged",
            "-v",
            "/:/host",
            "bb:test",
            "sh",
            "-c",
            ATTACK,
            "attack",
            tag,
            str(victim),
            str(own),
        )
        # The attack ran (it wrote where the user may, and into its own /run copy) ...
        assert "WROTE-OWN" in out and "WROTE-COPY-RUN" in out, out
        assert (own / "mine").stat().st_uid == daemon.user.uid
        # ... and got nowhere else.
        for found in ("WROTE-REAL-RUN", "READ-SHADOW", "READ-VICTIM", "WROTE-VICTIM"):
            assert found not in out, out
        assert not Path(f"/run/du-attack-{tag}").exists()
        assert sorted(os.listdir(victim)) == ["secret"]
        assert stat.S_IMODE(victim.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(victim)


# testcontainers-python as a user's test would use it (Ryuk off: its image is not here).
# The one GET comes once httpd listens inside, as a user's test waits for its service (a
# wait strategy): the port's proxy accepts at once, and closes a client it cannot pass on.
TESTCONTAINERS = """
import socket, sys, time
from testcontainers.core.container import DockerContainer

web = DockerContainer("bb:test").with_exposed_ports(80).with_command(
    ["sh", "-c", "mkdir /www && echo hello-tc > /www/index.html && exec httpd -f -p 80 -h /www"]
)
with web:
    deadline = time.monotonic() + 60
    while b":80 " not in web.exec(["netstat", "-tln"]).output:
        assert time.monotonic() < deadline, "httpd did not listen in 60 s"
        time.sleep(0.1)
    host, port = web.get_container_host_ip(), int(web.get_exposed_port(80))
    print("address", host, port, flush=True)
    try:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"GET /index.html HTTP/1.0\\r\\n\\r\\n")
            print(s.makefile("rb").read().decode(errors="replace"))
    except OSError as e:
        print("failed:", e)
"""


def write_tc_script(ws: Workspace) -> Path:
    script = ws.root / "tc_test.py"
    script.write_text(TESTCONTAINERS)
    os.chmod(script, 0o644)
    return script


def test_testcontainers_in_the_workspace(daemon: Workspace) -> None:
    """With the environment a user's shell gets from docker-up (the shell-init snippet), and
    no setting of the user's, testcontainers reaches the mapped port at the address it
    computes. On a machine with /.dockerenv it would dial a gateway that only exists inside
    docker-up's namespace without what docker-up exports beside DOCKER_HOST."""
    script = write_tc_script(daemon)
    shell = (
        f'eval "$({VENV}/bin/docker-up shell-init bash --no-start)"; '
        f"TESTCONTAINERS_RYUK_DISABLED=true exec {VENV}/bin/python {script}"
    )
    env = dict(daemon.extra_env)
    daemon.extra_env.pop("DOCKER_HOST")  # the snippet sets it
    try:
        out = daemon.run(["bash", "-c", shell], timeout=180, check=True).stdout
    finally:
        daemon.extra_env = env
    assert "address 127.0.0.1 " in out and "hello-tc" in out, out
    if Path("/.dockerenv").exists():
        bare = daemon.run(
            ["env", "TESTCONTAINERS_RYUK_DISABLED=true", f"{VENV}/bin/python", str(script)],
            timeout=180,
            check=True,
        ).stdout
        # What the library computed on its own fails, unless that address happens to be
        # one of the workspace's own (a root daemon's docker0 of another test, here in the
        # same isolated namespace: 172.17.0.1 then reaches the published port too).
        computed = bare.split()[1]
        if not local_address(computed):
            assert "hello-tc" not in bare, f"DOCKER_HOST alone works now: {bare}"


def local_address(addr: str) -> bool:
    """The address is assigned in this network namespace (the workspace's)."""
    with socket.socket() as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def test_testcontainers_in_a_container_with_the_socket(daemon: Workspace) -> None:
    """Inside a container that mounts the socket (and gets nothing of docker-up's), the
    library's own choice, the gateway of the container's network, is right."""
    script = write_tc_script(daemon)
    out = docker(
        daemon,
        "run",
        "--rm",
        *HOST_TOOLS,
        *SOCKET,
        "-v",
        f"{VENV}:{VENV}:ro",
        "-v",
        f"{script}:/tc_test.py:ro",
        "-e",
        "TESTCONTAINERS_RYUK_DISABLED=true",
        "bb:test",
        f"{VENV}/bin/python",
        "/tc_test.py",
    )
    assert "hello-tc" in out, out


def owners_and_modes(folder: Path) -> dict[str, tuple[int, int, int, list[str]]]:
    """Each entry's owner, group, mode and extended attributes' names, as the host sees them."""
    found = {}
    for d, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(d) / name
            st = path.lstat()
            found[str(path.relative_to(folder))] = (
                st.st_uid,
                st.st_gid,
                stat.S_IMODE(st.st_mode),
                sorted(os.listxattr(path, follow_symlinks=False)),
            )
    return found


def test_devcontainer_with_a_non_root_remote_user(daemon: Workspace) -> None:
    """Nothing in devcontainer.json for docker-up, nothing done to the folder: dev (the
    user's uid, a subordinate id in docker-up's namespace) writes the folder through its
    view (dockerup/views), and the user edits and deletes what it wrote. The user's own
    files keep their owners, modes and ACLs."""
    folder = copy_tree(daemon, TESTS / "devcontainer" / "nonroot", "project")
    before = owners_and_modes(folder)
    devcontainer_round_trip(daemon, folder)
    assert owners_and_modes(folder) == before


def bindfs_serving(folder: Path) -> list[int]:
    """The bindfs processes serving this folder: each has it at /src in a root of its own
    (dockerup/views/serve.py), so its command line does not name it; its mounts do. By the
    workspace's directory too, not the folder's name alone: another suite on the machine
    runs these tests with the same folder names, in its own workspace."""
    ours = f"/{folder.parent.name}/{folder.name}"

    def serves(d: Path) -> bool:
        if not (d / "cmdline").read_bytes().split(b"\0")[0].endswith(b"bindfs"):
            return False
        for line in (d / "mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == "/src" and fields[3].endswith(ours):
                return True
        return False

    return live_pids_where(serves)


def test_a_dev_containers_view_gives_no_more_than_its_folder(daemon: Workspace) -> None:
    """The attacks on a view: a container user of another uid writes none of the user's
    files through it and plants no link out of the folder; nobody outside docker-up's
    namespace, not even the host's root through the bindfs process's root, reads it; the
    views' directory is the user's alone; the view is gone with the container."""
    folder = copy_tree(daemon, TESTS / "devcontainer" / "nonroot", "project-attack")
    secret = daemon.root / "secret"
    secret.write_text("not for containers\n")
    os.chown(secret, daemon.user.uid, daemon.user.gid)
    secret.chmod(0o600)
    before = owners_and_modes(folder)
    name = "du-view-attack"
    views = daemon.runtime_dir / "docker-up" / "views"
    docker(
        daemon,
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"devcontainer.local_folder={folder}",
        "-v",
        f"{folder}:/w",
        "bb:test",
        "sleep",
        "600",
    )
    try:
        attack = daemon.run(
            [
                DOCKER_CLI,
                "exec",
                "-u",
                "4321:4321",
                name,
                "sh",
                "-c",
                "echo x >> /w/.devcontainer/devcontainer.json && echo WROTE; "
                f"ln -s {daemon.root} /w/out && echo LINKED; cat /w/out/secret && echo READ; "
                "grep -q ' /w fuse ' /proc/mounts && echo VIEWED",
            ],
        )
        assert attack.stdout.split() == ["VIEWED"], attack
        st = views.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (daemon.user.uid, 0o700)
        served = bindfs_serving(folder)
        assert len(served) == 1, served
        [view] = [p for p in views.glob("*/0")]
        # Outside docker-up's mount namespace the view is an empty directory ...
        assert list(view.iterdir()) == []
        # ... and inside it (through dockerd's root: bindfs has a root of its own) the
        # kernel refuses every process outside its user namespace, this test's root too.
        dockerd = (daemon.runtime_dir / "docker-up" / "dockerd.pid").read_text().strip()
        with pytest.raises(PermissionError):
            os.listdir(f"/proc/{dockerd}/root{view}")
        # bindfs itself sees nothing of the user's but the folder.
        assert not Path(f"/proc/{served[0]}/root{daemon.root}").exists()
    finally:
        docker(daemon, "rm", "-f", name)
    assert owners_and_modes(folder) == before
    wait_for(lambda: not bindfs_serving(folder), 30, "bindfs ends with the container")
    assert not list(views.glob("*/0")), "the view's directory is left"


# A container with the raw folder turns d into a link out of it and back, as fast as it can.
SWAP = """cd /raw && mkdir -p d && end=$(( $(date +%s) + {seconds} ))
while [ $(date +%s) -lt $end ]; do mv d d2; ln -s {outside} d; rm d; mv d2 d; done"""
# The dev container reads d/secret through its view, again and again.
READ = """i=0; while [ $i -lt 3000 ]; do cat /w/d/secret 2>/dev/null && exit 0; i=$((i+1)); done
echo NOT-REACHED"""


def test_a_link_raced_into_the_folder_leads_its_view_nowhere(daemon: Workspace) -> None:
    """bindfs follows paths in the folder as it finds them, as root of the namespace: a
    container writing the raw folder swaps a directory the dev container is reading
    through for a link to the user's other files. bindfs runs in a root of its own that
    holds only the folder, so the link leads nowhere (without that root, measured by hand:
    the dev container read the secret after about 250 tries)."""
    folder = copy_tree(daemon, TESTS / "devcontainer" / "nonroot", "project-race")
    secret = daemon.root / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_text("not for containers\n")
    for p in (secret.parent, secret):
        os.chown(p, daemon.user.uid, daemon.user.gid)
    secret.chmod(0o600)
    swapper = "du-view-swapper"
    swap = SWAP.format(seconds=150, outside=secret.parent)
    docker(
        daemon, "run", "-d", "--name", swapper, "-v", f"{folder}:/raw", "bb:test", "sh", "-c", swap
    )
    try:
        ids = f"{daemon.user.uid}:{daemon.user.gid}"
        label = f"devcontainer.local_folder={folder}"
        read = daemon.run(
            [
                DOCKER_CLI,
                "run",
                "--rm",
                "-u",
                ids,
                "--label",
                label,
                "-v",
                f"{folder}:/w",
                "bb:test",
                "sh",
                "-c",
                READ,
            ],
            timeout=180,
        )
        running = docker(daemon, "inspect", "-f", "{{.State.Running}}", swapper).strip()
    finally:
        docker(daemon, "rm", "-f", swapper)
    assert "not for containers" not in read.stdout, read
    assert read.stdout.strip() == "NOT-REACHED", read
    assert running == "true", "the swapper ended before the reader: the race was not run"


def test_a_dev_container_that_says_no_keeps_its_raw_bind_mount(daemon: Workspace) -> None:
    folder = copy_tree(daemon, TESTS / "devcontainer" / "nonroot", "project-raw")
    labels = ["--label", f"devcontainer.local_folder={folder}", "--label", "docker-up.views=off"]
    out = docker(
        daemon, "run", "--rm", *labels, "-v", f"{folder}:/w", "bb:test", "cat", "/proc/mounts"
    )
    [mount] = [line for line in out.splitlines() if line.split()[1] == "/w"]
    assert mount.split()[2] != "fuse", mount
    assert not bindfs_serving(folder)


# The README's workaround, as `setfacl -m u:ID:rwX,d:u:ID:rwX,d:u:$USER:rwX FOLDER` sets it
# (the acl package is not needed for the test): the POSIX ACL xattrs, written by the user.
GRANT = """
import os, struct, sys
folder, dev, me = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
UNDEF = 0xFFFFFFFF
def acl(named):
    entries = [(0x01, 7, UNDEF), *[(0x02, 7, i) for i in sorted(named)], (0x04, 5, UNDEF),
               (0x10, 7, UNDEF), (0x20, 5, UNDEF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
os.setxattr(folder, "system.posix_acl_access", acl([dev]))
os.setxattr(folder, "system.posix_acl_default", acl([dev, me]))
"""


def subordinate_id(user: User, inside: int) -> int:
    """The host id of `inside` (>= 1) in docker-up's namespace: the subordinate ranges follow
    the user's own id, one after the other (plan.IdMap)."""
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, count = line.split(":")
        if name in (user.name, str(user.uid)):
            assert inside - 1 < int(count)
            return int(start) + inside - 1
    raise AssertionError(f"{user.name} has no subordinate ids")


def test_devcontainer_with_a_non_root_remote_user_and_an_acl(daemon: Workspace) -> None:
    """Without a view (no bindfs or /dev/fuse; here: the container's label
    docker-up.views=off) the README's grant works: the user grants the dev user's host id
    (a subordinate id) the folder by an ACL whose default entries keep what it writes
    editable by the user."""
    folder = copy_tree(daemon, TESTS / "devcontainer" / "nonroot", "project-acl")
    config = folder / ".devcontainer" / "devcontainer.json"
    doc = json.loads(config.read_text())
    config.write_text(json.dumps({**doc, "runArgs": ["--label", "docker-up.views=off"]}))
    dev = subordinate_id(daemon.user, daemon.user.uid)
    grant = [f"{VENV}/bin/python", "-c", GRANT, str(folder), str(dev), str(daemon.user.uid)]
    daemon.run(grant, check=True)
    devcontainer_round_trip(daemon, folder)
