"""Version vectors (pure): each version of a file carries which replicas' edits it contains, so a
sync can tell a version that descends from another (a fast-forward) from two concurrent ones (a
conflict), whatever the machines' clocks say.

A vector is a sorted tuple of (replica, counter) pairs.  A replica is named by the first 12 hex
digits of its instance id; a counter comes from that replica's own ever-growing sequence
(replica/versions.py hands them out and never twice), so a replica's later version of a path
always carries a higher counter.

`()` is a version from before vectors existed (found by a replica's first scan after an upgrade):
its history is unknown.  The first new version made from it records which bytes it started from,
as the pseudo-replica "l" + 11 hex digits of their hash (`legacy`), so a copy of those very bytes
is known to be older; anything else about such versions is decided by the pair's ancestor, as
before vectors.
"""

from __future__ import annotations

from typing import Iterable

VV = tuple[tuple[str, int], ...]

ID_DIGITS = 12

EQUAL, BEFORE, AFTER, CONCURRENT = "equal", "before", "after", "concurrent"


def legacy(content_hash: str) -> VV:
    """The vector that stands for a version from before vectors, with these bytes."""
    return (("l" + content_hash[:ID_DIGITS - 1], 1),)


def effective(vv: VV, content_hash: str) -> VV:
    """A version's vector, the pseudo one for a version from before vectors."""
    return vv or legacy(content_hash)


def short_id(instance_id: str) -> str:
    """The name a replica goes by in version vectors."""
    return instance_id[:ID_DIGITS]


def make(pairs: Iterable[tuple[str, int]]) -> VV:
    """A vector from pairs, each replica once with its highest counter, sorted."""
    best: dict[str, int] = {}
    for who, n in pairs:
        if n > best.get(who, 0):
            best[who] = n
    return tuple(sorted(best.items()))


def join(*vectors: VV) -> VV:
    """The smallest vector that contains every one of `vectors` (what a merge descends from)."""
    return make(p for v in vectors for p in v)


def bump(vv: VV, who: str, counter: int) -> VV:
    """`vv` plus one new event of `who` (its counter must be higher than any it gave before)."""
    return make([*vv, (who, counter)])


def compare(a: VV, b: VV) -> str:
    """EQUAL, BEFORE (a is an ancestor of b), AFTER (a descends from b) or CONCURRENT."""
    da, db = dict(a), dict(b)
    less = any(n > da.get(k, 0) for k, n in db.items())  # b knows an event a does not
    more = any(n > db.get(k, 0) for k, n in da.items())  # a knows an event b does not
    if less and more:
        return CONCURRENT
    if less:
        return BEFORE
    if more:
        return AFTER
    return EQUAL


def seen(a: VV, b: VV) -> bool:
    """Whoever holds `b` has seen `a` (a is b or one of its ancestors)."""
    if not a or a == b:  # (no event, or the same events: every copy of a first sync asks the first)
        return True
    return compare(a, b) in (EQUAL, BEFORE)


def to_wire(vv: VV) -> list:
    return [[who, n] for who, n in vv]


# A peer's vector is bounded: each replica that ever edited a path (and each legacy pseudo-replica)
# is one pair, so real vectors hold a handful; counters must fit SQLite's integers.
MAX_PAIRS = 1000
MAX_COUNTER = (1 << 63) - 1


def from_wire(raw) -> VV:
    """A peer's vector, checked: a list of at most MAX_PAIRS [12 hex digits, counter] pairs."""
    if not isinstance(raw, list) or len(raw) > MAX_PAIRS:
        raise ValueError("a version vector is a list of [replica, counter] pairs")
    pairs = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and len(pair[0]) == ID_DIGITS
                and all(c in "0123456789abcdef" for c in pair[0].removeprefix("l")) and type(pair[1]) is int
                and 0 < pair[1] <= MAX_COUNTER):
            raise ValueError("a version vector is a list of [replica, counter] pairs")
        pairs.append((pair[0], pair[1]))
    return make(pairs)


def text(vv: VV) -> str:
    """For reports and logs: 'a1b2c3:4 d5e6f7:1' (ids shortened further)."""
    return " ".join(f"{who[:6]}:{n}" for who, n in vv) or "(before version vectors)"
