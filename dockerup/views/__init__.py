"""Views of the workspace's folders for dev containers: a FUSE view (bindfs) of each folder of
the workspace user's that a container of the Dev Containers CLI bind-mounts, in which the
user's files show as owned by the user's own uid (the uid updateRemoteUserUID gives the dev
container's user) and what that user writes is stored as the workspace user's.

Owns the choice (choose.py, pure: which mounts, bindfs' command line) and the effects
(serve.py: bindfs mounts a view, runc's delete unmounts it), called by docker-up's OCI
runtime wrapper (accel/ociruntime.py) inside docker-up's namespaces.

Must not touch: the user's files' owners, modes and ACLs (only bindfs writes, on behalf
of the container), the screen, the verbs, the plan. Stdlib only: the runtime wrapper runs
under python -S. The kernel ABI comes from dockerup.linux."""
