"""`docker-up run`: the user's own program in docker-up's network namespace, as the user.

The plan (pure) says which namespaces to join and how the program's user namespace is made;
`execute` does it and becomes the program (an exec, as `exec` and `shell` do): its status,
signals and terminal are the caller's with nothing in between, and a program killed by
signal N shows as 128+N to the shell that started `docker-up run`.

Who the program is, by mode:
- rootless: docker-up's user namespace maps the user to 0. The program gets a user
  namespace of its own inside it that maps the user's own uid/gid to that 0: it runs as the
  user (files it writes are the user's), and has no capability over docker-up's network,
  mount or user namespace, which the parent namespace owns.
- userns-root and privileged: the user is root already. The program stays root, in a user
  namespace that maps every id to itself (every file is as reachable as before), again
  without any capability over docker-up's namespaces.
--root skips the nested namespace: root in docker-up's namespaces, as `docker-up exec`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dockerup.errors import DockerUpError
from dockerup.keeper import instance
from dockerup.keeper.instance import Running
from dockerup.linux.exits import restore_signals
from dockerup.namespace import join as ns
from dockerup.plan.idmap import KEEP_ID
from dockerup.settings.paths import Paths

# Set in the program's environment: "user", "root", or "outside" (--fallback could not
# enter). Anything that must not enter twice (the shell snippet) looks for it.
MARKER = "DOCKER_UP_RUN"


@dataclass(frozen=True)
class Where:
    """Where the caller already is, relative to docker-up's namespaces."""

    same_net: bool  # already in docker-up's network namespace
    same_user: bool  # already in docker-up's (or, as root, the same) user namespace


@dataclass(frozen=True)
class Nest:
    """The program's own user namespace: the caller's ids (identity: every id, for root)."""

    uid: int
    gid: int
    identity: bool


@dataclass(frozen=True)
class RunPlan:
    target: int  # the process whose namespaces are joined (dockerd)
    join: tuple[str, ...]  # /proc/PID/ns names, in order
    nest: Nest | None  # None: root in docker-up's namespaces (--root)
    cwd: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    # --root under userns keep-id: joining leaves the user's own id, which keeps no
    # capability across exec; become root there first.
    become_root: bool = False


def plan_run(
    state: Running,
    where: Where,
    command: Sequence[str],
    *,
    root: bool,
    uid: int,
    gid: int,
    cwd: str,
    env: Mapping[str, str],
) -> RunPlan:
    """What `run` does, from the state file's record of the running daemon (pure)."""
    target = state.dockerd_pid
    marked = {**env, MARKER: "root" if root else "user"}
    if where.same_net and not where.same_user:
        # Inside `docker-up run` already (its shell): the program is there as it is.
        if root:
            raise DockerUpError(
                "cannot become root in docker-up's namespace from inside `docker-up run`",
                hint="its programs have no power over the namespace: run this from a "
                "terminal outside it (one that did not enter)",
            )
        return RunPlan(target, (), None, cwd, tuple(command), marked)
    host_net = state.net == "host"  # privileged --host-network: no network of its own
    join = ["user"] if state.mode == "rootless" and not where.same_user else []
    join += ["mnt"] + ([] if host_net or where.same_net else ["net"])
    nest = None if root else Nest(uid, gid, identity=uid == 0)
    rooted = root and "user" in join and state.userns.startswith(KEEP_ID)
    return RunPlan(target, tuple(join), nest, cwd, tuple(command), marked, rooted)


