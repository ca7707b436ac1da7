"""Model-based convergence: random edits on four replicas, random pairwise syncs, nothing ever lost.

Four workspaces (PEERSYNC_CONVERGENCE_REPLICAS for another number; four make rings, where a
version can arrive through a third replica) are wired pairwise through the real loopback sshd;
every sync is a real `engine.run_sync` (asyncssh control channel, remote agent process, rsync or
inline transfer).  Rules: create/edit, the same edit on two replicas, append
to and rewrite logs, add, change and remove lines of memory files (three-way merged: MEMORY.md,
USER.md, memory/**/*.md) and keys of a JSON preferences file, sort out versions a merge kept,
delete, rename, and syncs between random pairs (either side starting, one peer or all at once,
policies newest/skip/manual, and push/pull).  After a final run of newest-policy rounds every
replica holds the same selection, and no log or memory line is doubled.

What "content ever written" means.  Every write a rule makes is unique (a counter is part of
it), so a version is identified by its bytes, and a log line by its text.  A version stops being
owed the moment a *user* replaces or deletes it on a replica that holds it — whether it was
written there or arrived by sync: the user saw it and chose to drop it, and sync carrying that
choice to the other replicas is correct.  A version that only *sync* replaced is never excused:
it must still be in some replica's selection, in some `conflicts/`, or in some trash.  For log
files the obligation is per line (appends survive merges as lines, not as whole files); a
rewrite or delete of a log by the user excuses the lines that the replica held at that moment.
Memory files are held to more: a written line must stay LIVE (in some replica's copy of that
file, not just in conflicts/) until a user edit removes it from a replica that holds it; a JSON
key's latest value likewise.  A push or pull is the user's choice to drop what the target had
and the source lacks.

CI runs a fixed (derandomized) set of examples; to explore, e.g.
PEERSYNC_CONVERGENCE_RANDOM=1 PEERSYNC_CONVERGENCE_EXAMPLES=100 pytest tests/test_convergence.py --timeout=0
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from lineage import Lineage

from peersync.core.textmerge import KEPT_END, has_kept_versions
from peersync.core.types import Mode, Policy
from peersync.sync.runner import run_sync
from peersync.testing.inprocess import sync_local
from peersync.testing.pair import wire_pair
from peersync.testing.trees import selection_files
from peersync.workspace.workspace import Workspace

N = int(os.environ.get("PEERSYNC_CONVERGENCE_REPLICAS", "4"))
NAMES = [f"r{i}" for i in range(max(N, 4))]
PLAIN = ("memory/notes/a.txt", "memory/notes/b.txt", "memory/people/c.txt")  # whole files: newest wins
LOGS = ("memory/2026-01-26.md", "memory/agent/events.jsonl")
TEXT = ("MEMORY.md", "USER.md", "memory/notes/a.md")  # merged three-way, line by line (sync.merge)
PREFS = "memory/skill/preferences.json"  # merged three-way, key by key
WHOLE, WHOLE_2 = PLAIN[2], PLAIN[0]
PAIRS = [(a, b) for a in range(N) for b in range(N) if a != b]
POLICIES = (Policy.NEWEST, Policy.SKIP, Policy.MANUAL)
FINAL_ROUNDS = 4  # a final round is every pair once, policy newest; convergence must come sooner

# Modest by default (each sync is a real SSH session); PEERSYNC_CONVERGENCE_EXAMPLES=200 explores more.
EXAMPLES = int(os.environ.get("PEERSYNC_CONVERGENCE_EXAMPLES", "10"))
STEPS = int(os.environ.get("PEERSYNC_CONVERGENCE_STEPS", "30"))
# Derandomized so CI runs the same examples every time; PEERSYNC_CONVERGENCE_RANDOM=1 explores anew.
RANDOM = os.environ.get("PEERSYNC_CONVERGENCE_RANDOM") == "1"
ONE_WAY = os.environ.get("PEERSYNC_CONVERGENCE_ONE_WAY", "1") == "1"  # include push/pull runs
# The same model in-process (peersync.testing.inprocess: the real pipeline, no sshd), for long
# explorations; "every peer" is then each peer in turn.
IN_PROCESS = os.environ.get("PEERSYNC_CONVERGENCE_INPROCESS") == "1"


def make_replicas(base: Path, sshd, n: int = N) -> list[Workspace]:
    """n empty workspaces under `base`, each with the other n-1 as peers r0, r1, …"""
    roots = [base / name for name in NAMES[:n]]
    for i in range(n):
        roots[i].mkdir(parents=True, exist_ok=True)
        for j in range(i + 1, n):
            if not IN_PROCESS:
                wire_pair(roots[i], roots[j], sshd, peer_name=NAMES[j], back_name=NAMES[i])
    return [Workspace(r) for r in roots]


def kept_files(ws: Workspace) -> list[bytes]:
    """Every file's bytes in the places a version may legitimately end up besides the selection."""
    out = []
    for place in ("conflicts", "trash"):
        top = ws.state / place
        for path in sorted(top.rglob("*")) if top.is_dir() else ():
            if path.is_file() and not (place == "conflicts" and path.parent == top):  # not index.json
                out.append(path.read_bytes())
    return out


