"""Scan a replica's selection into a Manifest, hashing only files whose stat changed."""

from __future__ import annotations

import itertools
import json
import marshal
import os
import re
import stat as stat_mod
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import xxhash

from peersync.core import links
from peersync.core.selection import Selection
from peersync.core.types import DIR, LINK, Entry, Problem
from peersync.workspace.storage import atomic_write_bytes, file_identity

CACHE_FORMAT = 1  # bump me when the cache layout changes (old caches are then ignored)
CHUNK = 1 << 20
# Racy-git rule: a file modified this close to the scan may change again within the same
# mtime tick, so its hash is not trusted from the cache next time.
RACY_NS = 2_000_000_000


@dataclass
class ScanResult:
    manifest: dict[str, Entry]
    problems: list[Problem] = field(default_factory=list)
    hashed: int = 0  # files actually read this time (the rest came from the stat cache)
    # Paths the scan could not read (files, or directories: everything under them): absent from
    # the manifest, yet present for all we know.  Nothing may be deleted, copied or recorded as
    # deleted at them on the strength of this scan (core/unknown.py).
    unknown: list[str] = field(default_factory=list)
    fs: dict | None = None  # how the volume treats names (replica/fsprobe.py, wire form); None: not probed
    # With `known` records (Versions.known): the paths of the manifest whose record did not match
    # (the others' entries carry their record's history already), and those records' generation.
    unmatched: list[str] | None = None
    known: tuple | None = None
    # From a watch-fed scan: (the TreeWatch, its walk, the paths whose entry it did not reuse);
    # Handler.scan turns it into (watch, walk) once it knows (TreeWatch.record), or None.
    fresh: tuple | None = None


