"""Settings: what the user declared and where docker-up keeps things.

Owns the settings with their sources (config.py: file, environment, flags), every path
(paths.py), the modes and how one is chosen (modes.py), the docker CLI context (context.py)
and the environment the clients get (clientenv.py).

Must not touch: the host (no probes, no processes), a network driver's module (settings name
a driver, net/ loads it), the plan, the screen. Pure reading and deciding; writing the
context is the one file it writes."""
