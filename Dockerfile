# A workspace image: docker-up and what it needs, for a non-root user, as a cloud workspace
# would have it. gitpod's subordinate ids are the 65536 ids below 65536 around its own
# (1-33332, 33334-65535): they fit a Kubernetes pod's user namespace (hostUsers: false),
# and give containers ids 0-65534 (nobody included). No registry is reachable here, so the base is made locally: see
# scripts/build-image (debootstrap of Debian bookworm, docker import as
# docker-up-base:bookworm), which also puts docker-up's virtualenv (venv.tar) in the
# build context. Nothing in this build needs the network.
#
# Run it without --privileged; this is all it needs (deploy/kubernetes/README.md says why each):
#   docker run --security-opt seccomp=deploy/kubernetes/seccomp/docker-up-workspace.json \
#     --security-opt systempaths=unconfined --device /dev/net/tun \
#     -v workspace-data:/home/gitpod/.local/share docker-up-workspace
# (plus --security-opt apparmor=unconfined where AppArmor is active)
FROM docker-up-base:bookworm

# newuidmap and newgidmap with file capabilities (CAP_SETUID, CAP_SETGID: as Fedora ships
# them) instead of setuid root. A setuid-root newuidmap is not the new namespace's owner,
# so writing its uid_map needs CAP_SYS_ADMIN over the pod's namespace: the pod would have to
# add SYS_ADMIN. With file capabilities it keeps the user's id, the owner's, and needs none
# (deploy/kubernetes/README.md has the runs). Debian's libcap2-bin (setcap) is not in the
# base: the xattr is written as setcap would (VFS_CAP_REVISION_2, effective; permitted bit).
ARG FILE_CAPS="import os, struct; [os.setxattr(p, 'security.capability', struct.pack('<5I', 0x02000001, 1 << c, 0, 0, 0)) for p, c in (('/usr/bin/newuidmap', 7), ('/usr/bin/newgidmap', 6))]"
# Where the virtualenv lives on the building machine: venv.tar holds it at that path, and
# its scripts name it.
ARG VENV=/opt/docker-up-venv
# ADD unpacks the tarball in one layer (COPY, then tar in a RUN, kept both: 300 MB more).
ADD venv.tar /
RUN ln -s "$VENV/bin/docker-up" /usr/local/bin/docker-up \
 && useradd --create-home --uid 33333 --shell /bin/bash gitpod \
 && touch /etc/subuid /etc/subgid && sed -i '/^gitpod:/d' /etc/subuid /etc/subgid \
 && usermod --add-subuids 1-33332 --add-subuids 33334-65535 \
            --add-subgids 1-33332 --add-subgids 33334-65535 gitpod \
 && mkdir -p /home/gitpod/.local/share && chown -R gitpod:gitpod /home/gitpod/.local \
 && /usr/bin/python3 -c "$FILE_CAPS" && chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap

USER gitpod
WORKDIR /home/gitpod
ENV HOME=/home/gitpod
# PID 1 reaps: whatever docker-up or dockerd leaves behind (a failed start, a crash) is
# re-parented to PID 1, and a PID 1 that never waits (sleep infinity, an IDE's agent) keeps
# it a zombie for good. tini is Debian's docker.io's own init (docker run --init).
ENTRYPOINT ["/usr/bin/tini", "--"]
# The workspace's Docker: in the foreground, so the container lives as long as it does.
CMD ["docker-up"]
