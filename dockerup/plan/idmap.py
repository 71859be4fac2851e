"""The id maps of docker-up's user namespace (newuidmap/newgidmap's arguments), pure.

Two layouts, the `userns` setting:
- default: the user's own id is 0 inside (the user is root there: what root containers
  write into bind mounts is the user's), the subordinate ranges follow from 1.
- keep-id (podman's --userns=keep-id, per daemon): the user's own id stays itself inside;
  the subordinate ranges fill 0 up to it and go on after it. A container user with the
  user's uid (the Dev Containers CLI's updateRemoteUserUID) writes as the user; root in
  there, dockerd included, is the first subordinate id.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockerup.host.facts import IdRange

DEFAULT, KEEP_ID = "default", "keep-id"
USERNS_CHOICES = (DEFAULT, KEEP_ID)


@dataclass(frozen=True)
class IdMap:
    """newuidmap/newgidmap arguments: our own id becomes inside_id (0, or itself under
    keep-id), the subordinate ranges fill the other ids one after the other (several where
    one range cannot hold 65536 ids, as in a pod's user namespace of 65536 ids, around the
    workspace user's own id)."""

    binary: str
    outer_id: int
    subs: tuple[IdRange, ...]
    inside_id: int = 0

    def lines(self) -> list[tuple[int, int, int]]:
        """(inside, outside, count) in the order of the inside ids; a subordinate range
        that would cover inside_id is split around it."""
        own = (self.inside_id, self.outer_id, 1)
        out: list[tuple[int, int, int]] = []
        inside = 0
        for r in self.subs:
            start, count = r.start, r.count
            if inside < self.inside_id < inside + count:
                below = self.inside_id - inside
                out.append((inside, start, below))
                start, count, inside = start + below, count - below, self.inside_id
            if inside == self.inside_id:
                out.append(own)
                inside += 1
            out.append((inside, start, count))
            inside += count
        if inside <= self.inside_id:  # the subordinate ids end below it (or there are none)
            out.append(own)
        return out

    def argv(self, pid: int) -> list[str]:
        argv = [self.binary, str(pid)]
        for line in self.lines():
            argv += [str(n) for n in line]
        return argv

    @property
    def count(self) -> int:
        """How many ids the new namespace has: 0 to count - 1 (under keep-id with a user
        id above the subordinate ids, the ids between are unmapped)."""
        return max(inside + count for inside, _, count in self.lines())

    @property
    def root(self) -> int:
        """The id outside that is root inside."""
        return next(outside for inside, outside, _ in self.lines() if inside == 0)


def id_maps(
    userns: str,
    binaries: tuple[str, str],
    ids: tuple[int, int],
    subs: tuple[tuple[IdRange, ...], tuple[IdRange, ...]],
) -> tuple[IdMap, IdMap]:
    """The uid and gid maps for the setting: ids are the user's own (uid, gid)."""
    keep = userns == KEEP_ID
    return (
        IdMap(binaries[0], ids[0], subs[0], ids[0] if keep else 0),
        IdMap(binaries[1], ids[1], subs[1], ids[1] if keep else 0),
    )


def describe(userns: str, uid: int) -> str:
    """The mapping in one line, for status and doctor."""
    if userns == KEEP_ID:
        return f"keep-id: you are uid {uid} inside, root is a subordinate id"
    return "default: you are root inside"