def walk(root: Path, selection: Selection, problems: list[Problem] | None = None,
         unknown: list[str] | None = None, *, kinds: bool = False, walk_dir=None) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (relpath, lstat) for every regular file of the selection; symlinks are not followed.

    Trouble with one path is appended to `problems`; a path that exists but could not be read
    (a file, or a directory with all it holds) is also appended to `unknown`.  A name peersync
    does not sync (odd_name) is skipped with one problem and is not unknown: it never synced.
    `kinds`: also yield the symbolic links that stay inside the selection (core/links.py) and the
    empty directories below a root — what a manifest holds besides files (the lstat says which).
    A selected root that is itself a link to a directory (`memory/` → a cloud drive's folder) is
    the user's own configuration: it is walked through.  `walk_dir`: what walks a selected directory
    (replica/watched.py's, which lists again only what changed; default: every directory)."""
    root = Path(root)
    found = _Found(problems, unknown, selection if kinds else None)
    for top in selection.roots:
        if "/" in top:
            parent, _, name = top.rpartition("/")
            if selection.excludes_dir(parent) or not selection.under_root(top):
                continue
        yield from _walk_entry(str(root), top, selection, found, walk_dir or _walk_dir)


class _Found:
    """Where walk puts the problems it meets (either list may be None: not wanted)."""

    def __init__(self, problems: list[Problem] | None, unknown: list[str] | None, kinds: Selection | None = None):
        self.problems, self.unknown = problems, unknown
        self.kinds = kinds  # the selection whose inside links (and empty directories) are wanted; None: none

    def link(self, root: str, rel: str) -> bool:
        """Whether the link at `rel` is synced as a link; one that is not is reported (the handler
        keeps it from being reported again) and skipped, never followed."""
        if self.kinds is None:
            self.unreadable(rel, "symbolic link not synced")
            return False
        try:
            target = os.fsdecode(os.readlink(os.path.join(root, rel)))
        except OSError as err:
            self.unreadable(rel, f"cannot read: {err.strerror}")
            return False
        if links.inside(rel, target, self.kinds.contains):
            return True
        # Not synced, and not taken for a deletion either: the other side's version there stays.
        if self.problems is not None:
            self.problems.append(Problem(shown(rel), links.OUTSIDE))
        if self.unknown is not None:
            self.unknown.append(rel)
        return False

    def unreadable(self, rel: str, message: str) -> None:
        if self.problems is not None:
            self.problems.append(Problem(rel, message))
        if self.unknown is not None:
            self.unknown.append(rel)

    def skipped(self, rel: str, message: str) -> None:
        if self.problems is not None:
            self.problems.append(Problem(shown(rel), message))


# Characters a synced name may not hold (core/paths.check_relpath refuses them on the wire): control
# characters and the backslash.  Bytes that are not UTF-8 (a lone surrogate each, as os.fsdecode
# gives them) are synced where both sides' volumes hold them (core/names.foreign_names).
_ODD = re.compile(r"[\x00-\x1f\x7f\\]")


def odd_name(name: str) -> str | None:
    """Why a file or directory called `name` is not synced, or None when it is."""
    odd = _ODD.search(name)
    if odd is None:
        return None
    char = odd.group()
    if char == "\\":
        return "name not synced: it holds a backslash, which other systems read as a folder separator (rename it to sync it)"
    what = {"\n": "a newline", "\t": "a tab", "\r": "a carriage return"}.get(char, "a control character")
    return f"name not synced: it holds {what} (rename it to sync it)"


def _never(_name: str) -> None:
    return None


def shown(path: str) -> str:
    """`path` as one printable line: bytes that are not UTF-8 as \\xNN, control characters escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.translate(_ESCAPES)


_ESCAPES = {c: ("\\n" if c == 10 else "\\t" if c == 9 else f"\\x{c:02x}") for c in [*range(32), 127]}


def _walk_entry(root: str, rel: str, selection: Selection, found: _Found, walk_dir):
    full = os.path.join(root, rel)
    try:
        st = os.lstat(full)
        if stat_mod.S_ISLNK(st.st_mode) and found.kinds is not None and "/" not in rel and os.path.isdir(full):
            st = os.stat(full)  # a selected top directory that is a link: followed (see walk)
    except FileNotFoundError:
        return
    except OSError as err:
        found.unreadable(rel, f"cannot read: {err.strerror}")
        return
    if stat_mod.S_ISREG(st.st_mode):
        if not selection.excludes_file(rel):
            yield rel, st
    elif stat_mod.S_ISDIR(st.st_mode):
        if not selection.excludes_dir(rel):
            yield from walk_dir(root, rel, selection, found)
    elif stat_mod.S_ISLNK(st.st_mode):
        if found.kinds is not None and "/" not in rel and not os.path.exists(full):
            # A selected top folder linked somewhere unreachable (an unmounted drive): said on every
            # sync, never "Synced" in silence; unknown, so nothing is deleted anywhere for it.
            found.unreadable(rel, f"{rel} is a link to {shown(os.readlink(full))}, which cannot be reached; "
                                  "nothing under it was synced (mount it, or fix the link)")
        elif found.link(root, rel):
            yield rel, st


def _walk_dir(root: str, rel: str, selection: Selection, found: _Found):
    stack = [rel]
    while stack:
        current = stack.pop()
        items, subdirs = list_dir(root, current, rel, selection, found)
        yield from items
        stack.extend(reversed(subdirs))


def list_dir(root: str, current: str, top: str, selection: Selection, found: _Found) -> tuple[list, list[str]]:
    """One directory of a walk below the selected root `top`: ([(relpath, lstat)] of what it holds
    directly — itself too when it is an empty directory other than `top` — and its subdirectories
    to walk, in order).  Trouble goes to `found`, as walk says."""
    out: list[tuple[str, os.stat_result]] = []
    subdirs: list[str] = []
    try:
        with os.scandir(os.path.join(root, current)) as it:
            items = list(it)  # in directory order: nothing depends on the order of a manifest
    except OSError as err:
        found.unreadable(current, f"cannot list directory: {err.strerror}")
        return out, subdirs
    holds = False  # anything synced (or reported) directly in `current`
    # One search per folder (no name holds a "/"): most hold no odd name, and then none is asked.
    odd = odd_name if _ODD.search("/".join([item.name for item in items])) else _never
    for item in items:
        path = f"{current}/{item.name}"
        try:
            # Files first: most entries are, and one call then settles the type (d_type).
            if item.is_file(follow_symlinks=False):
                if not selection.excludes_child(path):  # `current` passed excludes_dir
                    holds = True
                    why = odd(item.name)
                    if why is None:
                        out.append((path, item.stat(follow_symlinks=False)))
                    else:
                        found.skipped(path, why)
            elif item.is_symlink():
                if not selection.excludes_file(path):
                    holds = True
                    why = odd(item.name)
                    if why is not None:
                        found.skipped(path, why)
                    elif found.link(root, path):
                        out.append((path, item.stat(follow_symlinks=False)))
            elif item.is_dir(follow_symlinks=False):
                if not selection.excludes_dir(path):
                    holds = True
                    why = odd(item.name)
                    if why is None:
                        subdirs.append(path)
                    else:
                        found.skipped(path, why.replace("name", "folder", 1))
            elif not selection.excludes_child(path):
                holds = True  # a FIFO, a socket, a device: not synced, but the folder is not empty
        except OSError as err:
            holds = True
            found.unreadable(path, f"cannot read: {err.strerror}")
    if not holds and found.kinds is not None and current != top:
        try:
            out.append((current, os.lstat(os.path.join(root, current))))  # an empty directory below a root
        except OSError:
            pass
    return out, subdirs


def hash_file(path: str | Path, size: int | None = None) -> str:
    """The hash of a file's bytes.  `size`: its length by a stat just made; a file of that length
    up to CHUNK is read with one read(2) (no buffered file object, no read to find the end: the
    scan's caller checks by a second stat that the file did not change meanwhile)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = b""
        if size is not None and size <= CHUNK:
            data = os.read(fd, size + 1)
            if len(data) == size:
                return hash_bytes(data)
        h = xxhash.xxh3_128(data)  # shorter or longer than the stat said (or no size): read on to the end
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def entry_for(path: str | Path) -> Entry:
    """Stat and hash one file (used to verify what was written)."""
    st = os.stat(path)
    return Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, hash_file(path))


class StatCache:
    """path → (size, mtime_ns, inode, ctime_ns, hash), persisted in the state dir."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        self.changed = 0  # entries added, updated or dropped since loaded
        if path is not None:
            key = file_identity(path)
            kept = _KEPT.get(str(path))
            if kept is not None and key is not None and kept[0] == key:
                self.entries = kept[1]  # a long-lived process (a kept agent) skips the reload
                return
            entries = _read_cache(path)
            if entries is not None:
                self.entries = entries
                _KEPT[str(path)] = (key, self.entries)

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        cached = self.entries.get(rel)
        if (cached and cached[1] == st.st_mtime_ns and cached[0] == st.st_size and cached[2] == st.st_ino
                and cached[3] == st.st_ctime_ns):
            return cached[4]
        return None

    def store(self, rel: str, st: os.stat_result, digest: str | None) -> None:
        value = None if digest is None else [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest]
        if self.entries.get(rel) != value:
            self.dirty = True
            self.changed += 1
            if value is None:
                self.entries.pop(rel, None)
            else:
                self.entries[rel] = value

    def add(self, rows: dict[str, list]) -> None:
        """Rows known from elsewhere (the files a sync just installed, Store.installed)."""
        for rel, value in rows.items():
            if self.entries.get(rel) != value:
                self.entries[rel] = value
                self.dirty = True
                self.changed += 1

    def save(self, keep=None) -> None:
        """Write the entries of the paths in `keep` (a set, or a manifest's keys; None: all)."""
        if self.path is None:
            return
        if not (self.dirty and rewrite_pays(self.changed, len(self.entries))) and _age(self.path) < SAVE_MAX_AGE:
            # A large cache is not rewritten for a few changes: the next scan re-hashes those few
            # files (milliseconds), rewriting it costs far more at 100k files.  This process
            # keeps using the entries it holds (_KEPT).  The rows of paths not in `keep` (files
            # gone, or no longer selected) are dropped when it is rewritten, not looked for on
            # every sync (a lookup per path: ~40 ms at 100k files): until then such a row is never
            # hit (a file made anew has another ctime), and they are as many as the files deleted.
            if self.dirty:
                _KEPT[str(self.path)] = (file_identity(self.path), self.entries)
            return
        if keep is not None and len(keep) != len(self.entries):  # (links and empty folders are kept, but have no entry)
            stale = list(itertools.filterfalse(keep.__contains__, self.entries))  # (a C-level loop)
            for k in stale:  # in place: a watch-fed scan's reused entries name this very dict
                del self.entries[k]
            if stale:
                self.dirty = True
        if not self.dirty:
            return
        atomic_write_bytes(self.path, CACHE_MAGIC + marshal.dumps((CACHE_FORMAT, self.entries), MARSHAL_VERSION))
        self.dirty = False
        _KEPT[str(self.path)] = (file_identity(self.path), self.entries)


# The cache file: this header, then marshal's (format, entries) — it reads at about twice the
# speed of JSON and writes at seven times (10 MB, 100k rows: 0.13 → 0.07 s and 0.10 → 0.014 s),
# for a file read by every cold scan and written after every sync that changed much.  It is this
# machine's own state, never sent anywhere; a file in the old JSON form is still read (once: the
# next save writes it anew), and one that is neither, or another user's, counts as no cache (every
# file is hashed again: slower, never wrong).  Not its mode: on exFAT or FAT every file is 0777.
CACHE_MAGIC = b"peersync stat cache\n"
MARSHAL_VERSION = 4


def _read_cache(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.getuid():
                return None
            raw = f.read()
        if raw.startswith(CACHE_MAGIC):
            fmt, entries = marshal.loads(memoryview(raw)[len(CACHE_MAGIC):])
        else:
            data = json.loads(raw)
            fmt, entries = data.get("format"), data.get("entries")
    except (OSError, ValueError, EOFError, TypeError, AttributeError):
        return None
    return entries if fmt == CACHE_FORMAT and type(entries) is dict else None


# Cache files this process read or wrote, by path: (file identity, entries).  Entries are facts
# keyed by a file's full stat (a hit needs size, mtime, inode and ctime to match), so reusing
# them while the file on disk is still the one we know is exactly as safe as reading it again.
_KEPT: dict[str, tuple] = {}


def cache_kept(path: Path) -> bool:
    """Whether this process holds the stat cache at `path` in memory (a kept agent, a keeper)."""
    return str(path) in _KEPT


def forget_cache(path: Path) -> None:
    """Stop holding the stat cache at `path` in memory: a process that scans once (a CLI run, a
    cold agent) frees it before it reads the ancestor, for a lower peak (40 MB at 100k files)."""
    _KEPT.pop(str(path), None)


SAVE_MIN_CHANGES = 256
CACHE_ROW_BYTES = 110  # about what one row takes in the cache file (a path, four numbers and a hash)
SAVE_MAX_AGE = 3600.0


def rewrite_pays(changes: int, rows: int) -> bool:
    """Whether `changes` rows changed (or added) are worth rewriting a cache of `rows` rows for:
    more than one in a hundred, and more than a few hundred."""
    return changes > max(SAVE_MIN_CHANGES, rows // 100)


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return float("inf")


_new = tuple.__new__  # an Entry per file per scan: without the generated __new__'s defaults


def scan(root: Path, selection: Selection, cache_path: Path | None = None, *,
         save_cache: bool = True, known: tuple[dict, int] | None = None, listings=None,
         changed_since=None) -> ScanResult:
    """Manifest of the selection under `root`.  Per-file trouble becomes a Problem, not an abort.

    `save_cache=False` (dry runs) reads the stat cache but writes nothing.  `known`: this replica's
    version records (Versions.known): a file whose record holds its content gets that record's
    history in its entry; the others are listed in `unmatched` (Versions.assign does the rest).
    `listings`: a watched tree (replica/watched.py) that walks it, listing only what changed.
    `changed_since`: Versions.changed_since, for the records of `known` (see watched.walk)."""
    root = Path(root)
    started = time.time_ns()
    cache = StatCache(cache_path)
    entries = cache.entries
    result = ScanResult(manifest={})
    rows = known[0] if known is not None else {}
    unmatched: list[str] = []
    if known is not None:
        result.unmatched, result.known = unmatched, known
    # A watched walk hands back the very stat result it gave last time for a file no event named:
    # that file's entry from the last scan is still right while its version record is the very
    # row it was made from (a record changes by a new row).  A no-op scan then builds no entry.
    # Only entries from a stat cache hit and a matching record are kept (the common case), with
    # the folder listing they are in (watched._Node.kept).  Each listing the walk goes through file
    # by file comes first as (False, listing); a folder whose entries were kept from the very same
    # records (same rows object) comes whole as (None, listing) — but the files an event named or
    # whose record changed since, which follow it one by one — and enters the manifest as one dict
    # update.  (A sync that touched one file in each big folder then rescans only those files.)
    reuse = listings is not None and known is not None
    found = (walk(root, selection, result.problems, result.unknown, kinds=True) if listings is None
             else listings.walk(result.problems, result.unknown,
                                reuse=(*known, changed_since or _unknown_changes) if reuse else None))
    manifest = result.manifest
    memo, kept, folders, wholes, parts = {}, None, [], [], []
    fresh: list[str] | None = [] if reuse else None  # entries not reused from the last scan (TreeWatch.record)
    for rel, st in found:
        if not rel:
            if rel is None:
                wholes.append(st.whole[2])  # (joined at the end: TreeWatch.union)
                memo, kept = {}, {}  # the files it does not hold follow, one by one
                parts.append((st, kept))
            elif st is None:  # out of the folders (a selected root that is a file follows)
                memo, kept = {}, None
            else:
                memo, kept = st.kept or {}, {}
                st.kept, st.whole = kept, None
                folders.append(st)
            continue
        if reuse:
            hit = memo.get(rel)
            if hit is not None and hit[0] is st and rows.get(rel) is hit[1]:
                manifest[rel] = hit[2]  # (the last scan's entry: a kept folder's were all in its manifest)
                if kept is not None:
                    kept[rel] = hit
                continue
            fresh.append(rel)
        if not stat_mod.S_ISREG(st.st_mode):
            entry = _special_entry(os.path.join(root, rel), st)
            if entry is None:
                result.problems.append(Problem(rel, "changing while scanned; left for the next sync"))
                result.unknown.append(rel)
            else:
                manifest[rel] = entry
                unmatched.append(rel)
            continue
        cached = entries.get(rel)  # StatCache.lookup, inline: once per file of every scan
        digest = cached[4] if (cached and cached[1] == st.st_mtime_ns and cached[0] == st.st_size
                               and cached[2] == st.st_ino and cached[3] == st.st_ctime_ns) else None
        from_cache = digest is not None
        if digest is None:
            try:
                digest, st = _hash_stable(os.path.join(root, rel), st)
            except OSError as err:
                result.problems.append(Problem(rel, f"cannot read: {err.strerror}"))
                result.unknown.append(rel)
                continue
            if digest is None:
                result.problems.append(Problem(rel, "changing while scanned; left for the next sync"))
                result.unknown.append(rel)
                continue
            result.hashed += 1
            racy = st.st_mtime_ns >= started - RACY_NS
            cache.store(rel, st, None if racy else digest)
        row = rows.get(rel)
        if row is not None and row[0] and row[4] == digest and row[1] == st.st_size:  # as Versions.assign matches
            # The record's own objects where they are equal, not the stat result's and the stat
            # cache's: those are then freed with them (at 100k files ~9 MB at once, and the stat
            # cache's 40 MB whole once a process that scans once lets it go, not in scattered holes).
            mtime, mode = st.st_mtime_ns, st.st_mode & 0o777
            entry = manifest[rel] = _new(Entry, (row[1], row[2] if row[2] == mtime else mtime,
                                                 row[3] if row[3] == mode else mode, row[4], row[5], row[6]))
            if kept is not None and from_cache:
                kept[rel] = (st, row, entry)
        else:
            manifest[rel] = _new(Entry, (st.st_size, st.st_mtime_ns, st.st_mode & 0o777, digest, (), ()))
            unmatched.append(rel)
    # A folder's kept files come whole next time, but those an event names or whose record
    # changes (watched.TreeWatch._part); the others are looked at one by one.  (Its listing's stat
    # results are the ones kept: they came from it.)
    for node in folders:
        if node.kept:
            node.whole = (rows, known[1], {rel: hit[2] for rel, hit in node.kept.items()})
    for node, more in parts:  # files of a partly whole folder kept this time: whole next time too
        if more:
            node.whole = (rows, known[1], {**node.whole[2], **{rel: hit[2] for rel, hit in more.items()}})
            node.kept = {**(node.kept or {}), **more}
    if fresh is not None:  # and the files it no longer found (their entries are gone: not reused either)
        fresh.extend(listings.removed)
        result.fresh = (listings, listings.seq, fresh)
    if reuse:
        # The folders that came whole, mostly the very ones of the last scan: their union is the
        # last one's, amended where they differ — a no-op at 100k files copies one dict instead of
        # inserting 100k entries anew.
        union = listings.union(wholes)
        if manifest:
            union = {**union, **manifest}
        elif union:
            union = dict(union)  # (the watch keeps its own)
        manifest = result.manifest = union
    try:
        if save_cache:
            cache.save(result.manifest.keys())
    except OSError as err:
        result.problems.append(Problem("", f"cannot save scan cache: {err.strerror}"))
    return result


def _unknown_changes(_gen: int) -> None:
    return None


def link_entry(target: bytes) -> Entry:
    """A symbolic link's entry: its target string is its content (core/types.py, KIND_BITS)."""
    return Entry(len(target), 0, LINK | 0o777, hash_bytes(target))


DIR_ENTRY = Entry(0, 0, DIR | 0o755, xxhash.xxh3_128_hexdigest(b""))


def _special_entry(full: str, st: os.stat_result) -> Entry | None:
    """The entry of a link or an empty directory the walk yielded; None when it changed since."""
    if stat_mod.S_ISDIR(st.st_mode):
        return DIR_ENTRY
    try:
        return link_entry(os.readlink(os.fsencode(full)))
    except OSError:
        return None


def _hash_stable(full: str, st: os.stat_result) -> tuple[str | None, os.stat_result]:
    """Hash a file, retrying once if it changes underneath; None when it keeps changing."""
    for _ in range(2):
        digest = hash_file(full, st.st_size)
        after = os.lstat(full)
        if (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return digest, after
        st = after
    return None, st