def lines_of(data: bytes) -> set[bytes]:
    return {line for line in data.split(b"\n") if line}


def marker(line: bytes) -> bool:
    """A line a merge wrote around versions it kept (not the user's)."""
    return line.startswith("> ⚠️ **peersync kept ".encode()) or line.startswith("> **▼ ".encode()) \
        or line + b"\n" == KEPT_END.encode()


def user_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line and not marker(line)]


def outside_kept(data: bytes) -> list[bytes]:
    """The lines of a file that are not inside a passage with kept versions."""
    out, inside = [], False
    for line in data.split(b"\n"):
        if line.startswith("> ⚠️ **peersync kept ".encode()):
            inside = True
        elif line + b"\n" == KEPT_END.encode():
            inside = False
        elif not inside and line:
            out.append(line)
    return out


def json_pairs(data: bytes) -> set[tuple[str, str]]:
    try:
        doc = json.loads(data)
    except ValueError:
        return set()
    return {(k, json.dumps(v)) for k, v in doc.items()} if isinstance(doc, dict) else set()


class Model:
    """What the rules wrote and what is still owed (see the module docstring)."""

    def __init__(self, replicas: list[Workspace]):
        self.replicas = replicas
        self.counter = 0
        self.owed_versions: set[bytes] = set()
        self.owed_lines: set[bytes] = set()
        self.owed_live: set[tuple[str, bytes]] = set()  # memory-file lines that must stay live
        self.owed_keys: set[tuple[str, str]] = set()  # (key, JSON value) pairs that must stay live
        self.syncs: list[str] = []
        self.lineage = Lineage()  # who had seen what: no spurious conflict, no revert (tests/lineage.py)

    def snapshot(self) -> dict:
        return {(r, p): (ws.root / p).read_bytes() if (ws.root / p).is_file() else None
                for r, ws in enumerate(self.replicas) for p in PLAIN + LOGS}

    def fresh(self, tag: str) -> str:
        self.counter += 1
        return f"{tag} #{self.counter:04d}"

    def excuse(self, path: str, data: bytes) -> None:
        """The user dropped `data` (at `path`) on one replica: it is no longer owed."""
        if path in TEXT:
            self.owed_live -= {(path, line) for line in user_lines(data)}
        elif path == PREFS:
            self.owed_keys -= json_pairs(data)
        elif path in LOGS:
            self.owed_lines -= lines_of(data)
        else:
            self.owed_versions.discard(data)

    def owe(self, path: str, data: bytes) -> None:
        if path in TEXT:
            self.owed_live |= {(path, line) for line in user_lines(data)}
        elif path == PREFS:
            self.owed_keys |= json_pairs(data)
        elif path in LOGS:
            self.owed_lines |= lines_of(data)
        else:
            self.owed_versions.add(data)

    def missing(self) -> tuple[set[bytes], set[bytes]]:
        everything = []
        for ws in self.replicas:
            everything += selection_files(ws).values()
            everything += kept_files(ws)
        contents = set(everything)
        lines = set().union(*(lines_of(d) for d in everything)) if everything else set()
        return self.owed_versions - contents, self.owed_lines - lines

    def not_live(self) -> tuple[set, set]:
        """Owed memory-file lines and JSON values that no replica's live file holds."""
        live, keys = set(), set()
        for ws in self.replicas:
            for path in TEXT:
                if (ws.root / path).exists():
                    live |= {(path, line) for line in lines_of((ws.root / path).read_bytes())}
            if (ws.root / PREFS).exists():
                keys |= json_pairs((ws.root / PREFS).read_bytes())
        return self.owed_live - live, self.owed_keys - keys


