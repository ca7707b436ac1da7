"""Which symbolic links peersync syncs as links: those whose target stays inside the selection (pure).

A link is synced as what it is — its target string — and never followed.  Its target is resolved
lexically, relative to the link's own directory, as the kernel would resolve it if no component
on the way were itself a link: an absolute target, or one that climbs out of the workspace, is
"outside" and never synced; so is one that lands outside the synced selection or in the state
directory.  Both the scanning side and the receiving side apply this same rule (a peer cannot
plant a link the receiver would not have synced itself).
"""

from __future__ import annotations

import posixpath

from peersync.core.paths import BadPath, check_relpath

MAX_TARGET = 4095  # bytes: PATH_MAX less the terminating NUL


def resolve(path: str, target: str) -> str | None:
    """The workspace-relative path a link at `path` with `target` names, lexically; None when the
    target is absolute, empty, too long, or climbs out of the workspace."""
    if not target or target.startswith("/") or "\0" in target:
        return None
    if len(target.encode("utf-8", "surrogateescape")) > MAX_TARGET:
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if joined == "." or joined == ".." or joined.startswith("../") or joined.startswith("/"):
        return None
    return joined


def inside(path: str, target: str, contains) -> bool:
    """Whether a link at `path` pointing to `target` stays inside the synced selection
    (`contains`: the selection's test for a path, e.g. Selection.contains)."""
    resolved = resolve(path, target)
    if resolved is None:
        return False
    try:
        check_relpath(resolved)  # never the state directory, never an odd name
    except BadPath:
        return False
    return bool(contains(resolved)) or _covers_dir(resolved, contains)


def _covers_dir(resolved: str, contains) -> bool:
    """A link to a directory of the selection (e.g. `memory/projects`): a file in it is selected."""
    return bool(contains(resolved + "/x"))


OUTSIDE = "symbolic link points outside the synced folders; not synced (reported once)"
CLOUD = "symbolic link not synced with a cloud folder (rclone cannot hold one); reported once"
