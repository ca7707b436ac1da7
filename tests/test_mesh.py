"""A five-machine mesh soak: random edits, appends, creates, deletes and renames, random pairs
synced (some at the same time), then convergence — and every conflict classified against the
ground truth of who had seen what.  Memory files (MEMORY.md, USER.md, a note: sync.merge) get line
edits on several machines at once: every line a user added and no user removed must be live
everywhere at the end, and a merge is only ever made between versions neither of which had seen
the other's edits, or in effect a fast-forward (ground truth: the set of edits each copy includes).

The model gives every write unique bytes, so a version is known by its content, and it keeps each
version's ancestry: the versions of that path its writer had seen (held, or seen through what it
held) when it wrote.  A merged log is a new version whose ancestry is both inputs'.  A conflict
whose loser is in the winner's ancestry is spurious — the winner was made from it — and fails the
test.  Nothing may be lost: a version stays owed until a user on a machine that held it replaced or
deleted it; until then it must be live somewhere, or in some conflicts/ or trash.

CI runs a short soak over the real loopback sshd; for a long one, in-process (the same pipeline):
    PEERSYNC_MESH_ROUNDS=2000 PEERSYNC_MESH_INPROCESS=1 pytest tests/test_mesh.py --timeout=0 -s
(PEERSYNC_MESH_SEED=N for another seed; PEERSYNC_MERGE_DEBUG=FILE traces edits, syncs and bad merges.)
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from lineage import Lineage

from peersync.core.textmerge import KEPT_END, has_kept_versions
from peersync.core.types import Policy
from peersync.sync.runner import run_sync
from peersync.testing.inprocess import sync_local
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files
from peersync.workspace.workspace import Workspace

N = 5
ROUNDS = int(os.environ.get("PEERSYNC_MESH_ROUNDS", "60"))
SEED = int(os.environ.get("PEERSYNC_MESH_SEED", "7"))
IN_PROCESS = os.environ.get("PEERSYNC_MESH_INPROCESS") == "1"
PLAIN = ["memory/notes/a.txt", "memory/notes/b.txt", "memory/people/c.txt", "memory/plan.txt"]  # whole files
MERGED = ["MEMORY.md", "USER.md", "memory/notes/a.md"]  # three-way merged, line by line (sync.merge)
LOGS = ["memory/agent/events.jsonl"]
LINK = "memory/notes/latest.txt"  # a symbolic link, created, retargeted and deleted (issue 14 item 6)
LINK_TARGETS = ["a.txt", "b.txt", "../plan.txt", "../people/c.txt"]  # relative, inside the selection
FINAL_ROUNDS = 4


HEADER = "> ⚠️ **peersync kept ".encode()


class Mesh:
    def __init__(self, base: Path, sshd, rng: random.Random):
        self.rng = rng
        names = [f"m{i}" for i in range(N)]
        self.roots = [base / n for n in names]
        if not IN_PROCESS:
            for i in range(N):
                for j in range(i + 1, N):
                    wire_pair(self.roots[i], self.roots[j], sshd, peer_name=names[j], back_name=names[i])
        for root in self.roots:
            (root / "memory").mkdir(parents=True, exist_ok=True)
        self.ws = [Workspace(r) for r in self.roots]
        self.names = names
        self.counter = 0
        self.lineage = Lineage()
        self.owed: dict[bytes, str] = {}  # version -> path; dropped once a user replaced it where it was held
        self.lines_owed: set[bytes] = set()
        # Memory files: lines that must be live at the end, and which edits each copy includes.
        self.live_owed: set[tuple[str, bytes]] = set()
        self.edits: dict[tuple[int, str], frozenset[int]] = {}
        self.removed: dict[tuple[str, bytes], set[int]] = {}  # line a user removed -> those edits (lines are unique)
        self.merges = self.twin_merges = self.revived = self.revived_kept = 0
        self.spurious_merges: list[tuple] = []
        self.lock = threading.Lock()
        # Link operations draw from their own generator: the other operations stay as they were for a seed.
        self.link_rng = random.Random(SEED + 1)

    # -- the replicas' files ------------------------------------------------------------------------
    def read(self, i: int, path: str) -> bytes | None:
        full = self.roots[i] / path
        return full.read_bytes() if full.is_file() else None

    def unique(self, what: str) -> bytes:
        self.counter += 1
        return f"{what} #{self.counter}\n".encode()

    # -- user actions -------------------------------------------------------------------------------
    def user_write(self, i: int, path: str, data: bytes, append: bool = False) -> None:
        before = self.read(i, path)
        if before is not None and not append:
            self.owed.pop(before, None)  # the user saw it and replaced it
        full = self.roots[i] / path
        full.parent.mkdir(parents=True, exist_ok=True)
        content = (before or b"") + data if append else data
        full.write_bytes(content)
        self.lineage.wrote(i, path, content)
        if append:
            self.lines_owed.add(data)
        else:
            self.owed[content] = path

    def user_delete(self, i: int, path: str) -> None:
        before = self.read(i, path)
        if before is not None:
            self.owed.pop(before, None)
            (self.roots[i] / path).unlink()

    def trace(self, text: str) -> None:
        """With PEERSYNC_MERGE_DEBUG=FILE, the soak's edits, syncs and bad merges go to FILE."""
        if os.environ.get("PEERSYNC_MERGE_DEBUG"):
            with open(os.environ["PEERSYNC_MERGE_DEBUG"], "a") as out:
                out.write(text + "\n")

    def user_edit_lines(self, i: int, path: str) -> None:
        """A user (an agent) on machine i adds a line to a memory file, or removes one it holds —
        outside passages a merge kept for a look (those are for sorting out, not for more notes)."""
        lines = (self.read(i, path) or b"").splitlines(keepends=True)
        inside = in_kept_passage(lines)
        mine = [k for k, line in enumerate(lines) if not inside[k]]
        if mine and self.rng.random() < 0.3:
            gone = lines.pop(self.rng.choice(mine))
            self.live_owed.discard((path, gone.rstrip(b"\n")))
            self.removed.setdefault((path, gone), set()).add(self.counter + 1)  # this edit's number (below)
            self.trace(f"EDIT #{self.counter + 1} {self.names[i]} {path} -{gone!r}")
        else:
            new = b"- " + self.unique(f"{path} noted on {self.names[i]}")
            places = [k for k in range(len(lines) + 1) if k == 0 or not inside[k - 1] or lines[k - 1] == KEPT_END.encode()]
            lines.insert(self.rng.choice(places), new)
            self.live_owed.add((path, new.rstrip(b"\n")))
            self.trace(f"EDIT #{self.counter + 1} {self.names[i]} {path} +{new!r}")
        (self.roots[i] / path).parent.mkdir(parents=True, exist_ok=True)
        (self.roots[i] / path).write_bytes(b"".join(lines))
        self.counter += 1
        self.edits[(i, path)] = self.edits.get((i, path), frozenset()) | {self.counter}

    def link_op(self) -> None:
        """On a random machine: create the link, retarget it, or delete it."""
        i = self.link_rng.randrange(N)
        full = self.roots[i] / LINK
        if os.path.lexists(full):
            os.unlink(full)
            if self.link_rng.random() < 0.3:
                return  # deleted
        full.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.link_rng.choice(LINK_TARGETS), full)

    def link(self, i: int) -> str | None:
        full = self.roots[i] / LINK
        return os.readlink(full) if os.path.lexists(full) else None

    def random_edit(self) -> None:
        if self.link_rng.random() < 0.15:
            self.link_op()
        i = self.rng.randrange(N)
        roll = self.rng.random()
        if roll < 0.25:
            path = self.rng.choice(PLAIN)
            self.user_write(i, path, self.unique(f"{path} by {self.names[i]}"))
        elif roll < 0.6:
            self.user_edit_lines(i, self.rng.choice(MERGED))
        elif roll < 0.75:
            self.user_write(i, LOGS[0], self.unique(f'{{"event": "{self.names[i]}"}}').rstrip() + b"\n", append=True)
        elif roll < 0.9:
            self.user_delete(i, self.rng.choice(PLAIN))
        else:  # a rename: the same bytes under another name, the old name gone
            src, dst = self.rng.sample(PLAIN, 2)
            data = self.read(i, src)
            if data is not None:
                self.user_delete(i, src)
                self.user_write(i, dst, self.unique(f"{dst} renamed from {src} by {self.names[i]}"))

    # -- syncing ------------------------------------------------------------------------------------
    def snapshot(self, i: int, j: int) -> dict:
        return {(r, p): self.read(r, p) for r in (i, j) for p in PLAIN + LOGS}

    def sync(self, i: int, j: int, policy: Policy = Policy.NEWEST) -> None:
        before = self.snapshot(i, j)
        memory = {(r, p): self.read(r, p) for r in (i, j) for p in MERGED}
        self.trace(f"SYNC {self.names[i]}<->{self.names[j]}")
        if IN_PROCESS:
            report = sync_local(self.ws[i], self.ws[j], policy=policy, name=self.names[j])
        else:
            [report] = run_sync(self.ws[i], [self.names[j]], policy=policy, lock_timeout=60)
        assert report.ok, report.error
        with self.lock:
            self.lineage.synced((i, j), before, self.snapshot(i, j),
                                [(c.path, c.kept) for c in report.conflicts if c.kept in ("local", "remote") and c.path != LINK],
                                label=f"{self.names[i]}<->{self.names[j]}")
            for path in MERGED:
                self.merged(i, j, path, memory, merged=path in report.merged)

    def merged(self, i: int, j: int, path: str, before: dict, merged: bool) -> None:
        """Ground truth for a memory file after a sync of (i, j): which edits each copy includes.
        A merge where one copy already included every edit of the other must leave that copy as
        it was (it is a fast-forward in effect).  It can still happen: two machines that merged
        the same edits into the same bytes made two versions with one content (tests/lineage.py,
        twins), and an edit made from one of them is concurrent with the other's vector."""
        mine, theirs = self.edits.get((i, path), frozenset()), self.edits.get((j, path), frozenset())
        if merged:
            self.merges += 1
            if mine != theirs and (mine <= theirs or theirs <= mine):
                later = i if theirs <= mine else j
                if self.read(later, path) != before[(later, path)]:
                    self.spurious_merges.append((f"{self.names[i]}<->{self.names[j]}", path))
                    self.trace(f"SPURIOUS {self.names[i]}<->{self.names[j]} {path} {sorted(mine)} {sorted(theirs)}")
                else:
                    self.twin_merges += 1
        result = self.read(i, path)
        if result == self.read(j, path):
            known = mine | theirs
            outside, inside = self.revives(path, result, known, before[(i, path)], before[(j, path)]) if merged else ([], [])
            if outside or inside:
                # Outside kept passages: a base older than the line (in a mesh, one that misses a
                # version the two have in common) made one side's removal look like the other's
                # insertion.  Inside one: an overlapping edit (a line removed next to one added or
                # removed on the other side) kept both versions for a look, the removal's too.
                # Nothing is lost either way; the merged copy is content neither side had, a new
                # version in the ground truth too.
                self.trace(f"REVIVED {self.names[i]}<->{self.names[j]} {path} outside={outside} inside={inside} "
                           f"{sorted(mine)} {sorted(theirs)}")
                self.revived += len(outside)
                self.revived_kept += len(inside)
                self.counter += 1
                known |= {self.counter}
            self.edits[(i, path)] = self.edits[(j, path)] = known

    def revives(self, path: str, result: bytes, known: frozenset[int],
                *sides: bytes | None) -> tuple[list[bytes], list[bytes]]:
        """The lines a merge brought back that a user had removed on one of its sides (by an edit of
        their history, `known`: a line removed elsewhere since is still live to these two): those
        outside passages kept for a look, and those inside one."""
        lines = result.splitlines(keepends=True)
        back = [k for k, line in enumerate(lines) if self.removed.get((path, line), set()) & known
                and not all(line in (side or b"").splitlines(keepends=True) for side in sides)]
        inside = in_kept_passage(lines)
        return [lines[k] for k in back if not inside[k]], [lines[k] for k in back if inside[k]]

    def random_syncs(self) -> None:
        a, b = self.rng.sample(range(N), 2)
        rest = [k for k in range(N) if k not in (a, b)]
        if self.rng.random() < 0.25 and len(rest) >= 2:  # two disjoint pairs at the same time
            c, d = self.rng.sample(rest, 2)
            other = threading.Thread(target=self.sync, args=(c, d))
            other.start()
            self.sync(a, b)
            other.join()
        else:
            self.sync(a, b)

    # -- the end ------------------------------------------------------------------------------------
    def kept_somewhere(self) -> set[bytes]:
        out = set()
        for root in self.roots:
            for place in ("conflicts", "trash"):
                top = root / "memory/clawdbot-sync" / place
                if top.is_dir():
                    out |= {p.read_bytes() for p in top.rglob("*") if p.is_file() and p.name != "index.json"}
        return out

    def kept_passages(self) -> list[str]:
        """Memory files that hold versions kept for a look (on m0; the mesh has converged)."""
        return [p for p in MERGED if has_kept_versions(self.read(0, p) or b"")]

    def live(self) -> set[bytes]:
        return {data for i in range(N) for p in PLAIN + LOGS if (data := self.read(i, p)) is not None}