def sync(model: Model, a: int, b: int | None, policy: Policy, mode: Mode = Mode.SYNC) -> list:
    model.syncs.append(f"{NAMES[a]}->{NAMES[b] if b is not None else '*'} {mode.value} {policy.value}")
    if mode is not Mode.SYNC:  # the user chose to make the target match: what only it had goes
        source, target = (a, b) if mode is Mode.PUSH else (b, a)
        for t in ([target] if target is not None else [i for i in range(len(model.replicas)) if i != source]):
            for path in (*TEXT, PREFS):
                theirs, ours = model.replicas[t].root / path, model.replicas[source].root / path
                theirs_data, ours_data = (f.read_bytes() if f.exists() else b"" for f in (theirs, ours))
                if path == PREFS:
                    model.owed_keys -= json_pairs(theirs_data) - json_pairs(ours_data)
                else:
                    model.owed_live -= {(path, line) for line in set(user_lines(theirs_data)) - set(user_lines(ours_data))}
    if IN_PROCESS:
        peers = [b] if b is not None else [k for k in range(len(model.replicas)) if k != a]
        return [one for peer in peers for one in _sync_in_process(model, a, peer, policy, mode)]
    before = model.snapshot()
    reports = run_sync(model.replicas[a], [NAMES[b]] if b is not None else None, policy=policy, mode=mode,
                       force=True)
    for report in reports:
        assert report.ok, f"{model.syncs[-1]}: {report.error}"
        assert not report.problems, f"{model.syncs[-1]}: {report.problems}"
    after = model.snapshot()
    for report in reports:  # with every peer at once, a later pair's "before" is not known: observed only
        peer = NAMES.index(report.peer)
        decided = [(c.path, c.kept) for c in report.conflicts if c.kept in ("local", "remote")] if b is not None else []
        model.lineage.synced((a, peer), before, after, decided, one_way=mode is not Mode.SYNC, label=model.syncs[-1])
    return reports


def _sync_in_process(model: Model, a: int, b: int, policy: Policy, mode: Mode) -> list:
    before = model.snapshot()
    report = sync_local(model.replicas[a], model.replicas[b], policy=policy, mode=mode, force=True, name=NAMES[b])
    assert report.ok, f"{model.syncs[-1]}: {report.error}"
    assert not report.problems, f"{model.syncs[-1]}: {report.problems}"
    decided = [(c.path, c.kept) for c in report.conflicts if c.kept in ("local", "remote")]
    model.lineage.synced((a, b), before, model.snapshot(), decided, one_way=mode is not Mode.SYNC,
                         label=f"{model.syncs[-1]} ({NAMES[a]}-{NAMES[b]})")
    return [report]


