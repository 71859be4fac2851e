"""Making docker-up's namespaces and becoming dockerd inside them.

Owns the early start of the namespace child (early.py), the child itself (child.py, a lean
program), the parent's side of its conversation (childlink.py), the network helper's one
launcher and its readiness (netstart.py) and check (netcheck.py), and joining the
namespaces for `run` (join.py).

Must not touch: the screen, the verbs, the plan's decisions (it carries out specs it is
given). What the child imports stays stdlib-only (it runs under python -S)."""
