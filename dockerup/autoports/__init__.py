"""Auto ports: listeners inside docker-up's namespace exposed in the workspace.

Owns the keeper's scanner (scanner.py), the pure rules of what is exposed and what is
refused (rules.py), and the helper that listens inside the namespace (inside.py, a lean
program).

Must not touch: the screen, the verbs, the plan. Stdlib only (the keeper runs it)."""
