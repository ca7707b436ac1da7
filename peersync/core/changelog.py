"""A bounded log of what changed at each generation of something a long-lived process keeps in
memory — a replica's version records (Versions), a watch's last scans (TreeWatch) — so that a
later step can look at the paths that changed instead of at every entry of 100,000."""
from __future__ import annotations

from collections import deque
from collections.abc import Collection


class ChangeLog:
    """Generations in the order they were made, each with the paths that changed at it, or None
    where that is not known.  Keeps the last `entries` generations and at most `paths` paths over
    all of them; a generation that names more is kept as not known.  Not thread-safe: its owner
    serialises calls (core does no I/O and takes no locks)."""

    def __init__(self, entries: int, paths: int):
        self.entries, self.paths = entries, paths
        self._log: deque[tuple[int, frozenset[str] | None]] = deque()
        self._total = 0  # paths over the generations kept

    def add(self, gen: int, paths: Collection[str] | None) -> None:
        """Generation `gen` changed at `paths` (None: anywhere, as far as anyone knows)."""
        kept = None if paths is None or len(paths) > self.paths else frozenset(paths)
        self._log.append((gen, kept))
        self._total += len(kept or ())
        while len(self._log) > self.entries or self._total > self.paths:
            self._total -= len(self._log.popleft()[1] or ())

    def between(self, since: int, upto: int) -> set[str] | None:
        """The paths that changed at generations `since + 1` … `upto`: empty when the two are one;
        None when that is not known — a generation in between never added, forgotten, or added as
        not known (then look at everything)."""
        if upto < since:
            return None
        found = {gen: paths for gen, paths in self._log if since < gen <= upto}
        if len(found) != upto - since or any(paths is None for paths in found.values()):
            return None
        out: set[str] = set()
        for paths in found.values():
            out |= paths
        return out
