"""Which files of the workspace need a look: a merge kept two versions of a passage live in them.

Read from the live files, not from a record of merges: a file that arrived from a third machine
with kept passages in it needs a look as well, and one the user has sorted out does not.
"""

from __future__ import annotations

import os

from peersync.core.mergefile import BASE_MAX
from peersync.replica.scan import walk
from peersync.core.textmerge import has_kept_versions
from peersync.workspace.workspace import SyncConfig, Workspace


def needing_a_look(ws: Workspace, cfg: SyncConfig, paths: list[str] | None = None) -> list[str]:
    """Mergeable text files of the selection (or of `paths`) that hold a kept passage, sorted."""
    rules = cfg.rules
    if paths is None:
        paths = [p for p, st in walk(ws.root, cfg.selection) if st.st_size <= BASE_MAX]
    return sorted(p for p in set(paths) if rules.is_text(p) and cfg.selection.contains(p) and _holds_kept(ws, p))


def _holds_kept(ws: Workspace, path: str) -> bool:
    try:
        fd = os.open(ws.root / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            return has_kept_versions(f.read(BASE_MAX + 1))
    except OSError:
        return False  # gone meanwhile, or unreadable: the next sync reports it


def looks_text(paths: list[str]) -> str:
    """One chat line, or "" when nothing needs a look."""
    if not paths:
        return ""
    shown = ", ".join(paths[:5]) + (f" …and {len(paths) - 5} more" if len(paths) > 5 else "")
    return (f"🔎 Needs a look: {shown} — edited on two machines at once, both versions are kept in the "
            "file between ⚠️ peersync marks; keep the right text and delete the rest")
