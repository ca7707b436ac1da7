"""Paths a scan could not read: unknown, so a sync decides nothing at them (pure).

A file the scan could not read (no permission, changing while it was hashed, a symbolic link at
the name) or a directory it could not list is absent from that side's manifest, yet present for
all anyone knows.  Taking its absence for a deletion would delete the other side's copy and let
the deletion spread; so reconcile never looks at such a path or at anything under such a
directory: no copy, no deletion either way, and the pair's ancestor keeps its entry for the next
sync, which can read it again.
"""

from __future__ import annotations

from typing import Iterable


def covered(path: str, unknown: set[str]) -> bool:
    """Whether `path` is one of the `unknown` paths or lies under one of them."""
    if path in unknown:
        return True
    at = path.find("/")
    while at != -1:
        if path[:at] in unknown:
            return True
        at = path.find("/", at + 1)
    return False


def known_only(paths: Iterable[str], unknown: Iterable[str]) -> set[str]:
    """`paths` without those `unknown` covers (the paths reconcile may decide something for)."""
    unknown = {u for u in unknown if u}
    if not unknown:
        return set(paths)
    return {p for p in paths if not covered(p, unknown)}
