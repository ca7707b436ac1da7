"""Ground truth of who had seen what, for the model tests (test_mesh.py, test_convergence.py).

Every user write in those tests has unique bytes, so a version is known by its content.  A version's
ancestry is the set of versions of its path that its writer had seen when it wrote: everything that
replica had held there, and everything those versions had been made from.  A merge (bytes no user
wrote, found on both sides of a sync) descends from both sides.  With that:
- a conflict whose loser is in the winner's ancestry is spurious (the winner was made from it);
- a sync that replaces a replica's version by one of that version's ancestors is a revert.
"""

from __future__ import annotations

from collections import defaultdict


class Lineage:
    def __init__(self) -> None:
        self.ancestry: dict[bytes, set[bytes]] = {}
        self.seen: dict[tuple[int, str], set[bytes]] = defaultdict(set)
        self.spurious: list[tuple] = []
        self.reverts: list[tuple] = []
        self.conflicts = 0
        # Bytes written independently on two replicas: two versions with one content.  Which of
        # them a winner was made from cannot be told by content, so a conflict that sets such
        # bytes aside is not classified (peersync, like Syncthing, sees two concurrent versions
        # there until a sync joins them; nothing is lost, the loser goes to conflicts/).
        self.twins: set[bytes] = set()

    def wrote(self, replica: int, path: str, content: bytes) -> None:
        """A user on `replica` wrote `content` (the whole file as it now is) at `path`.  The same
        bytes written independently on two replicas (the model's "same edit on two") descend only
        from what both writers had seen."""
        seen = self.seen[(replica, path)]
        if content in self.ancestry and content not in seen:
            self.twins.add(content)
        self.ancestry[content] = self.ancestry[content] & seen if content in self.ancestry else set(seen)
        seen.add(content)

    def synced(self, pair: tuple[int, int], before: dict, after: dict, conflicts=(), *, one_way: bool = False,
               label: str = "") -> None:
        """A sync between the replicas of `pair`: `before`/`after` map (replica, path) to content
        (None when absent); `conflicts` are (path, kept: "local" | "remote") as reported by the
        first replica of the pair."""
        i, j = pair
        paths = {p for _, p in before} | {p for _, p in after}
        for path in paths:
            known = self.seen[(i, path)] | self.seen[(j, path)]
            olds = {before.get((i, path)), before.get((j, path))} - {None}
            for r in (i, j):
                new = after.get((r, path))
                if new is not None and new not in self.ancestry:  # a merge: made from both sides
                    self.ancestry[new] = known | olds
        for path, kept in conflicts:
            self.conflicts += 1
            ours, theirs = before.get((i, path)), before.get((j, path))
            winner, loser = (ours, theirs) if kept == "local" else (theirs, ours)
            if winner is not None and loser is not None and loser not in self.twins \
                    and loser in self.ancestry.get(winner, ()):
                self.spurious.append((label, path, kept))
        for r in (i, j):
            for path in paths:
                old, new = before.get((r, path)), after.get((r, path))
                if not one_way and old is not None and new is not None and old != new \
                        and new in self.ancestry.get(old, ()):
                    self.reverts.append((label, r, path))
                if new is not None:
                    self.seen[(r, path)] |= {new} | self.ancestry.get(new, set())