def converge(model: Model) -> None:
    """Rounds of newest-policy syncs over every pair until one round changes nothing."""
    n = len(model.replicas)
    for _ in range(FINAL_ROUNDS):
        changed = False
        for a, b in [(i, i + 1) for i in range(n - 1)] + [(0, n - 1), (n - 1, n - 2)]:
            changed |= any(r.changed for r in sync(model, a, b, Policy.NEWEST))
        if not changed:
            break
    else:
        pytest.fail(f"no convergence after {FINAL_ROUNDS} rounds; syncs: {model.syncs}")
    trees = [selection_files(ws) for ws in model.replicas]
    for name, tree in zip(NAMES[1:], trees[1:]):
        assert tree == trees[0], f"{name} differs from r0 after the final rounds"
    for path in LOGS + TEXT:  # a line that reached a file by several routes is in it once (DESIGN 3)
        lines = outside_kept(trees[0].get(path, b""))
        doubled = sorted({line for line in lines if lines.count(line) > 1})
        assert not doubled, f"{path}: lines merged twice: {doubled}; syncs: {model.syncs}"


def assert_nothing_lost(model: Model) -> None:
    versions, lines = model.missing()
    assert not versions, f"versions lost: {sorted(versions)}; syncs: {model.syncs}"
    assert not lines, f"log lines lost: {sorted(lines)}; syncs: {model.syncs}"
    live, keys = model.not_live()
    assert not live, f"memory-file lines no longer live: {sorted(live)}; syncs: {model.syncs}"
    assert not keys, f"JSON values no longer live: {sorted(keys)}; syncs: {model.syncs}"


# -- user actions ------------------------------------------------------------------------


def user_write(model: Model, r: int, path: str, data: bytes, *, append: bool = False) -> None:
    full = model.replicas[r].root / path
    if full.exists() and not append:
        model.excuse(path, full.read_bytes())
    full.parent.mkdir(parents=True, exist_ok=True)
    with open(full, "ab" if append else "wb") as f:
        f.write(data)
    model.owe(path, data)
    model.lineage.wrote(r, path, full.read_bytes())


def user_delete(model: Model, r: int, path: str) -> None:
    full = model.replicas[r].root / path
    if full.exists():
        model.excuse(path, full.read_bytes())
        full.unlink()


def user_rename(model: Model, r: int, src: str, dst: str) -> None:
    """`mv -f src dst` between plain files: the moved version stays owed, a replaced dst is excused."""
    root = model.replicas[r].root
    if not (root / src).exists() or src == dst:
        return
    if (root / dst).exists():
        model.excuse(dst, (root / dst).read_bytes())
    (root / dst).parent.mkdir(parents=True, exist_ok=True)
    os.rename(root / src, root / dst)
    model.lineage.wrote(r, dst, (root / dst).read_bytes())


def user_edit_lines(model: Model, r: int, path: str, change) -> None:
    """The user on replica r edits `path` line by line (`change(lines) -> lines`, lines without
    their newline): the lines it removed are excused, the new ones owed."""
    full = model.replicas[r].root / path
    before = full.read_bytes() if full.exists() else b""
    after = b"".join(line + b"\n" for line in change(before.split(b"\n")[:-1] if before else []))
    if after == before:
        return
    model.excuse(path, bytes(b"\n".join(set(user_lines(before)) - set(user_lines(after)))))
    model.owe(path, bytes(b"\n".join(set(user_lines(after)) - set(user_lines(before)))))
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_bytes(after)


def sort_out(lines: list[bytes]) -> list[bytes]:
    """What a user does with versions a merge kept: keep the first version of each passage."""
    out, state = [], None  # None: outside a passage; "first"/"rest": inside one
    for line in lines:
        if line.startswith("> ⚠️ **peersync kept ".encode()):
            state = "header"
        elif state is not None and line + b"\n" == KEPT_END.encode():
            state = None
        elif state is not None and line.startswith("> **▼ ".encode()):
            state = "first" if state == "header" else "rest"
        elif state in (None, "first"):
            out.append(line)
    return out


