# A workspace image: docker-up and what it needs, for a non-root user, as a cloud workspace
# would have it. gitpod's subordinate ids are the 65536 ids below 65536 around its own
# (1-33332, 33334-65535): they fit a Kubernetes pod's user namespace (hostUsers: false),
# and give containers ids 0-65534 (nobody included). No registry is reachable here, so the base is made locally: see
# scripts/build-image (debootstrap of Debian bookworm, docker import as
# docker-up-base:bookworm), which also puts docker-up's virtualenv (venv.tar) in the
# build context. Nothing in this build needs the network.
#
# Run it without --privileged; this is all it needs (README says why each one):
#   docker run --security-opt seccomp=unconfined --security-opt systempaths=unconfined \
#     --device /dev/net/tun --cap-add SYS_ADMIN \
#     -v workspace-data:/home/gitpod/.local/share docker-up-workspace
# (plus --security-opt apparmor=unconfined where AppArmor is active)
FROM docker-up-base:bookworm

# Where the virtualenv lives on the building machine: venv.tar holds it at that path, and
# its scripts name it.
ARG VENV=/opt/docker-up-venv
COPY venv.tar /tmp/venv.tar
RUN tar -C / -xf /tmp/venv.tar && rm /tmp/venv.tar \
 && ln -s "$VENV/bin/docker-up" /usr/local/bin/docker-up \
 && useradd --create-home --uid 33333 --shell /bin/bash gitpod \
 && touch /etc/subuid /etc/subgid && sed -i '/^gitpod:/d' /etc/subuid /etc/subgid \
 && usermod --add-subuids 1-33332 --add-subuids 33334-65535 \
            --add-subgids 1-33332 --add-subgids 33334-65535 gitpod \
 && mkdir -p /home/gitpod/.local/share && chown -R gitpod:gitpod /home/gitpod/.local

USER gitpod
WORKDIR /home/gitpod
ENV HOME=/home/gitpod
# The workspace's Docker: in the foreground, so the container lives as long as it does.
CMD ["docker-up"]
