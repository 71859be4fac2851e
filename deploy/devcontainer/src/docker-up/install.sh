#!/bin/sh
# The docker-up dev container feature (https://containers.dev/implementors/features/): runs
# as root while the dev container's image is built. Options arrive as environment
# variables (SOURCE, VENVTAR, LAZY); _REMOTE_USER is the user docker-up is for.
set -eu
user=${_REMOTE_USER:-vscode}
venv=/opt/docker-up-venv
share=/usr/local/share/docker-up

# Only what is missing, so that a base that has it all builds without any network.
need=""
for p in dockerd:docker.io containerd:containerd runc:runc slirp4netns:slirp4netns \
         newuidmap:uidmap iptables:iptables python3:python3-venv; do
  command -v "${p%%:*}" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "${p%%:*}" \
    >/dev/null 2>&1 || need="$need ${p#*:}"
done
if [ -n "$need" ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
fi

if [ -n "${VENVTAR:-}" ]; then
  # The virtualenv lives where it was built (its scripts name that path): the tar's top.
  venv="/$(tar -tf "$VENVTAR" | head -n 1)"
  venv=${venv%/}
  tar -C / -xf "$VENVTAR"
else
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "${SOURCE:-docker-up}"
fi
ln -sf "$venv/bin/docker-up" /usr/local/bin/docker-up

# Subordinate ids for the user: the ids below 65536 around its own, which also fit a
# Kubernetes pod's user namespace (hostUsers: false). Any earlier lines for it are replaced.
uid=$(id -u "$user") gid=$(id -g "$user")
touch /etc/subuid /etc/subgid
sed -i "/^$user:/d" /etc/subuid /etc/subgid
usermod --add-subuids "1-$((uid - 1))" --add-subuids "$((uid + 1))-65535" \
        --add-subgids "1-$((gid - 1))" --add-subgids "$((gid + 1))-65535" "$user"

# dockerd's data-root: on the feature's volume (overlay cannot stack on the container's),
# named in the user's docker-up settings, so that every start (entrypoint, shell) uses it.
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")
mkdir -p /var/lib/docker-up-data "$home/.config/docker-up"
chown "$user:$group" /var/lib/docker-up-data "$home/.config" "$home/.config/docker-up"
printf 'data-root = "/var/lib/docker-up-data/docker"\n' > "$home/.config/docker-up/config.toml"
chown "$user:$group" "$home/.config/docker-up/config.toml"

# At every container start, as the user: docker-up holds the socket (lazy) or starts.
mkdir -p "$share"
verb="--detach"
[ "${LAZY:-true}" = true ] && verb="up --lazy"
cat > "$share/entrypoint.sh" <<SCRIPT
#!/bin/sh
# docker-up for $user (the docker-up dev container feature), then the container's command.
if [ "\$(id -u)" = 0 ]; then
  su -s /bin/sh "$user" -c "/usr/local/bin/docker-up $verb >/dev/null 2>&1" || true
elif [ "\$(id -u)" = "$uid" ]; then
  /usr/local/bin/docker-up $verb >/dev/null 2>&1 || true
fi
exec "\$@"
SCRIPT
chmod 0755 "$share/entrypoint.sh"
# DOCKER_HOST for the user's shells (the runtime dir docker-up uses without XDG_RUNTIME_DIR).
# Beside it, where Testcontainers finds the mapped ports: this is a container (/.dockerenv),
# and the daemon's bridge is inside docker-up's namespace (dockerup/settings/clientenv.py, which a
# unit test holds these lines to).
cat > /etc/profile.d/docker-up.sh <<PROFILE
export DOCKER_HOST=unix:///tmp/docker-up-$uid/docker.sock
export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
export TESTCONTAINERS_CONNECTION_MODE=docker_host
PROFILE
echo "docker-up feature: installed for $user"
