"""Linux's ABI in one place.

Owns the libc handle and every constant and call (libc.py: prctl, setns, unshare, mount,
ioctls, die_with_parent), a process' identity through pidfds (procid.py), waiting on fds
(fdwait.py), /proc's route tables (routes.py) and exit statuses as words (exits.py).

Must not touch: anything of docker-up's own but wire/ (procid.py's records are typed
specs): no plan, no keeper, no screen. Stdlib only; ctypes is loaded by libc.py alone, so
the others stay cheap to import."""
