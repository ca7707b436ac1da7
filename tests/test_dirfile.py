"""Issue 14 item 7, end to end over real sshd: a folder replaced by a file (or the reverse) on one side
while the other side edits inside it (or edits the file) is a conflict that keeps both and converges:
the folder is kept, the file is saved in conflicts/, nothing is lost."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from peersync.core.selection import Selection
from peersync.replica.store import Store
from peersync.sync.runner import run_sync
from peersync.testing.pair import wire_pair

pytestmark = pytest.mark.timeout(300)
OLD = time.time() - 3600


def write(root: Path, rel: str, text: str, mtime: float | None = OLD) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def sync(ws):
    [report] = run_sync(ws)
    assert report.ok, report.error
    return report


def kept(ws, path: str) -> list[str]:
    """The contents kept in `ws`'s conflicts/ for `path`."""
    return [(ws.root / c["file"]).read_text() for c in Store(ws.root, Selection()).conflicts() if c["path"] == path]


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted((root / "memory").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith("memory/clawdbot-sync/"):
            out[rel] = path.read_text()
    return out


@pytest.fixture
def pair(tmp_path, sshd):
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd)


@pytest.mark.parametrize("replacer", ["local", "remote"])
def test_a_folder_replaced_by_a_file_while_the_other_side_edits_inside_it(pair, replacer):
    sides = {"local": pair.local, "remote": pair.remote}
    A, B = sides[replacer], sides["remote" if replacer == "local" else "local"]
    write(A.root, "memory/proj/a.md", "a v1\n")
    write(A.root, "memory/proj/b.md", "b v1\n")
    write(A.root, "memory/other.md", "other\n")
    sync(pair.local)
    shutil.rmtree(A.root / "memory/proj")
    write(A.root, "memory/proj", "now a file\n", mtime=None)  # the folder replaced by a file on A
    write(B.root, "memory/proj/a.md", "a v2, edited on B\n", mtime=None)  # an edit inside it on B
    report = sync(pair.local)
    [conflict] = report.conflicts
    assert conflict.path == "memory/proj" and conflict.saved_as and "folder is kept" in conflict.reason, report.to_json()
    expected = {"memory/other.md": "other\n", "memory/proj/a.md": "a v2, edited on B\n", "memory/proj/b.md": "b v1\n"}
    assert tree(A.root) == tree(B.root) == expected
    assert kept(A, "memory/proj") == ["now a file\n"]  # the file: in conflicts/ on the side that made it
    again = sync(pair.local)
    assert not again.changed and not again.problems, again.to_json()


@pytest.mark.parametrize("replacer", ["local", "remote"])
def test_a_file_replaced_by_a_folder_while_the_other_side_edits_the_file(pair, replacer):
    sides = {"local": pair.local, "remote": pair.remote}
    A, B = sides[replacer], sides["remote" if replacer == "local" else "local"]
    write(A.root, "memory/notes", "notes v1\n")
    write(A.root, "memory/other.md", "other\n")
    sync(pair.local)
    (A.root / "memory/notes").unlink()
    write(A.root, "memory/notes/today.md", "a folder now\n", mtime=None)  # the file replaced by a folder on A
    write(B.root, "memory/notes", "notes v2, edited on B\n", mtime=None)  # the file edited on B
    report = sync(pair.local)
    [conflict] = report.conflicts
    assert conflict.path == "memory/notes" and conflict.saved_as, report.to_json()
    expected = {"memory/notes/today.md": "a folder now\n", "memory/other.md": "other\n"}
    assert tree(A.root) == tree(B.root) == expected
    assert kept(B, "memory/notes") == ["notes v2, edited on B\n"]  # the edit: in conflicts/ where it was made
    again = sync(pair.local)
    assert not again.changed and not again.problems, again.to_json()


@pytest.mark.parametrize("way", ["folder-to-file", "file-to-folder"])
def test_a_plain_replacement_with_no_edit_on_the_other_side_is_carried_over_in_one_sync(pair, way):
    L, R = pair.local.root, pair.remote.root
    if way == "folder-to-file":
        write(L, "memory/x/a.md", "a\n")
    else:
        write(L, "memory/x", "a file\n")
    sync(pair.local)
    if way == "folder-to-file":
        shutil.rmtree(L / "memory/x")
        write(L, "memory/x", "a file now\n", mtime=None)
    else:
        (L / "memory/x").unlink()
        write(L, "memory/x/a.md", "a folder now\n", mtime=None)
    report = sync(pair.local)
    assert not report.conflicts and not report.problems, report.to_json()
    assert tree(L) == tree(R)
    assert not sync(pair.local).changed


# -- the rule itself (pure: core/dirfile.py) ----------------------------------------------------------
def _entry(text: str):
    from peersync.core.types import Entry
    from peersync.replica.scan import hash_bytes

    return Entry(len(text), 1, 0o644, hash_bytes(text.encode()))


