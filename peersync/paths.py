"""Validation of every workspace-relative path that crosses a trust boundary."""

from __future__ import annotations

import posixpath
import unicodedata

STATE_DIR = "memory/clawdbot-sync"  # the seed's place: existing installs keep working


class BadPath(ValueError):
    """A path a peer (or a file) sent that peersync refuses to touch."""


def check_relpath(path: object) -> str:
    """Return `path` if it is a safe, normalised, workspace-relative POSIX path; else raise BadPath.

    Refused: non-strings, empty, absolute, `..` or `.` components, backslashes, NUL and other
    control characters, doubled or trailing slashes, and anything inside the state dir.
    """
    if not isinstance(path, str) or not path:
        raise BadPath(f"not a path: {path!r}")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise BadPath(f"absolute path refused: {path!r}")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in path) or "\\" in path:
        raise BadPath(f"control character or backslash in path: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadPath(f"path is not normalised or escapes the workspace: {path!r}")
    if posixpath.normpath(path) != path:
        raise BadPath(f"path is not normalised: {path!r}")
    if in_state_dir(path):
        raise BadPath(f"path inside peersync's state directory refused: {path!r}")
    if len(path.encode("utf-8", "surrogateescape")) > 4096 or any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise BadPath(f"path too long: {path[:80]!r}…")
    return path


def in_state_dir(path: str) -> bool:
    # Compare case-insensitively and NFC-normalised: macOS file systems would map a
    # differently-cased or decomposed name onto the real state directory.
    folded = unicodedata.normalize("NFC", path).casefold()
    return folded == STATE_DIR or folded.startswith(STATE_DIR + "/")
