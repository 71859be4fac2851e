"""The Debian 13 test bed's tests run only inside the VM that scripts/vm boots (it sets
DOCKER_UP_VM_USER): they act on the whole host, its users and its systemd."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("DOCKER_UP_VM_USER") else ["test_*.py"]
