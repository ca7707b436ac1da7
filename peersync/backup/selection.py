"""Which files a snapshot holds: the synced selection plus this instance's own IDENTITY.md and config/.

A machine is rebuilt from its backup, so the two things peers never share (selection.NEVER)
are exactly what its backup must hold.  The same rules decide what a restore may write: a
snapshot entry outside them is never restored, whoever made the snapshot.

restic is given the smallest list of paths that covers the files: a directory whose every
entry is backed up is passed whole (restic walks it), others are broken down.  That keeps the
snapshot's path list short (restic stores it in every snapshot) without hiding a single
exclusion from restic.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from peersync.core.paths import STATE_DIR, BadPath, check_relpath, in_state_dir
from peersync.core.selection import NEVER, Selection
from peersync.core.types import Problem

OWN = NEVER  # ("IDENTITY.md", "config"): this instance's own, backed up, never synced
OPENCLAW_PREFIX = "@openclaw/"  # old-format snapshots kept copies of ~/.openclaw here
# State files worth keeping with include_state; never our backup files (the generated passphrase
# among them), caches, locks, staging areas or the trash.  Never the version stores
# (versions.sqlite: the state dir's and each cloud folder's; nor its snapshots, versions.marshal and
# versions.delta.marshal, caches of the same rows) nor the instance id they count for:
# a restored store is stale, and its counters — or a fresh store's, under a restored instance id
# — would hand out again events peers already hold, so two different contents could look like
# one version.  A rebuilt machine takes a new instance id and records its files afresh; peers
# meet it as a new replica (no ancestor: nothing deleted, differences kept as conflicts) and keep
# the history.  A live SQLite file copied mid-transaction would also be torn.
STATE_EXCLUDES = ("/backup/", "/trash/", "/staging/", "/holding/", "/cloud/*/work/", "*.lock", "lock",
                  "lock.info", "*.tmp", "cache/", "*cache*.json", "versions.sqlite", "versions.sqlite-*",
                  "versions.marshal", "versions.delta.marshal", "/instance-id")


def _top(path: str) -> str:
    return path.split("/", 1)[0]


@dataclass(frozen=True)
class BackupSelection:
    """The sync selection plus OWN, with the same gitignore excludes (duck-types Selection for
    scan.walk and transition.Store)."""

    sync: Selection

    @property
    def roots(self) -> tuple[str, ...]:
        return self.sync.roots + OWN

    def under_root(self, path: str) -> bool:
        return _top(path) in OWN or self.sync.under_root(path)

    def excludes_dir(self, path: str) -> bool:
        if _top(path) in OWN:
            return self.sync.pattern_excludes(path + "/")
        return self.sync.excludes_dir(path)

    def excludes_file(self, path: str) -> bool:
        if _top(path) in OWN:
            return self.sync.pattern_excludes(path)
        return self.sync.excludes_file(path)

    def excludes_child(self, path: str) -> bool:
        if _top(path) in OWN:
            return self.sync.pattern_excludes(path)
        return self.sync.excludes_child(path)

    def contains(self, path: str) -> bool:
        """True when a file at `path` may be backed up and restored in place."""
        if in_state_dir(path) or not self.under_root(path) or self.excludes_file(path):
            return False
        parts = path.split("/")
        return not any(self.excludes_dir("/".join(parts[:i])) for i in range(1, len(parts)))


def for_workspace(ws) -> BackupSelection:
    return BackupSelection(ws.sync_config().selection)


# -- what restic is given ------------------------------------------------------------------------

class _StateTree:
    """The state dir's files worth backing up (include_state), as a selection over workspace paths."""

    def __init__(self) -> None:
        self.spec = pathspec.GitIgnoreSpec.from_lines(STATE_EXCLUDES)
        self.roots = (STATE_DIR,)

    def _inner(self, path: str) -> str:
        return path[len(STATE_DIR):] or "/"

    def excludes_dir(self, path: str) -> bool:
        return path != STATE_DIR and self.spec.match_file(self._inner(path).lstrip("/") + "/")

    def excludes_file(self, path: str) -> bool:
        return self.spec.match_file(self._inner(path).lstrip("/"))

    excludes_child = excludes_file


