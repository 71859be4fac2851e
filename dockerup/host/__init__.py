"""The host, probed once: what the planner and doctor read.

Owns the host's facts (facts.py: kernel, ids, binaries and their versions, cgroup and LSM
facts, the acceleration support probe) and the cache of what programs say of themselves
(probecache.py).

Must not touch: the plan (facts are read, not decided: host never imports plan), the keeper,
the screen. Probing runs short-lived commands through dockerup.proc and changes nothing."""
