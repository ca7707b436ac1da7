"""A folder on one side where the other side has a file at the same name, edited meanwhile (pure).

One side replaced a folder by a file (or a file by a folder) while the other side edited inside
the folder (or edited the file).  Neither version can be installed over the other as it stands:
a file cannot go where a folder holds files, nor files below a file.  The folder wins — it holds
the edits of one side, and may hold many files — and the file is set aside: kept in that side's
conflicts/ and taken away, so the folder's files arrive in the same sync.  The folder's files that
the file's side had removed (when it replaced the folder) come back with it: nothing is lost, and
the pair converges in one sync.  A plain replacement with no edit on the other side is no clash:
it is carried over as any change (execute orders the deletion before the copy).
"""

from __future__ import annotations

from dataclasses import replace

from peersync.core.types import DIR, Action, Change, Plan, Side

REASON = "dir-file"


def settle(plan: Plan) -> Plan:
    """`plan` with every folder/file clash turned into: the file set aside (a DELETE with
    `quarantine`, reason "dir-file"), the folder's files copied to the file's side."""
    # The folders each side holds, as the plan shows them, and those holding a change that side
    # made.  (Each side spelt out: a first sync comes here with every file of the tree.)
    local_folders, remote_folders, local_edited, remote_edited = set(), set(), set(), set()
    for c in plan.changes:
        # A side's own change: its version goes out, or meets the other side's (merge, conflict).
        action = c.action
        both = action is Action.MERGE or action is Action.CONFLICT
        if c.local is not None:
            moved = both or (action is Action.COPY and c.target is Side.REMOTE)
            _add_parents(c.path, local_folders, local_edited if moved else None)
        if c.remote is not None:
            moved = both or (action is Action.COPY and c.target is Side.LOCAL)
            _add_parents(c.path, remote_folders, remote_edited if moved else None)
    clashes: dict[str, Side] = {}  # path -> the side holding a file there
    # (side, the folders the other side holds, those of them it edited in)
    facing = ((Side.LOCAL, remote_folders, remote_edited), (Side.REMOTE, local_folders, local_edited))
    for c in plan.changes:
        for side, other_folders, other_edited in facing:
            if c.path not in other_folders:
                continue
            entry = c.entry(side)
            if entry is None or entry.kind == DIR:
                continue
            if c.action is Action.DELETE and c.target is side:
                continue  # the file goes anyway: a plain replacement, no clash
            if c.path in other_edited:
                clashes[c.path] = side
    if not clashes:
        return plan
    out = []
    for c in plan.changes:
        if c.path in clashes:
            out.append(Change(c.path, Action.DELETE, clashes[c.path], c.local, c.remote, c.ancestor, REASON,
                              quarantine=True))
            continue
        top = next((p for p in _parents(c.path) if p in clashes), None)
        if top is not None and c.action is Action.DELETE and c.target is clashes[top].other:
            # The file's side removed this when it replaced the folder; the folder is kept: so is it.
            c = replace(c, action=Action.COPY, target=clashes[top], reason="restored")
        out.append(c)
    return Plan(tuple(out), plan.problems)


def _add_parents(path: str, folders: set, edited: set | None) -> None:
    """Add `path`'s parent folders to `folders` (and to `edited`, unless None).  A folder already
    there has its own parents there too: the walk stops at it, so a plan costs a step per folder,
    not one per folder of every file's path."""
    head = path.rpartition("/")[0]
    while head and (head not in folders or (edited is not None and head not in edited)):
        folders.add(head)
        if edited is not None:
            edited.add(head)
        head = head.rpartition("/")[0]


def _parents(path: str):
    head = path.rpartition("/")[0]
    while head:
        yield head
        head = head.rpartition("/")[0]
