"""The lazy holder of the Docker socket (socket activation), stdlib only, under python -S.

`docker-up up --lazy` binds the socket and takes the instance lock, then becomes this: it
waits, costing a few MB, until a client connects. Then it execs docker-up itself with the
listening socket and the lock, and docker-up hands the socket to dockerd (-H fd://) as
systemd would. The client that connected waits in the listen backlog and is served as soon
as dockerd is ready: the first `docker ps` of a shell succeeds instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

# This package, without site-packages (python -S): see dockerup/lean.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dockerup.linux.exits import STOP_SIGNALS
from dockerup.linux.fdwait import readable
from dockerup.wire.specs import LazySpec


def main() -> None:
    spec = LazySpec.from_json(sys.argv[1])
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for s in STOP_SIGNALS:
        signal.signal(s, lambda *_: None)
    ready = readable([spec.listen_fd, wake_r])
    if wake_r in ready:  # stopped before anyone came: leave nothing behind
        for path in (spec.socket, spec.lazy_file, spec.main_pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec.lazy_file)
    env = dict(os.environ)
    env.update(DOCKER_UP_LISTEN_FD=str(spec.listen_fd), DOCKER_UP_LOCK_FD=str(spec.lock_fd))
    os.execve(spec.argv[0], spec.argv, env)


if __name__ == "__main__":
    main()
