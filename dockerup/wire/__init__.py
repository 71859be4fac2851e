"""What docker-up's processes say to each other.

Owns the typed specs a lean program starts with (specs.py), the typed messages they
exchange while running (messages.py), and the /_ping that says dockerd answers (ping.py).
Unknown fields are refused where they arrive.

Must not touch: any other dockerup package (every side imports wire, wire imports none of
them). Stdlib only."""