class Replicas(RuleBasedStateMachine):
    sshd = None  # set by the test before running the machine
    base: Path

    @initialize()
    def setup(self):
        self.dir = Path(tempfile.mkdtemp(dir=self.base))
        self.model = Model(make_replicas(self.dir, self.sshd))

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(PLAIN))
    def write(self, r, path):
        text = self.model.fresh(f"{path} by {NAMES[r]}")
        # Two lengths, so equal-size edits (the stat cache's hard case) and size changes both occur.
        user_write(self.model, r, path, (text + ("\n" if self.model.counter % 2 else " (longer)\n")).encode())

    @rule(pair=st.sampled_from(PAIRS), path=st.sampled_from(PLAIN))
    def write_same_on_two(self, pair, path):
        """The same edit made on two replicas (a false conflict: equal content, nothing to do)."""
        data = (self.model.fresh(f"{path} same on {NAMES[pair[0]]} and {NAMES[pair[1]]}") + "\n").encode()
        for r in pair:
            user_write(self.model, r, path, data)

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(LOGS), lines=st.integers(1, 3))
    def append(self, r, path, lines):
        data = "".join(self.model.fresh(f"- {NAMES[r]} line") + "\n" for _ in range(lines))
        user_write(self.model, r, path, data.encode(), append=True)

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(LOGS))
    def rewrite_log(self, r, path):
        user_write(self.model, r, path, (self.model.fresh(f"# {path} rewritten by {NAMES[r]}") + "\n").encode())

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(PLAIN + LOGS + TEXT + (PREFS,)))
    def delete(self, r, path):
        user_delete(self.model, r, path)

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(TEXT), pos=st.integers(0, 40), lines=st.integers(1, 2))
    def add_lines(self, r, path, pos, lines):
        """An agent notes something in a memory file, anywhere in it (often at the same place as another)."""
        new = [self.model.fresh(f"- {NAMES[r]} noted").encode() for _ in range(lines)]
        user_edit_lines(self.model, r, path, lambda old: old[:pos % (len(old) + 1)] + new + old[pos % (len(old) + 1):])

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(TEXT), pos=st.integers(0, 40), remove=st.booleans())
    def change_line(self, r, path, pos, remove):
        """An agent rewrites (or removes) one line of a memory file."""
        new = self.model.fresh(f"- {NAMES[r]} changed").encode()

        def change(old):
            mine = [i for i, line in enumerate(old) if line and not marker(line)]
            if not mine:
                return old
            i = mine[pos % len(mine)]
            return old[:i] + ([] if remove else [new]) + old[i + 1:]

        user_edit_lines(self.model, r, path, change)

    @rule(r=st.integers(0, N - 1), path=st.sampled_from(TEXT))
    def sort_out_kept_versions(self, r, path):
        full = self.model.replicas[r].root / path
        if full.exists() and has_kept_versions(full.read_bytes()):
            user_edit_lines(self.model, r, path, sort_out)

    @rule(r=st.integers(0, N - 1), key=st.integers(0, 2), remove=st.booleans())
    def set_preference(self, r, key, remove):
        """An agent sets (or removes) one of its own keys in a JSON preferences file."""
        full = self.model.replicas[r].root / PREFS
        before = full.read_bytes() if full.exists() else b"{}"
        try:
            doc = json.loads(before)
        except ValueError:
            return
        name = f"{NAMES[r]}.{key}"
        if remove:
            doc.pop(name, None)
        else:
            doc[name] = self.model.fresh(f"{NAMES[r]} prefers")
        after = (json.dumps(doc, indent=2) + "\n").encode()
        self.model.owed_keys -= json_pairs(before) - json_pairs(after)
        self.model.owed_keys |= json_pairs(after) - json_pairs(before)
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(after)

    @rule(r=st.integers(0, N - 1), src=st.sampled_from(PLAIN), dst=st.sampled_from(PLAIN))
    def rename(self, r, src, dst):
        user_rename(self.model, r, src, dst)

    @rule(pair=st.sampled_from(PAIRS), policy=st.sampled_from(POLICIES))
    def sync_pair(self, pair, policy):
        sync(self.model, pair[0], pair[1], policy)

    @precondition(lambda self: ONE_WAY)
    @rule(pair=st.sampled_from(PAIRS), mode=st.sampled_from((Mode.PUSH, Mode.PULL)))
    def push_or_pull(self, pair, mode):
        """One-way: the target's unseen versions go to conflicts/, its extra files to the trash."""
        sync(self.model, pair[0], pair[1], Policy.NEWEST, mode)

    @rule(r=st.integers(0, N - 1), policy=st.sampled_from(POLICIES))
    def sync_all_peers(self, r, policy):
        sync(self.model, r, None, policy)  # every peer concurrently, one writer at a time

    @invariant()
    def nothing_lost(self):
        if hasattr(self, "model"):
            assert_nothing_lost(self.model)

    @invariant()
    def no_spurious_conflict_and_no_revert(self):
        if hasattr(self, "model"):
            lineage = self.model.lineage
            assert not lineage.spurious, f"conflicts whose loser the winner had seen: {lineage.spurious}"
            assert not lineage.reverts, f"versions replaced by one of their own ancestors: {lineage.reverts}"

    def teardown(self):
        if not hasattr(self, "model"):
            return
        try:
            converge(self.model)
            assert_nothing_lost(self.model)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(max(300, EXAMPLES * 40))
