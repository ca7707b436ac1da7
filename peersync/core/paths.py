"""Validation of every workspace-relative path that crosses a trust boundary."""

from __future__ import annotations

import re
import unicodedata

STATE_DIR = "memory/clawdbot-sync"  # the seed's place: existing installs keep working
# peersync's own copy of a file (held, staged, trashed, quarantined) sits below a prefix (a token,
# a batch, a conflict id) inside the state dir, so its path is longer than the file's own.  A path
# near PATH_MAX, or a name near NAME_MAX, is kept under a short id instead (see internal_rel).
LONG_DIR = f"{STATE_DIR}/long"  # never a wire path (check_relpath refuses the state dir): no clash
NAME_SAFE, PATH_SAFE = 200, 3000  # bytes: past either, a copy's name is made short


class BadPath(ValueError):
    """A path a peer (or a file) sent that peersync refuses to touch."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_NOT_NORMAL = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|/$")


def check_relpath(path: object) -> str:
    """Return `path` if it is a safe, normalised, workspace-relative POSIX path; else raise BadPath.

    Refused: non-strings, empty, absolute, `..` or `.` components, backslashes, NUL and other
    control characters, doubled or trailing slashes, and anything inside the state dir.
    (Called for every path of a peer's manifest, so it is written to be cheap.)
    """
    if not isinstance(path, str) or not path:
        raise BadPath(f"not a path: {path!r}")
    if path[0] == "/" or (len(path) > 1 and path[1] == ":"):
        raise BadPath(f"absolute path refused: {path!r}")
    # Each regex is asked only where it could match (the second alone took 2 µs a path, most of
    # this check): a control character is not printable, and a `.` or `..` name starts the path
    # or follows a slash.
    if (not path.isprintable() or "\\" in path) and _CONTROL.search(path):
        raise BadPath(f"control character or backslash in path: {path!r}")
    if "//" in path or path[-1] == "/" or ((path[0] == "." or "/." in path) and _NOT_NORMAL.search(path)):
        raise BadPath(f"path is not normalised or escapes the workspace: {path!r}")
    if in_state_dir(path):
        raise BadPath(f"path inside peersync's state directory refused: {path!r}")
    if len(path) > 63:  # 63 chars cannot make 256 UTF-8 bytes
        raw = path.encode("utf-8", "surrogateescape")
        if len(raw) > 4096 or (len(raw) > 255 and any(len(p) > 255 for p in raw.split(b"/"))):
            raise BadPath(f"path too long: {path[:80]!r}…")
    return path


def in_state_dir(path: str) -> bool:
    # Compare case-insensitively and NFC-normalised: macOS file systems would map a
    # differently-cased or decomposed name onto the real state directory.
    if path[:6].lower() != "memory":
        return False
    folded = unicodedata.normalize("NFC", path).casefold()
    return folded == STATE_DIR or folded.startswith(STATE_DIR + "/")


def valid_instance_id(value) -> bool:
    """An instance id as peersync makes them (uuid4 hex; other lengths of lower-case hex are
    accepted): anything else from a peer is refused and never saved or used as a file name."""
    return isinstance(value, str) and 1 <= len(value) <= 64 and all(c in "0123456789abcdef" for c in value)


def internal_rel(path: str) -> str:
    """Where peersync keeps its copy of wire path `path` below a prefix dir: the path itself, or
    LONG_DIR/<hash of the path> when the path or one of its names is too long to be lengthened."""
    if len(path) <= NAME_SAFE // 4:  # cannot pass either limit, even as 4-byte UTF-8
        return path
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) <= PATH_SAFE and all(len(p) <= NAME_SAFE for p in raw.split(b"/")):
        return path
    return long_rel(path)


def long_rel(path: str) -> str:
    """LONG_DIR/<hash of the path>: a copy's short name (its sidecar names the path)."""
    import hashlib  # lazy: start-up (rare here; the heartbeat's and the CLI's fast paths import this module)

    return f"{LONG_DIR}/{hashlib.blake2b(path.encode('utf-8', 'surrogateescape'), digest_size=16).hexdigest()}"


def flat_rel(path: str) -> str:
    """Wire path `path` as one name ("%" and "/" escaped as %25 and %2F), for copies that need no
    folders of their own (a sync's holding names); LONG_DIR/<hash> when that name is too long."""
    name = path.replace("%", "%25").replace("/", "%2F")
    if len(name) <= NAME_SAFE // 4 or len(name.encode("utf-8", "surrogateescape")) <= NAME_SAFE:
        return name
    return long_rel(path)


def unflat(name: str) -> str:
    """The wire path flat_rel made `name` from."""
    return re.sub("%(25|2F)", lambda m: "%" if m[1] == "25" else "/", name)
