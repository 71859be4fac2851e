"""The docker CLI context `docker-up`: `docker --context docker-up` and `docker context use
docker-up` reach docker-up's socket. Written as the CLI itself stores contexts (a meta.json
under a directory named by the sha256 of the context's name), so no docker process is spent
on the start path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

NAME = "docker-up"


def docker_config_dir(env: Mapping[str, str], home: str) -> Path:
    return Path(env.get("DOCKER_CONFIG") or f"{home}/.docker")


def meta_path(config_dir: Path, name: str = NAME) -> Path:
    import hashlib  # only here: its import is a few ms of every start

    digest = hashlib.sha256(name.encode()).hexdigest()
    return config_dir / "contexts" / "meta" / digest / "meta.json"


def meta_json(docker_host: str, name: str = NAME) -> str:
    return json.dumps(
        {
            "Name": name,
            "Metadata": {"Description": "docker-up's rootless daemon"},
            "Endpoints": {"docker": {"Host": docker_host, "SkipTLSVerify": False}},
        },
        separators=(",", ":"),
    )
