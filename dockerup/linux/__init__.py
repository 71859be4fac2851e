"""Linux's ABI in one place.

Owns the libc handle and every constant and call (libc.py: prctl, setns, unshare, mount,
ioctls, die_with_parent), a process' identity through pidfds (procid.py), waiting on fds
(fdwait.py), /proc's route tables (routes.py) and exit statuses as words (exits.py).

Must not touch: anything of docker-up's own (it imports no other dockerup package). Stdlib
only; ctypes is loaded by libc.py alone, so the others stay cheap to import."""
