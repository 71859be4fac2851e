"""docker-up: a rootless Docker daemon in its own user and network namespaces."""

__version__ = "0.1.0"  # as in pyproject.toml (tests/unit/test_engine.py checks)
