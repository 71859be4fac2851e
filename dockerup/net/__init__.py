"""Network drivers: what wires docker-up's network namespace to the workspace.

Owns the drivers (slirp4netns.py, pasta.py) behind one interface (driver.py), the registry
of their kinds (kinds.py: no caller asks which driver it is, it asks the driver's kind) and
the namespace's addresses every driver sets up alike (addresses.py).

Must not touch: the screen and the verbs (a driver returns argv and facts, raises
DockerUpError), the keeper. Nothing here is imported by the lean programs but
addresses.py, so this __init__ stays empty of code: loading it loads no driver.
"""