@dataclass
class Plan:
    """The paths handed to restic (workspace-relative) and what was left out, with reasons."""

    targets: list[str] = field(default_factory=list)
    files: int = 0
    problems: list[Problem] = field(default_factory=list)


def plan(root: Path, selection: BackupSelection, *, include_state: bool = False,
         extra: list[str] = ()) -> Plan:
    """Walk the selection (no symlink followed) and choose restic's targets.

    A symbolic link, a name peersync cannot restore, or an unreadable entry is left out with a
    Problem (the same rules a restore applies).  `extra`: more workspace paths to add as they
    are (e.g. OpenClaw archives in the state dir)."""
    out = Plan()
    trees: list[tuple[object, tuple[str, ...]]] = [(selection, selection.roots)]
    if include_state:
        trees.append((_StateTree(), (STATE_DIR,)))
    for sel, roots in trees:
        for top in roots:
            for target in _entry(str(root), top, sel, out, top_level=True)[1]:
                out.targets.append(target)
    out.targets = _outermost(out.targets + list(extra))
    return out


def _outermost(paths: list[str]) -> list[str]:
    """Without duplicates and without paths inside another (a user's include below a root)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not any(path.startswith(k + "/") for k in kept):
            kept.append(path)
    return sorted(kept)


def _entry(root: str, rel: str, sel, out: Plan, *, top_level: bool = False) -> tuple[bool, list[str]]:
    """(complete, targets) for one path: complete when everything under it is backed up."""
    try:
        st = os.lstat(os.path.join(root, rel))
    except FileNotFoundError:
        return True, []
    except OSError as err:
        out.problems.append(Problem(rel, f"cannot read: {err.strerror}"))
        return False, []
    if stat.S_ISLNK(st.st_mode):
        if not sel.excludes_file(rel):
            out.problems.append(Problem(rel, "symbolic link not backed up"))
        return False, []
    if stat.S_ISREG(st.st_mode):
        if (sel.excludes_file(rel) if top_level else sel.excludes_child(rel)) or not _nameable(rel, out):
            return False, []
        out.files += 1
        return True, [rel]
    if stat.S_ISDIR(st.st_mode):
        if sel.excludes_dir(rel) or not _nameable(rel, out):
            return False, []
        return _dir(root, rel, sel, out)
    return False, []  # sockets, fifos, devices: never backed up


def _dir(root: str, rel: str, sel, out: Plan) -> tuple[bool, list[str]]:
    try:
        with os.scandir(os.path.join(root, rel)) as it:
            names = sorted(entry.name for entry in it)
    except OSError as err:
        out.problems.append(Problem(rel, f"cannot list directory: {err.strerror}"))
        return False, []
    complete, targets = True, []
    for name in names:
        whole, parts = _entry(root, f"{rel}/{name}", sel, out)
        complete = complete and whole
        targets += parts
    return (True, [rel]) if complete else (False, targets)


def _nameable(rel: str, out: Plan) -> bool:
    try:
        check_relpath(rel if not in_state_dir(rel) else rel.replace(STATE_DIR, "state", 1))
        rel.encode("utf-8")
    except (BadPath, UnicodeEncodeError) as err:
        out.problems.append(Problem(rel, f"name cannot be backed up: {err}"))
        return False
    return True


# -- what a restore may write -----------------------------------------------------------------------

def restorable(path: str, selection: BackupSelection, *, in_place: bool) -> str | None:
    """None when a snapshot file at `path` may be restored, else why not.

    In place only the selection (plus OWN); into a staging directory also the state files
    (include_state) and old-format ~/.openclaw copies, which the user then picks from by hand."""
    inner = path[len(OPENCLAW_PREFIX):] if path.startswith(OPENCLAW_PREFIX) else path
    state = in_state_dir(inner)
    try:
        check_relpath(inner.replace(STATE_DIR, "state", 1) if state else inner)
    except BadPath as err:
        return f"unsafe path ({err})"
    if path.startswith(OPENCLAW_PREFIX) or state:
        return "state and OpenClaw files are restored to a staging directory only" if in_place else None
    if not selection.contains(path):
        return "outside the backup selection"
    return None
