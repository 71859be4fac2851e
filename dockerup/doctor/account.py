"""Checks of this user's docker-up: the mode it would choose, its runtime directory and
socket, free disk, other daemons in the way, and a docker-up already running."""

from __future__ import annotations

from dockerup.doctor.model import Finding, Health, from_require, ok
from dockerup.doctor.probe import DoctorFacts
from dockerup.errors import DockerUpError
from dockerup.plan import require
from dockerup.plan.idmap import KEEP_ID, describe
from dockerup.settings.modes import resolve_mode
from dockerup.settings.paths import UNIX_SOCKET_MAX


def check_mode(f: DoctorFacts) -> Finding:
    h = f.host
    try:
        mode, reason = resolve_mode(h.uid, h.initial_userns, h.net_admin, f.mode)
        require.require_userns_setting(f.userns, mode)
    except DockerUpError as e:
        return Finding(Health.fail, e.message, e.hint or "")
    # The default map goes unsaid, as before the setting existed.
    ids = f"; user ids {describe(f.userns, h.uid)}" if f.userns == KEEP_ID else ""
    return ok(f"{mode}: {reason}{ids}")


def check_runtime_dir(f: DoctorFacts) -> Finding:
    rt = f.paths.runtime
    where = "XDG_RUNTIME_DIR" if f.paths.runtime_from_xdg else "fallback (no XDG_RUNTIME_DIR)"
    if f.runtime_foreign:
        return from_require(lambda: require.require_own_runtime(f.paths, True), "")
    if not f.runtime_writable:
        return Finding(
            Health.fail,
            f"{rt.parent} is not writable for you",
            "set XDG_RUNTIME_DIR to a directory of your own",
        )
    return ok(f"{rt} ({where})")


def check_socket_path(f: DoctorFacts) -> Finding:
    n = len(str(f.paths.socket))
    return from_require(
        lambda: require.require_socket_path(f.paths), f"{n} of {UNIX_SOCKET_MAX} bytes"
    )


def check_disk(f: DoctorFacts) -> Finding:
    gib = f.free_bytes / 2**30
    if gib < 1:
        return Finding(
            Health.fail,
            f"{gib:.1f} GiB free at {f.paths.data}",
            "free some disk space, or set XDG_DATA_HOME elsewhere",
        )
    if gib < 5:
        return Finding(
            Health.warn,
            f"{gib:.1f} GiB free at {f.paths.data}",
            "images need room: 5 GiB or more is comfortable",
        )
    return ok(f"{gib:.0f} GiB free at {f.paths.data}")


def check_existing_daemon(f: DoctorFacts) -> Finding:
    if f.other_daemon:
        return Finding(
            Health.warn,
            f"another daemon answers on DOCKER_HOST={f.docker_host_env}",
            f"unset DOCKER_HOST, or export DOCKER_HOST={f.paths.docker_host}",
        )
    if f.stale_socket:
        return Finding(
            Health.warn,
            f"stale socket {f.paths.socket} (nothing answers)",
            "docker-up removes it at its next start",
        )
    return ok("no other daemon in the way")


def check_running(f: DoctorFacts) -> Finding:
    s = f.docker_up
    if s is None or not s.running:
        return ok("not running")
    if not s.answering:
        return Finding(
            Health.warn,
            f"running (pid {s.pid}) but the API does not answer",
            "docker-up logs; docker-up stop && docker-up",
        )
    e = f.engine
    engine = f" (Docker {e.version}, {e.containers} containers running, {e.storage})" if e else ""
    restarts = s.daemon.restarts if s.daemon else 0
    return ok(f"running (pid {s.pid}), the API answers{engine}, {restarts} restarts")
