"""Planning, pure: settings + host facts -> a Plan that tests compare exactly.

Owns the Plan as data (data.py) and how it is built (build.py), the rules a start must
pass, which doctor reuses as checks (require.py), dockerd's configuration and the scripts
it runs (daemon.py), the IPv6 decision (ipv6.py), the cgroup driver decision (cgroups.py)
and what differs between engine versions (engine.py).

Must not touch: the keeper, the namespaces, or anything that starts a process: planning
has no effects (tests/unit/test_layout.py holds it). Never prints."""
