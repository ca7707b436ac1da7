"""Mass-delete guard: flag a plan that would delete too much on either side (pure)."""

from __future__ import annotations

import math
from typing import Collection, Iterable, Sequence

from peersync.core.types import Action, Change, Side

_WHERE = {Side.LOCAL: "locally", Side.REMOTE: "on the peer"}


def mass_delete_violations(
    changes: Iterable[Change],
    local_count: int,
    remote_count: int,
    *,
    ratio: float = 0.5,
    min_files: int = 5,
    roots: Sequence[str] = (),
    local_paths: Collection[str] | None = None,
    remote_paths: Collection[str] | None = None,
) -> list[str]:
    """Return one human message per violation; an empty list means the plan is safe.

    A side is violated when the plan deletes at least `min_files` of its `count` files and
    more than `ratio` of them, or when it would empty a selection root that held at least
    two files there.  The root rule needs the paths present on each side (`local_paths`,
    `remote_paths`, e.g. the scanned manifests); counts alone cannot tell what a root holds.
    """
    if roots and (local_paths is None or remote_paths is None):
        raise ValueError("the whole-root check needs local_paths and remote_paths")
    deleted: dict[Side, set[str]] = {Side.LOCAL: set(), Side.REMOTE: set()}
    for change in changes:
        if change.action is Action.DELETE and change.target is not None:
            deleted[change.target].add(change.path)
    sides = (
        (Side.LOCAL, local_count, local_paths or ()),
        (Side.REMOTE, remote_count, remote_paths or ()),
    )
    messages = []  # percentages round up: a blocked plan never reads as "50 %" of a 50 % limit
    for side, count, present in sides:
        n = len(deleted[side])
        if not n:
            continue  # nothing deleted on this side: neither rule can trip
        total = max(count, n)
        if n and n >= min_files and n / total > ratio:
            messages.append(
                f"would delete {n} of {total} files {_WHERE[side]} ({math.ceil(100 * n / total)} %)"
            )
        gone = deleted[side]
        for root in roots:
            root = root.strip("/")
            under = root + "/"
            if sum(1 for p in gone if p == root or p.startswith(under)) < 2:
                continue
            # Every file (two at least) this side holds under the root is deleted; the loop stops
            # at the first one kept, which in a normal sync comes at once.
            held = 0
            for p in present:
                if p == root or p.startswith(under):
                    if p not in gone:
                        break
                    held += 1
            else:
                if held >= 2:
                    messages.append(f"would delete every file under {root}/ {_WHERE[side]}")
    return messages