def test_random_edits_and_syncs_converge_and_lose_nothing(sshd, tmp_path):
    Replicas.sshd, Replicas.base = sshd, tmp_path
    run_state_machine_as_test(Replicas, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=not RANDOM, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]))


# -- pinned cases and regressions: short runs of the model through its riskiest paths -------------
# A failure of the model, shrunk, goes here as one more case (the last two came from it).


@pytest.fixture
def model(sshd, tmp_path):
    return Model(make_replicas(tmp_path, sshd))


def test_rename_on_one_replica_while_another_edits_the_old_name(model):
    user_write(model, 0, "memory/notes/a.md", b"a v1\n")
    sync(model, 0, 1, Policy.NEWEST)
    sync(model, 1, 2, Policy.NEWEST)
    user_rename(model, 0, "memory/notes/a.md", "memory/notes/b.md")
    user_write(model, 2, "memory/notes/a.md", b"a edited on r2\n")
    sync(model, 0, None, Policy.NEWEST)
    assert_nothing_lost(model)
    converge(model)
    assert_nothing_lost(model)
    tree = selection_files(model.replicas[1])
    assert tree["memory/notes/a.md"] == b"a edited on r2\n" and tree["memory/notes/b.md"] == b"a v1\n"


def test_skip_then_manual_then_newest_keeps_every_version(model):
    user_write(model, 0, WHOLE, b"base\n")
    sync(model, 0, None, Policy.NEWEST)
    for r in range(N):
        user_write(model, r, WHOLE, f"USER.md as {NAMES[r]} has it\n".encode())
    for policy in (Policy.SKIP, Policy.MANUAL, Policy.MANUAL):
        sync(model, 0, 1, policy)
        sync(model, 2, 1, policy)
        assert_nothing_lost(model)
    converge(model)
    assert_nothing_lost(model)


def test_push_and_pull_keep_what_the_target_never_saw(model):
    user_write(model, 0, WHOLE_2, b"m v1\n")
    user_write(model, 0, "memory/2026-01-26.md", b"- r0 line 1\n")
    sync(model, 0, None, Policy.NEWEST)
    user_write(model, 1, WHOLE_2, b"m edited on r1, never seen by r0\n")
    user_write(model, 1, "memory/notes/only-r1.md", b"only on r1\n")
    user_write(model, 1, "memory/2026-01-26.md", b"- r1 line 2\n", append=True)
    user_write(model, 2, "memory/2026-01-26.md", b"- r2 line 3\n", append=True)
    sync(model, 2, 1, Policy.NEWEST)
    sync(model, 0, 1, Policy.NEWEST, Mode.PUSH)  # r1 is made to match r0
    assert_nothing_lost(model)
    sync(model, 2, 0, Policy.NEWEST, Mode.PULL)
    assert_nothing_lost(model)
    converge(model)
    assert_nothing_lost(model)


