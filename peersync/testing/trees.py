"""Independent views of a directory tree for tests: a digest of everything, and the synced files."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from pathlib import Path

from peersync.core.paths import STATE_DIR

# The default selection (DESIGN 2.1), written out again on purpose: tests compare peersync's
# scanner against this oracle, so it must not share code with peersync.core.selection.
SELECTED_FILES = ("MEMORY.md", "USER.md", "HEARTBEAT.md")
SELECTED_DIR = "memory"
EXCLUDED_DIRS = (".git", "node_modules", "cache")
EXCLUDED_FILES = ("*.tmp", ".DS_Store")


def _root_of(workspace) -> Path:
    """A Workspace's root, or the path itself (a Path has a `.root` too: it is "/")."""
    if isinstance(workspace, (str, os.PathLike)):
        return Path(workspace)
    return Path(workspace.root)


def tree_digest(root, *, mtimes: bool = False) -> str:
    """A SHA-256 over every directory, file (content and mode) and symlink under `root`,
    state dir included: equal digests mean nothing was created, changed or removed.
    With `mtimes=True` a touched-but-unchanged file changes the digest too."""
    root = _root_of(root)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                h.update(f"L {rel} -> {os.readlink(path)}\n".encode("utf-8", "surrogateescape"))
                continue
            h.update(f"F {rel} {stat.S_IMODE(st.st_mode):o} {st.st_size}".encode("utf-8", "surrogateescape"))
            if mtimes:
                h.update(f" {st.st_mtime_ns}".encode())
            h.update(b" " + _file_sha256(path).encode() + b"\n")
        for name in dirnames:
            if not os.path.islink(os.path.join(dirpath, name)):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                h.update(f"D {rel}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_selected(relpath: str, *, skills: bool = False) -> bool:
    """True when `relpath` (a file, POSIX, workspace-relative) is in the default selection."""
    parts = relpath.split("/")
    if relpath == STATE_DIR or relpath.startswith(STATE_DIR + "/"):
        return False
    if len(parts) == 1:
        in_root = relpath in SELECTED_FILES
    else:
        in_root = parts[0] == SELECTED_DIR or (skills and parts[0] == "skills")
    if not in_root:
        return False
    # gitignore semantics: "cache/" matches a directory at any depth, "*.tmp" any name.
    if any(part in EXCLUDED_DIRS for part in parts[:-1]):
        return False
    return not any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in EXCLUDED_FILES)


def selection_files(workspace, *, skills: bool = False) -> dict[str, bytes]:
    """{relpath: content} of the regular files a default-configured peersync syncs.
    Symlinks are skipped; accepts a Workspace or a path."""
    root = _root_of(workspace)
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            path = os.path.join(dirpath, name)
            if is_selected(rel, skills=skills) and stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out
