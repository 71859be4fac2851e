"""Published ports: what `docker run -p` asks of docker-up.

Owns the port proxy dockerd runs for each published port (proxy.py, a lean program), the
keeper's port manager and forwarders (manager.py), the tables `docker-up ports` reads
(tables.py) and the RootlessKit API dockerd 28 speaks (rlkapi.py).

Must not touch: the screen, the verbs, the plan. Stdlib only: the keeper and the proxy run
it under python -S."""