@pytest.mark.parametrize("case, local, remote, ancestor, expect", [
    ("folder→file here, edit inside there: the file is set aside here, the folder's files come back",
     {"d": "file"}, {"d/a": "a2", "d/b": "b"}, {"d/a": "a", "d/b": "b"},
     {"d": ("delete", "local", "dir-file"), "d/a": ("copy", "local", "restored"), "d/b": ("copy", "local", "restored")}),
    ("file→folder here, edit of the file there: the file is set aside there",
     {"d/new": "n"}, {"d": "file2"}, {"d": "file"},
     {"d": ("delete", "remote", "dir-file"), "d/new": ("copy", "remote", "local-created")}),
    ("folder→file here, nothing edited there: a plain replacement",
     {"d": "file"}, {"d/a": "a"}, {"d/a": "a"},
     {"d": ("copy", "remote", "local-created"), "d/a": ("delete", "remote", "local-deleted")}),
])
def test_settle_table(case, local, remote, ancestor, expect):
    from peersync.core.plan import plan_sync
    from peersync.core.mergefile import MergeRules
    from peersync.core.types import Mode, Policy

    as_manifest = lambda d: {f"memory/{p}": _entry(t) for p, t in d.items()}  # noqa: E731
    plan = plan_sync(as_manifest(ancestor), as_manifest(local), as_manifest(remote), rules=MergeRules((), ()),
                     roots=("memory",), mass_delete_ratio=1.0, peer_name="p", policy=Policy.NEWEST, mode=Mode.SYNC,
                     offset_ns=0, local_id="a", remote_id="b", force=True)
    got = {c.path[len("memory/"):]: (c.action.value, c.target.value, c.reason) for c in plan.changes}
    assert got == expect, case


@pytest.mark.parametrize("edited_first", [False, True])
def test_settle_finds_an_edit_deep_in_a_folder_whose_parents_an_unedited_file_named_first(edited_first):
    """Pure: settle walks each folder once (it stops at one it holds).  An edit made below folders
    an unedited file already named still marks them edited: the file that replaced one of them on
    the other side is a clash, whichever file the plan lists first."""
    from peersync.core.dirfile import settle
    from peersync.core.types import Action, Change, Entry, Plan, Side

    def entry(text: str) -> Entry:
        return Entry(len(text), 1, 0o644, text.ljust(32, "0"))

    quiet = Change("memory/proj/deep/er/a.md", Action.DELETE, Side.LOCAL, entry("a"), None, entry("a"),
                   "remote-deleted")  # remote removed it (with the folder): local holds it, unedited
    edit = Change("memory/proj/deep/b.md", Action.COPY, Side.REMOTE, entry("b2"), None, entry("b"),
                  "restored")  # local edited it: its folders are edited on the local side
    file = Change("memory/proj", Action.COPY, Side.LOCAL, None, entry("file"), None, "remote-created")
    changes = [edit, quiet, file] if edited_first else [quiet, edit, file]
    settled = {c.path: c for c in settle(Plan(tuple(changes))).changes}
    assert (settled["memory/proj"].action, settled["memory/proj"].target) == (Action.DELETE, Side.REMOTE)
    assert settled["memory/proj"].quarantine and settled["memory/proj"].reason == "dir-file"
    # the folder's file the remote removed comes back to it with the folder
    assert (settled["memory/proj/deep/er/a.md"].action, settled["memory/proj/deep/er/a.md"].target) == (
        Action.COPY, Side.REMOTE)


def test_the_order_of_deletions_and_copies_is_the_one_each_folder_walk_gives():
    """execute._reordered (which deletions go before the copies, which copies after the deletions)
    adds each folder once and stops at one it holds: the same two lists as walking every parent of
    every path, whatever the plan (hypothesis: files, folders, both sides, nested names)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from peersync.core.types import DIR, Action, Change, Entry, Side
    from peersync.sync.execute import _reordered

    def by_every_parent(changes):
        below = {Side.LOCAL: set(), Side.REMOTE: set()}
        for c in changes:
            if c.target is not None and c.action in (Action.COPY, Action.DELETE):
                head = c.path.rpartition("/")[0]
                while head:
                    below[c.target].add(head)
                    head = head.rpartition("/")[0]
        first = [c for c in changes if c.action is Action.DELETE and c.path in below[c.target]
                 and c.entry(c.target) is not None and c.entry(c.target).kind != DIR]
        last = [c for c in changes if c.action is Action.COPY and c.path in below[c.target]]
        return first, last

    file, folder = Entry(1, 1, 0o644, "0" * 32), Entry(0, 0, DIR | 0o755, "0" * 32)
    def make(parts, action, side, entry, other):
        target = side if action in (Action.COPY, Action.DELETE) else None  # (as reconcile makes them)
        held = (entry, other) if side is Side.LOCAL else (other, entry)
        return Change("/".join(parts), action, target, *held, None, "x")

    change = st.builds(make, st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4),
                       st.sampled_from([Action.COPY, Action.DELETE, Action.ADOPT, Action.MERGE]),
                       st.sampled_from([Side.LOCAL, Side.REMOTE]), st.sampled_from([file, folder, None]),
                       st.sampled_from([file, folder, None]))

    @settings(max_examples=400, deadline=None)
    @given(st.lists(change, max_size=12))
    def check(changes):
        assert _reordered(changes) == by_every_parent(changes)

    check()
