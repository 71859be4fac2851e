"""Views of the workspace's folders for dev containers: a FUSE view (bindfs) of each folder of
the workspace user's that a Dev Containers CLI container bind-mounts, in which the user's
files show as owned by the user's own uid, the uid updateRemoteUserUID gives the dev
container's user, and what that user writes is stored as the workspace user's.

choose.py decides (pure: which mounts, bindfs' command line, the FUSE mount options);
serve.py does it (mount, the confined bindfs, the unmount at delete), called by docker-up's
OCI runtime wrapper (accel/ociruntime.py). Stdlib only: that wrapper runs as python -S.
It never changes an owner, a mode or an ACL of the user's files itself."""