def in_kept_passage(lines: list[bytes]) -> list[bool]:
    """For each line of a memory file: whether it is part of a passage a merge kept for a look."""
    inside, within = [], False
    for line in lines:
        within = within or line.startswith(HEADER)
        inside.append(within)
        within = within and line != KEPT_END.encode()
    return inside


def run_mesh(tmp_path: Path, sshd) -> Mesh:
    mesh = Mesh(tmp_path, sshd, random.Random(SEED))
    for _ in range(ROUNDS):
        for _ in range(mesh.rng.randrange(1, 3)):
            mesh.random_edit()
        mesh.random_syncs()
    for _ in range(FINAL_ROUNDS):
        for i in range(N):
            for j in range(N):
                if i != j:
                    mesh.sync(i, j)
    return mesh


def test_five_machines_converge_lose_nothing_and_never_conflict_spuriously(tmp_path, sshd):
    mesh = run_mesh(tmp_path, sshd)
    trees = [selection_files(ws) for ws in mesh.ws]
    assert all(t == trees[0] for t in trees), "the mesh did not converge"
    assert len({mesh.link(i) for i in range(N)}) == 1, f"the link did not converge: {[mesh.link(i) for i in range(N)]}"
    kept, live = mesh.kept_somewhere(), mesh.live()
    lost = [v for v in mesh.owed if v not in live and v not in kept]
    assert not lost, f"versions lost: {lost[:5]}"
    log_text = b"".join(mesh.read(0, p) or b"" for p in LOGS) + b"".join(kept)
    assert all(line in log_text for line in mesh.lines_owed), "a log line was lost"
    memory = {(p, line) for p in MERGED for line in (mesh.read(0, p) or b"").split(b"\n")}
    missing = sorted(mesh.live_owed - memory)
    assert not missing, f"memory-file lines no longer live: {missing[:5]}"
    lineage = mesh.lineage
    print(f"\nmesh: {ROUNDS} rounds, {lineage.conflicts} conflicts, {len(lineage.spurious)} spurious, "
          f"{len(lineage.reverts)} reverts; {mesh.merges} memory-file merges, {len(mesh.spurious_merges)} "
          f"spurious ({mesh.twin_merges} of twins, changing nothing), {mesh.revived} lines a user removed brought back ({mesh.revived_kept} more in passages kept for a look), {len(mesh.live_owed)} lines live, kept passages in {len(mesh.kept_passages())} files")
    assert not mesh.spurious_merges, f"merges that changed a version made from the other: {mesh.spurious_merges}"
    # A merge against the latest version both sides descend from never brings back a line a user
    # removed; only a passage kept for a look (overlapping edits) holds one, beside the version without it.
    assert not mesh.revived, f"{mesh.revived} lines a user removed came back outside passages kept for a look"
    # Kept passages (both versions live, for a look) come only from such concurrent merges: two
    # machines that each removed the same line and added one in its place did edit one passage.
    assert not lineage.spurious, f"conflicts whose loser the winner had seen: {lineage.spurious}"
    assert not lineage.reverts, f"versions replaced by one of their own ancestors: {lineage.reverts}"