def where_am_i(target: int, env: Mapping[str, str]) -> Where:
    """Compare this process's namespaces with the target's (by their /proc links). Inside
    `run`, dockerd's links cannot be read (reading them takes power over dockerd, which run's
    programs do not have): then run's marker, inherited, says where this is."""

    def link(pid: str, kind: str) -> str:
        return os.readlink(f"/proc/{pid}/ns/{kind}")

    try:
        return Where(*(link("self", k) == link(str(target), k) for k in ("net", "user")))
    except PermissionError as e:
        if env.get(MARKER) in ("user", "root"):
            return Where(same_net=True, same_user=False)
        raise DockerUpError(
            "cannot see docker-up's namespaces from here (a sandbox of its own?)",
            hint="run it from the workspace's own shell",
        ) from e
    except OSError as e:
        raise DockerUpError(
            f"dockerd (pid {target}) is gone: {e.strerror}", hint="see docker-up status"
        ) from e


def running_state(paths: Paths, timeout: float = 60.0) -> Running:
    """The running daemon's record. A lazy holder is woken (its first client starts the
    daemon) and waited for: the namespace exists only once dockerd runs."""
    from dockerup.waiting import wait_until

    instance.check_runtime(paths)
    state = instance.read_state(paths)
    if state is None and instance.is_locked(paths):
        # A connection wakes the holder; the state file comes just after dockerd answers.
        instance.wait_until_answering(paths, timeout)
        wait_until(
            lambda: instance.read_state(paths) is not None or not instance.is_locked(paths), timeout
        )
        state = instance.read_state(paths)
    if not state or not instance.is_locked(paths):
        raise DockerUpError(
            "docker-up is not running", hint="start it (docker-up -d), then: docker-up run -- CMD"
        )
    return state


def prepare(paths: Paths, command: Sequence[str], root: bool) -> RunPlan:
    """Everything that can fail before this process changes namespaces: a failure here
    leaves it where it was (so --fallback can still run the command outside)."""
    state = running_state(paths)
    target = state.dockerd_pid
    try:
        cwd = os.getcwd()
    except OSError as e:
        raise DockerUpError(f"this directory is gone: {e.strerror}", hint="cd elsewhere") from e
    return plan_run(
        state,
        where_am_i(target, os.environ),
        command,
        root=root,
        uid=os.getuid(),
        gid=os.getgid(),
        cwd=cwd,
        env=os.environ,
    )


def execute(plan: RunPlan) -> None:
    """Join, nest, go back to the caller's directory, become the program."""
    ns.join(ns.open_namespaces(plan.target, plan.join))
    if plan.become_root:
        ns.become_root()
    if plan.nest and plan.nest.identity:
        ns.nest_identity()
    elif plan.nest:
        ns.nest_own_ids(plan.nest.uid, plan.nest.gid)
    try:
        os.chdir(plan.cwd)
    except OSError as e:
        raise DockerUpError(
            f"{plan.cwd} is not there in docker-up's mount namespace: {e.strerror}",
            hint="mounted after docker-up started? restart docker-up, or cd elsewhere",
        ) from e
    exec_program(plan.argv, plan.env)


class CannotStart(DockerUpError):
    """The program could not be started: the status a shell gives that (127: not found,
    126: found but not runnable), for the CLI to exit with."""

    def __init__(self, program: str, e: OSError) -> None:
        super().__init__(f"cannot run {program}: {e.strerror}")
        self.status = 127 if isinstance(e, FileNotFoundError) else 126


def exec_program(argv: Sequence[str], env: Mapping[str, str]) -> None:
    restore_signals()  # the program's dispositions are the caller's, not Python's
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except OSError as e:
        raise CannotStart(argv[0], e) from e


def run(
    paths: Paths,
    command: Sequence[str],
    root: bool = False,
    fallback: Callable[[DockerUpError], None] | None = None,
) -> None:
    """fallback: when docker-up cannot be entered (not running, say), tell it that, then run
    the command here, marked "outside" (the shell snippet's way in: a terminal always
    opens, and its shell does not try again)."""
    if not command:
        raise DockerUpError("nothing to run", hint="docker-up run -- python3 -m http.server")
    try:
        plan = prepare(paths, command, root)
    except DockerUpError as e:
        if fallback is None:
            raise
        fallback(e)
        exec_program(command, {**os.environ, MARKER: "outside"})
        return
    execute(plan)
