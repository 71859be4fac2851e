"""`docker-up doctor --fix`: what to change, planned purely from what was found; the verb
carries it out (as root) through proc.run."""

from __future__ import annotations

from dataclasses import dataclass

from dockerup.doctor.kernel import MIN_SUBIDS
from dockerup.host.facts import parse_subid, subid_lines


@dataclass(frozen=True)
class Fix:
    what: str
    argv: tuple[str, ...]


def free_subid_start(all_text: str, count: int = MIN_SUBIDS) -> int:
    """The first start at or above 100000 that overlaps nobody's range."""
    return max([100000, *(r.start + r.count for _, r in subid_lines(all_text))])


def package_fixes(packages: list[str]) -> list[Fix]:
    if not packages:
        return []
    return [
        Fix("update the package lists", ("apt-get", "update", "-q")),
        Fix(f"install {' '.join(packages)}", ("apt-get", "install", "-y", "-q", *packages)),
    ]


def plan_fixes(
    tun_mode: int | None,
    user: tuple[str, int] | None,
    subuid_text: str,
    subgid_text: str,
    missing_packages: list[str],
    fuse_mode: int | None = None,
) -> list[Fix]:
    """What `doctor --fix` does as root: only changes that are safe on any machine.
    tun_mode, fuse_mode: /dev/net/tun's and /dev/fuse's permission bits, None when missing
    (docker-up creates no /dev/fuse: its module provides it)."""
    fixes = package_fixes(missing_packages)
    if fuse_mode is not None and fuse_mode & 0o666 != 0o666:
        # A FUSE mount made in the user's namespace belongs to it: the kernel lets no
        # process outside that namespace in (fuse-overlayfs, the dev containers' views).
        fixes.append(Fix("let every user open /dev/fuse", ("chmod", "0666", "/dev/fuse")))
    if tun_mode is None:
        fixes.append(Fix("create /dev/net/tun", ("mkdir", "-p", "/dev/net")))
        fixes.append(Fix("", ("mknod", "/dev/net/tun", "c", "10", "200")))
    if tun_mode is None or tun_mode & 0o666 != 0o666:
        fixes.append(Fix("let every user open /dev/net/tun", ("chmod", "0666", "/dev/net/tun")))
    if user:
        name, uid = user
        for kind, text in (("uids", subuid_text), ("gids", subgid_text)):
            if not parse_subid(text, name, uid):
                start = free_subid_start(text)
                span = f"{start}-{start + MIN_SUBIDS - 1}"
                fixes.append(
                    Fix(
                        f"give {name} subordinate {kind} {span}",
                        ("usermod", f"--add-sub{kind}", span, name),
                    )
                )
    return fixes
