"""`docker-up ports`: what answers on the workspace's side, and how. The keeper lists the
ports it publishes for dockerd and the ones it auto-exposes or refuses (typed documents,
ports/tables.py); dockerd names the containers behind them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dockerup.errors import DockerUpError
from dockerup.keeper import background, instance
from dockerup.ports.tables import TABLE_VERSION, AutoPort, AutoTable, PublishedTable
from dockerup.results import PortRow, Ports
from dockerup.settings.paths import Paths

T = TypeVar("T", PublishedTable, AutoTable)
RESTART = "restart docker-up: docker-up stop && docker-up -d"


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    published: frozenset[tuple[str, int]]  # (proto, host port)


def ports(paths: Paths) -> Ports:
    instance.check_runtime(paths)
    running = instance.is_locked(paths) and instance.read_state(paths) is not None
    if not running and instance.is_locked(paths) and background.read_lazy(paths):
        raise DockerUpError(
            "dockerd has not started yet (socket activation): no ports",
            hint="any docker command starts it: docker ps",
        )
    if not running:
        raise DockerUpError("docker-up is not running", hint="start it: docker-up -d")
    published = read_table(paths.published_ports_table, PublishedTable)
    auto = read_table(paths.auto_ports_table, AutoTable)
    return Ports(rows(published, auto, containers(paths.docker_host)))


def read_table(path: Path, kind: type[T]) -> T | None:
    """A table the keeper wrote; None when there is none (nothing published yet, auto ports
    off). One of another version is the keeper of another docker-up: said, not guessed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DockerUpError(f"cannot read {path}: {e.strerror}") from e
    try:
        table = kind.from_json(text)
    except (ValueError, TypeError) as e:
        raise DockerUpError(f"{path} is not a table this docker-up reads: {e}", hint=RESTART) from e
    if table.version != TABLE_VERSION:
        raise DockerUpError(
            f"{path}: table version {table.version}, not {TABLE_VERSION}", hint=RESTART
        )
    return table


def containers(docker_host: str) -> list[Container]:
    """The running containers (the Engine API, through the docker SDK); [] when dockerd
    does not answer: the ports are still listed, without names."""
    import docker

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=5)
        try:
            return containers_from_api(client.api.containers())
        finally:
            client.close()
    except Exception:  # docker.errors.DockerException, or the transport's own errors
        return []


def containers_from_api(docs: Iterable[dict[str, Any]]) -> list[Container]:
    """GET /containers/json's entries: id, first name (without its "/"), published ports."""
    out = []
    for doc in docs:
        names = doc.get("Names") or [""]
        published = frozenset(
            (str(p.get("Type", "tcp")), int(p["PublicPort"]))
            for p in doc.get("Ports") or []
            if p.get("PublicPort")
        )
        out.append(Container(str(doc.get("Id", "")), names[0].lstrip("/"), published))
    return out


def rows(
    published: PublishedTable | None, auto: AutoTable | None, known: list[Container]
) -> list[PortRow]:
    """One row per port and owner: a published port's addresses (0.0.0.0 and ::) on one."""
    out = published_rows(published, known) + auto_rows(auto, known)
    return sorted(out, key=lambda r: (r.port, r.proto, r.how != "published"))


def published_rows(table: PublishedTable | None, known: list[Container]) -> list[PortRow]:
    groups: dict[tuple[str, int, str, int], list[str]] = {}
    for p in table.ports if table else []:
        key = (p.proto, p.host_port, p.container_ip, p.container_port)
        groups.setdefault(key, []).append(p.host_ip)
    out = []
    for (proto, port, ip, cport), addresses in groups.items():
        name = next((c.name for c in known if (proto, port) in c.published), None)
        target = f"[{ip}]:{cport}" if ":" in ip else f"{ip}:{cport}"
        out.append(
            PortRow(
                port,
                proto,
                sorted(set(addresses)),
                "published",
                name or target,
                container=name,
                target=target,
            )
        )
    return out


def auto_rows(table: AutoTable | None, known: list[Container]) -> list[PortRow]:
    if table is None:
        return []
    return [auto_row(a, known, None) for a in table.auto] + [
        auto_row(a, known, a.reason) for a in table.refused
    ]


def auto_row(a: AutoPort, known: list[Container], reason: str | None) -> PortRow:
    name = next((c.name for c in known if a.container and c.id == a.container), None)
    if a.container and name is None:
        name = a.container[:12]  # a container dockerd no longer lists: its short id
    return PortRow(
        a.port,
        a.proto,
        list(a.addresses),
        "auto",
        name or a.command,
        container=name,
        pid=a.pid,
        reason=reason,
    )
