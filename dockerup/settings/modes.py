"""Run modes: which namespaces docker-up must create, decided once from host facts."""

from __future__ import annotations

from enum import StrEnum

from dockerup.errors import DockerUpError


class Mode(StrEnum):
    rootless = "rootless"  # unprivileged user: new user + mount + network namespace
    userns_root = "userns-root"  # uid 0 in a user namespace, no CAP_NET_ADMIN on its netns
    privileged = "privileged"  # real root: own mount + network namespace (host's untouched)

    def needs_userns(self) -> bool:
        return self is Mode.rootless

    def dockerd_rootless(self) -> bool:
        """dockerd's --rootless: everything but real root runs inside a user namespace."""
        return self is not Mode.privileged


def resolve_mode(
    euid: int, initial_userns: bool, net_admin: bool, requested: str | None
) -> tuple[Mode, str]:
    """(mode, reason). A requested mode that cannot work here is refused with the reason."""
    if euid != 0:
        auto, reason = Mode.rootless, f"uid {euid} is not root"
    elif initial_userns and net_admin:
        auto, reason = Mode.privileged, "uid 0 in the initial user namespace with CAP_NET_ADMIN"
    elif not initial_userns:
        auto, reason = (
            Mode.userns_root,
            "uid 0 inside a user namespace"
            + ("" if net_admin else ", without CAP_NET_ADMIN over its network namespace"),
        )
    else:
        auto, reason = Mode.userns_root, "uid 0 without CAP_NET_ADMIN"
    if requested in (None, "", "auto"):
        return auto, f"auto: {reason}"
    try:
        mode = Mode(requested)
    except ValueError as e:
        raise DockerUpError(
            f"unknown mode {requested!r}", hint="choose auto, rootless, userns-root or privileged"
        ) from e
    if mode is Mode.rootless and euid == 0:
        raise DockerUpError(
            "--mode rootless needs an unprivileged user: root cannot map ids with newuidmap",
            hint="run docker-up as your own user, or use --mode auto",
        )
    if mode is not Mode.rootless and euid != 0:
        raise DockerUpError(
            f"--mode {mode} needs uid 0 (you are uid {euid})", hint="use --mode auto"
        )
    if mode is Mode.privileged and not (initial_userns and net_admin):
        raise DockerUpError(
            f"--mode privileged needs real root, but here: {reason}",
            hint="use --mode userns-root (or auto)",
        )
    return mode, f"requested: {reason}"
