"""The connect() bypass: containers' outbound TCP through workspace sockets.

Owns the agent (agent.py) and its calls (calls.py), the pure policy (policy.py), the
networks it judges against (nets.py), the caller's credentials (creds.py), seccomp user
notification (notify.py), the filter dockerd's own connect()s go through (daemonfilter.py),
what the machine supports (support.py), and docker-up's OCI runtime wrapper that gives each
container its listener and defaults (ociruntime.py).

Must not touch: the screen, the verbs, the plan. Stdlib only: the keeper, the runtime
wrapper and the proxies run it under python -S. The kernel ABI comes from dockerup.linux."""
