"""What stays resident, and the hand-over to it.

Owns the executor of a Plan (supervise.py), the hand-over from the CLI (handover.py), the
keeper itself (resident.py, a lean program: supervision and restarts), the lazy socket
holder (lazy.py), background starts and stops (background.py), one docker-up per user
(instance.py), the state records (state.py) and the last sweep (sweep.py).

Must not touch: the screen (it returns facts and raises DockerUpError), the verbs, the
CLI. What the lean programs import stays stdlib-only (tests/unit/test_layout.py)."""