def ring_holding_x(sshd, tmp_path) -> tuple[Model, bytes]:
    """Four replicas; r0 wrote X in WHOLE and synced it to r1 and r3 (r2 never had it)."""
    model = Model(make_replicas(tmp_path, sshd, n=4))
    x = b"X: the first version\n"
    user_write(model, 0, WHOLE, x)
    sync(model, 0, 1, Policy.NEWEST)
    sync(model, 0, 3, Policy.NEWEST)
    return model, x


def test_a_revert_in_a_ring_of_four_converges(sshd, tmp_path):
    """Found by the model with four replicas (shrunk by hand).  r1 replaces X by Y; r2, having
    seen Y, puts X back.  Then X travels one way round the ring r0-r1-r2-r3 and Y the other:
    every pair sync sees exactly one side moved since that pair's ancestor and copies it, so the
    two versions used to swap places round after round.  Under newest a one-sided copy never puts
    an older version over a newer one (reconcile), which breaks the cycle: the revert wins."""
    model, x = ring_holding_x(sshd, tmp_path)
    y = b"Y: the second version\n"
    user_write(model, 1, WHOLE, y)
    sync(model, 1, 2, Policy.NEWEST)
    user_write(model, 2, WHOLE, x)  # reverted on r2, after seeing Y (same bytes, new mtime)
    sync(model, 2, 3, Policy.NEWEST)  # equal content there: nothing to copy
    converge(model)
    assert selection_files(model.replicas[0])[WHOLE] == x  # the latest user action wins


def test_a_revert_seen_through_a_third_replica_is_not_overwritten(model):
    """r1 replaces X by Y; r2 gets Y, then puts X back.  To the pair r0-r2 (ancestor X) r2 looked
    unchanged when only content counted, so r0's Y (arrived through r1) replaced r2's revert
    without keeping it anywhere.  A rewrite with the ancestor's bytes is a change (reconcile)."""
    x, y = b"X: the first version\n", b"Y: the second version\n"
    user_write(model, 0, WHOLE, x)
    for a, b in ((0, 1), (0, 2), (1, 2)):  # every pair has X as its ancestor
        sync(model, a, b, Policy.NEWEST)
    user_write(model, 1, WHOLE, y)
    sync(model, 1, 2, Policy.NEWEST)
    user_write(model, 2, WHOLE, x)  # the user on r2 reverts Y (the latest edit anywhere)
    sync(model, 0, 1, Policy.NEWEST)  # r0 gets Y
    sync(model, 0, 2, Policy.NEWEST)  # r0-r2: ancestor X, r2 "unchanged", r0 "changed" → Y over the revert
    assert_nothing_lost(model)


def test_a_deletion_and_a_re_creation_in_a_ring_of_four_converge(sshd, tmp_path):
    """Found by the model with four replicas (shrunk by hand).  r1 deletes X; r2, which never had
    it, writes the same bytes X later.  The pair r2-r3 used to adopt X with r2's mtime while r3
    kept its older copy, so when the deletion reached r3 it counted, for r2-r3, as deleting r2's
    unchanged X: the deletion travelled one way round the ring and X the other, for ever.  Now an
    adopt gives the older copy the newer mtime (engine Run.touch), so the ancestor matches both
    sides; X, the latest user action, survives and spreads."""
    model, x = ring_holding_x(sshd, tmp_path)
    user_delete(model, 1, WHOLE)
    sync(model, 1, 2, Policy.NEWEST)  # r2 never had X: nothing to do
    user_write(model, 2, WHOLE, x)  # written on r2 after the deletion on r1
    sync(model, 2, 3, Policy.NEWEST)  # equal content there: adopted with r2's mtime
    converge(model)
    assert selection_files(model.replicas[0])[WHOLE] == x  # the latest user action wins


def test_a_copy_of_a_deleted_file_arriving_through_a_fourth_replica_is_deleted(sshd, tmp_path):
    """Found by the model with four replicas (after pushes, renames, skip and manual; rebuilt by
    hand).  r1 deletes X and the deletion reaches r0; r2 gets an old copy of X from r3 through a
    pair whose ancestor never knew the file.  To the pair r1-r2 that copy looked new, so X came
    back, and a deletion and a copy of X circled the ring with period two.  Now both sides of a
    sync that deletes X record it (peersync.replica.tombstones), and a copy no newer than a recorded
    deletion goes to the trash instead of coming back: the deletion, the latest user action, wins."""
    model, x = ring_holding_x(sshd, tmp_path)
    user_delete(model, 1, WHOLE)
    sync(model, 0, 1, Policy.NEWEST)  # r0 deletes X (to its trash); both record the deletion
    sync(model, 2, 3, Policy.NEWEST)  # r2 gets X from r3: that pair never knew of the deletion
    [report] = sync(model, 1, 2, Policy.NEWEST)  # r1-r2: r2's X is a copy of what r1 deleted
    assert report.deleted_remote == [WHOLE] and not report.pulled
    converge(model)
    assert all(WHOLE not in selection_files(ws) for ws in model.replicas)
    assert_nothing_lost(model)  # every copy that sync deleted is in a trash


def test_a_deleted_file_put_back_with_its_old_mtime_comes_back_everywhere(sshd, tmp_path):
    """The other side of deletion records: r1 deletes X, the deletion reaches r0 and r2, then the
    user on r1 puts X back as it was (`cp -p` from a backup keeps the old mtime).  r1 recorded
    that deletion itself, so X there is a new version that descends from the deletion (its
    version vector says so, whatever its mtime): it spreads, instead of being deleted again by the
    peers that recorded the deletion."""
    model = Model(make_replicas(tmp_path, sshd, n=4))
    x = b"X: the first version\n"
    user_write(model, 0, WHOLE, x)
    for a, b in ((0, 1), (0, 2), (0, 3)):
        sync(model, a, b, Policy.NEWEST)
    old = os.stat(model.replicas[1].root / WHOLE).st_mtime_ns
    user_delete(model, 1, WHOLE)
    sync(model, 1, 0, Policy.NEWEST)
    sync(model, 0, 2, Policy.NEWEST)  # the deletion reaches r2; r3 still has the old X
    user_write(model, 1, WHOLE, x)
    os.utime(model.replicas[1].root / WHOLE, ns=(old, old))
    [report] = sync(model, 1, 2, Policy.NEWEST)
    assert report.pushed == [WHOLE]
    converge(model)
    for ws in model.replicas:
        assert (ws.root / WHOLE).read_bytes() == x
    assert_nothing_lost(model)


def test_a_line_that_reached_two_machines_by_two_routes_is_kept_once(model):
    """Found by the model (shrunk by hand), before version vectors: r3 replaced N by C; r0 got N
    from r1 and met r3 for the first time (no base: a union, N and C); r3 then removed N.  The pair
    r2-r3 (base N) merged r2's "N, C" with r3's "C": a replacement and an insertion side by side,
    which both applied — C twice (the rule is a row of tests/test_textmerge.py now).  With vectors,
    r3's C descends from N: r0 takes it as it is, no union, and C stays once."""
    path = "MEMORY.md"
    user_edit_lines(model, 1, path, lambda old: [b"- N: noted on r1"])
    for b in (1, 3):
        sync(model, 2, b, Policy.NEWEST)
    user_edit_lines(model, 3, path, lambda old: [b"- C: changed on r3"])
    for b in (1, 3):
        sync(model, 0, b, Policy.NEWEST)
    assert (model.replicas[0].root / path).read_bytes() == b"- C: changed on r3\n"  # a fast-forward
    user_edit_lines(model, 3, path, lambda old: [line for line in old if not line.startswith(b"- N")])
    converge(model)
    assert_nothing_lost(model)
    assert (model.replicas[0].root / path).read_bytes() == b"- C: changed on r3\n"
