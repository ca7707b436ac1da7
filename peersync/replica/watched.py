"""Watch-fed scans: a long-lived process lists again only the directories that changed.

A kept agent, a keeper and the watch daemon scan the same workspace again and again.  From its
second scan on, such a process keeps an inotify watch on every directory of the selection and,
for each directory, what its last listing found (files with their lstat, links, subdirectories,
problems).  A scan first reads the events that came meanwhile; a directory that had none is not
listed or stat'ed again, its last listing stands.  Everything after the walk is as in a full
scan: the stat cache decides what is hashed, the version records what is new.

Correctness first (Mutagen's "accelerated scanning" works alike):
- A watch is added before its directory is listed, so a change made during the listing is an
  event for the next scan.
- A lost event queue (IN_Q_OVERFLOW), a watch that could not be added (the watch limit, a
  directory we may not read), a directory holding a file with several links (a write through its
  other name tells only that name's directory), and a file system whose changes inotify does not
  see (FUSE, NFS, SMB: only known local ones are watched) mean a full listing, of everything or
  of that directory, every time.  So does a hard link that events show appeared, a change to the
  mount table, and a selection root that now names another directory.  Every FULL_EVERY seconds
  the whole tree is listed anyway.
- A change no event told of (a write through mmap, a write through a hard link made outside the
  tree to a file that had one name when listed) can only make a scan late, never wrong: every
  install, deletion and copy checks the file's bytes against the manifest before it acts
  (replica/store.py) and refuses when they differ; the next full listing sees the change.
- Linux only (inotify).  Elsewhere, and in a process that scans once (a CLI run, a cold agent),
  every scan lists everything, as before.
"""

from __future__ import annotations

import collections
import os
import stat
import struct
import sys
import threading
import time
from pathlib import Path

from peersync.core.changelog import ChangeLog
from peersync.core.selection import Selection
from peersync.replica import scan as scanning

FULL_EVERY = 600.0  # seconds: the whole tree is listed again at least this often
PRIME_WAIT = 30.0  # seconds a scan waits for a prime's listing under way before it lists itself
MAX_WATCHES = 200_000  # directories; beyond, the rest is listed every time
MAX_TREES = 4  # workspaces watched at once per process (inotify instances are few: 128 per user)
FRESH_LOG, FRESH_PATHS_MAX = 16, 65536  # what TreeWatch.record keeps: walks, and paths over them all

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x2000, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_ISDIR = 0x01000000, 0x02000000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
# Reads are left out (a scan's own hashing would wake it); every way a name or its bytes can change is in.
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
_EVENT = struct.Struct("iIII")

# statfs(2) magic numbers of local file systems whose every change inotify reports.
LOCAL_FS = {0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
            0xF2F52010: "f2fs", 0x2FC12FC1: "zfs", 0x794C7630: "overlayfs", 0x3153464A: "jfs",
            0x52654973: "reiserfs", 0x858458F6: "ramfs"}


class _Libc:
    """inotify_init1 / inotify_add_watch / inotify_rm_watch and statfs, through ctypes."""

    def __init__(self):
        import ctypes  # lazy: a process that scans once (a cold agent) never imports it

        self.ctypes = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1, self.add, self.rm, self.statfs = (libc.inotify_init1, libc.inotify_add_watch,
                                                      libc.inotify_rm_watch, libc.statfs)
        self.add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]

    def fs_type(self, path: str) -> int | None:
        buf = self.ctypes.create_string_buffer(256)  # struct statfs: f_type comes first
        if self.statfs(os.fsencode(path), buf) != 0:
            return None
        return struct.unpack_from(_F_TYPE, buf.raw)[0] & 0xFFFFFFFF


# f_type is a long (__fsword_t) everywhere but on s390x, where it is an unsigned int (read as a
# long there, it would be f_type and f_bsize together, and no volume would be trusted).
_F_TYPE = "I" if os.uname().machine == "s390x" else "l"


_libc: _Libc | None = None


def _lib() -> _Libc | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = _Libc()
        except (OSError, AttributeError):
            return None
    return _libc


class _Node:
    """What one listing of a directory found."""

    __slots__ = ("items", "subdirs", "problems", "unknown", "fresh", "empty", "kept", "whole", "walked")

    def __init__(self, items: dict, subdirs: list, problems: list, unknown: list, fresh: bool, empty: bool):
        self.items, self.subdirs, self.problems, self.unknown = items, subdirs, problems, unknown
        self.fresh = fresh  # False: list it again next time (unwatched, or not to be trusted)
        self.empty = empty  # the listing found nothing: `items` holds the folder itself
        # For scan.scan: the last scan's reusable entries here, {path: (stat result, version record,
        # entry)}; and when every file here was one, (version records, their generation, {path:
        # entry}) — None once `items` changes.  A stat result in `items` is replaced whenever
        # anything names its file again.
        self.kept: dict | None = None
        self.whole: tuple | None = None
        self.walked = -1  # the last walk (TreeWatch.seq) that went through this folder


class TreeWatch:
    """The watched listings of one workspace root for one selection."""

    def __init__(self, root: str, selection: Selection, lib: _Libc):
        self.root, self.selection, self.lib = root, selection, lib
        self.mutex = threading.Lock()
        self.fd = -1
        self.nodes: dict[str, _Node] = {}
        self.wd_path: dict[int, str] = {}
        self.path_wd: dict[str, int] = {}
        self.dirty: set[str] = set()  # folders to list again
        self.names: dict[str, set[str]] = {}  # folder -> names whose file changed (bytes or attributes)
        self.local_dev: dict[int, bool] = {}
        self.full_at = 0.0
        self.listed = 0  # directories listed by the last scan (the rest came from their watch)
        self.restatted = 0  # files stat'ed again by name by the last scan (events named them)
        self.full = True  # whether the last scan listed everything
        self.tops: dict[str, tuple | None] = {}  # selection root -> (st_dev, st_ino) it named when listed
        self.mounts = b""  # /proc/self/mountinfo at the last scan: a mount makes no event
        self.whole = 0  # folders the last walk yielded whole (see walk's `reuse`)
        self.priming = False  # prime's thread holds it to set the watches up (see walker)
        self._moved: dict[int, dict | None] = {}
        self.seq = 0  # walks so far
        self.removed: list[str] = []  # what the last walk's listings lost: files gone, or below a folder that went
        self.recorded: int | None = None  # the last walk whose scan recorded the versions it found (Handler.scan)
        # the paths whose entry the scan of each recent walk may have made anew
        self._fresh = ChangeLog(FRESH_LOG, FRESH_PATHS_MAX)
        self._fresh_lock = threading.Lock()  # (a scan's thread records, a sync's reads)
        self._union: tuple[list[dict], dict] = ([], {})  # see union

    # -- events ---------------------------------------------------------------------------------
    def _start(self) -> None:
        self.close()
        fd = self.lib.init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(self.lib.ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        self.full_at = time.monotonic()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops every watch with it
        self.fd = -1
        self.nodes.clear()
        self.wd_path.clear()
        self.path_wd.clear()
        self.dirty.clear()
        self.names.clear()
        self.tops.clear()
        self._union = ([], {})

    def _drain(self) -> bool:
        """Mark the directories events named since the last scan; False when events were lost."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                return False
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    return False
                path = self.wd_path.get(wd)
                if path is None:
                    continue  # a watch we dropped already
                if mask & GONE:  # the directory itself went (or moved): its listings are void
                    self.dirty.add(path)
                    self._forget(path, remove=not mask & IN_IGNORED)
                    parent = path.rpartition("/")[0]
                    if parent:
                        self.dirty.add(parent)
                    continue
                name = data[offset - length:offset].rstrip(b"\0")
                if mask & IN_ISDIR or not name:  # the folder's own change, or a subfolder's: list it again
                    self.dirty.add(path)
                elif path not in self.dirty:  # one file: stat'ed again by name
                    self.names.setdefault(path, set()).add(os.fsdecode(name))

    def _forget(self, path: str, *, remove: bool = True) -> None:
        """Drop `path`'s listing and those below it, with their watches."""
        prefix = path + "/"
        for other in [p for p in self.nodes if p == path or p.startswith(prefix)] + \
                [p for p in self.path_wd if (p == path or p.startswith(prefix)) and p not in self.nodes]:
            node = self.nodes.pop(other, None)
            if node is not None:
                self.removed.extend(node.items)
            wd = self.path_wd.pop(other, None)
            if wd is not None and self.wd_path.get(wd) == other:
                del self.wd_path[wd]
                if remove or other != path:
                    self.lib.rm(self.fd, wd)

    # -- the walk -------------------------------------------------------------------------------
    def walk(self, problems: list, unknown: list, reuse: tuple | None = None):
        """scan.walk(root, selection, problems, unknown, kinds=True), listing only what changed.
        `reuse`: (version records, generation, changed_since) of a scan (scan.scan) that keeps what
        it made of a folder in its _Node: a folder that no event named since, whose `whole` was made
        from these very records, none of its own changed since (Versions.changed_since), is yielded
        whole as (None, its node); any other comes as (False, its node) before its files, and
        (False, None) follows the folders of each selected root."""
        self.whole = 0
        self.seq += 1
        self.removed = []
        self._moved: dict[int, dict | None] = {}  # generation -> {folder: its files whose records changed since}
        mounts = _mountinfo()
        full = (self.fd < 0 or not self._drain() or time.monotonic() - self.full_at > FULL_EVERY
                or mounts != self.mounts or self._new_links())
        self.mounts = mounts
        if full:
            try:
                self._start()
            except OSError:  # no inotify instance to be had (the per-user limit): list everything
                self.full, self.listed = True, -1
                yield from scanning.walk(Path(self.root), self.selection, problems, unknown, kinds=True)
                return
        self.full, self.listed, self.restatted = full, 0, 0
        seen: set[str] = set()
        yield from scanning.walk(Path(self.root), self.selection, problems, unknown, kinds=True,
                                 walk_dir=lambda root, rel, selection, found: self._walk_dir(rel, found, seen, reuse))
        for path in [p for p in self.nodes if p not in seen]:  # no longer in the tree (or selected)
            self._forget(path)
        self.dirty.clear()
        self.names.clear()

    # -- what changed between two scans ---------------------------------------------------------
    def record(self, seq: int, paths: set[str] | None) -> None:
        """The scan of walk `seq` finished, and its manifest holds, at every path but `paths`
        (None: at any path), the very entry object the manifest of walk `seq - 1` held there, or
        no entry.  (What scan.scan reuses — a whole folder, a file no event named — is the last
        scan's object; the rest is in `paths`, and so are the files the walk's listings no longer
        found, `removed`.  A path can still leave unnamed — a full listing, a selected root that
        is a file — so a caller that must know every path gone counts: reconcile.Touched,
        Handler.op_scan and Versions' assignment.)  Kept for FRESH_LOG walks."""
        with self._fresh_lock:
            self._fresh.add(seq, paths)

    def union(self, parts: list[dict]) -> dict:
        """The union of `parts` — the entries of the folders a scan took whole, each folder's own
        dict (never changed once made: scan.scan), so no two share a path — built from the last
        call's union: the parts no longer there are taken out, the new ones put in.  The caller
        must not change what it gets."""
        old_parts, old = self._union
        now = {id(part) for part in parts}
        # (The parts held in self._union are alive, so no new dict can have an id of theirs.)
        gone = [part for part in old_parts if id(part) not in now]
        before = {id(part) for part in old_parts}
        new = [part for part in parts if id(part) not in before]
        if gone or new:
            if len(gone) + len(new) > len(parts) // 2:
                out: dict = {}
                new = parts
            else:
                out = dict(old)
                for part in gone:
                    collections.deque(map(out.__delitem__, part), 0)  # (a C-level loop)
            for part in new:
                out.update(part)
            old = out
        self._union = (list(parts), old)
        return old

    def fresh_between(self, since: int, upto: int) -> set[str] | None:
        """The paths whose entry the scans of walks `since + 1` … `upto` may have made anew (each
        other path holds in `upto`'s manifest the very object `since`'s held, or is not in it: see
        record); None when that is not known (a walk not recorded, forgotten, or recorded as None)."""
        with self._fresh_lock:
            return self._fresh.between(since, upto)

    def _new_links(self) -> bool:
        """Whether a file events named now has a second hard link: a write through its other name
        tells only that name's folder, so every folder is listed again (this once: a folder
        holding such a file is then listed every time)."""
        for current, names in self.names.items():
            for name in names:
                try:
                    st = os.lstat(os.path.join(self.root, current, name))
                except OSError:
                    continue
                if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
                    return True
        return False

    def _walk_dir(self, top: str, found, seen: set[str], reuse: tuple | None = None):
        # A selection root is watched as the directory it named (through a link, or below a parent
        # that is not watched): re-pointed or re-created, its listings are another directory's.
        try:
            st = os.stat(os.path.join(self.root, top))
            ident = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        if self.tops.get(top, ident) != ident:
            self._forget(top)
        self.tops[top] = ident
        stack = [top]
        while stack:
            current = stack.pop()
            seen.add(current)
            node = self.nodes.get(current)
            names = self.names.get(current)
            untouched = node is not None and node.fresh and current not in self.dirty and names is None
            named: tuple[str, ...] = ()  # files stat'ed again by name (a restat)
            if not untouched:
                if node is None or not node.fresh or current in self.dirty or not self._restat(node, current, names):
                    before, had = (node.subdirs, node.items) if node is not None else ((), {})
                    node = self._list(current, top, found.kinds)
                    self.removed.extend(p for p in had if p not in node.items)
                    for gone in set(before) - set(node.subdirs):
                        self._forget(gone)
                else:
                    named = tuple(f"{current}/{name}" for name in names)
            if found.problems is not None:
                found.problems.extend(node.problems)
            if found.unknown is not None:
                found.unknown.extend(node.unknown)
            # Whole only when the last walk went through it too: its entries are then the very
            # objects the last scan's manifest held (see record).
            last, node.walked = node.walked, self.seq
            part = self._part(node, current, named, reuse) if last == self.seq - 1 else None
            if part is not None:
                # The entries of the files no event named and no new record moved, as the last scan
                # made them; the others (those and any it could not keep) follow one by one.
                node.whole = (reuse[0], reuse[1], part)
                self.whole += 1
                yield None, node
                if len(part) < len(node.items):
                    rest = [p for p in named if p in node.items]
                    if len(part) + len(rest) != len(node.items):
                        rest = [p for p in node.items if p not in part]
                    yield from ((p, node.items[p]) for p in rest)
            else:
                node.whole = None
                if reuse is not None:
                    yield False, node
                yield from node.items.items()
            stack.extend(reversed(node.subdirs))
        if reuse is not None:
            yield False, None

    def _list(self, current: str, top: str, kinds) -> _Node:
        self.listed += 1
        full = os.path.join(self.root, current)
        fresh = self._watch(current, full, follow=current == top)
        problems: list = []
        unknown: list = []
        found = scanning._Found(problems, unknown, kinds)
        items, subdirs = scanning.list_dir(self.root, current, top, self.selection, found)
        if fresh and any(st.st_nlink > 1 and stat.S_ISREG(st.st_mode) for _, st in items):
            fresh = False  # a hard link: a write through its other name tells another directory
        empty = len(items) == 1 and items[0][0] == current
        node = _Node(dict(items), subdirs, problems, unknown, fresh and not unknown, empty)
        self.nodes[current] = node
        return node

    def _part(self, node: _Node, current: str, named: tuple[str, ...], reuse: tuple | None) -> dict | None:
        """What of the last scan's entries in folder `current` (node.whole, made from the records
        `reuse` names) is still right: those of the files no event named (`named`: restat'ed) and
        whose record did not change since (Versions.changed_since); None when nothing is (or it
        cannot be told).  The dict of a folder where nothing moved is the very one it was."""
        done = node.whole
        if reuse is None or done is None or done[0] is not reuse[0]:
            return None
        part = done[2]
        moved = () if done[1] == reuse[1] else self._moved_in(current, done[1], reuse[2])
        if moved is None:
            return None
        if named or moved:
            part = dict(part)  # (a new one: the last scan's part is never changed)
            for path in (*named, *moved):
                part.pop(path, None)
                if node.kept is not None:
                    node.kept.pop(path, None)  # (kept: what `part` holds, see scan.scan)
        return part or None

    def _moved_in(self, current: str, gen: int, changed_since) -> set[str] | tuple | None:
        """The files directly in folder `current` whose record changed after generation `gen`;
        None when that is no longer known."""
        if gen not in self._moved:
            paths = changed_since(gen)
            by_folder: dict[str, set[str]] | None = None
            if paths is not None:
                by_folder = {}
                for path in paths:
                    by_folder.setdefault(path.rpartition("/")[0], set()).add(path)
            self._moved[gen] = by_folder
        by_folder = self._moved[gen]
        return None if by_folder is None else by_folder.get(current, ())

    def _restat(self, node: _Node, current: str, names: set[str]) -> bool:
        """Bring `node` up to date by stat'ing the files events named (written, created, renamed,
        removed); False when only a new listing can (a name that is or was not a plain file here)."""
        if node.problems or node.empty:
            return False
        for name in names:
            path = f"{current}/{name}"
            if scanning.odd_name(name) is not None:
                return False
            try:
                st = os.lstat(os.path.join(self.root, path))
            except FileNotFoundError:
                st = None
            except OSError:
                return False
            if st is None:
                if node.items.pop(path, None) is not None:
                    self.removed.append(path)
            elif not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                return False
            elif not self.selection.excludes_child(path):
                node.items[path] = st
            self.restatted += 1
        return bool(node.items or node.subdirs)  # else it is an empty folder now: listed, it says so

    def _watch(self, current: str, full: str, *, follow: bool) -> bool:
        """Watch `current` (before it is listed); False when it cannot be trusted to tell us."""
        if current in self.path_wd:
            return True
        if len(self.path_wd) >= MAX_WATCHES:
            return False
        try:
            st = os.stat(full) if follow else os.lstat(full)
        except OSError:
            return False
        local = self.local_dev.get(st.st_dev)
        if local is None:
            local = self.local_dev[st.st_dev] = self.lib.fs_type(full) in LOCAL_FS
        if not local:
            return False
        wd = self.lib.add(self.fd, os.fsencode(full), MASK | (0 if follow else IN_DONT_FOLLOW))
        if wd < 0:
            return False  # ENOSPC (the watch limit), EACCES…: this directory is listed every time
        old = self.wd_path.get(wd)
        if old is not None and old != current:  # the same directory, moved here within the tree
            self.path_wd.pop(old, None)
            self._forget(old)
            wd = self.lib.add(self.fd, os.fsencode(full), MASK | (0 if follow else IN_DONT_FOLLOW))
            if wd < 0:
                return False
        self.wd_path[wd], self.path_wd[current] = current, wd
        return True


def _mountinfo() -> bytes:
    """This process's mount table: a file system mounted or unmounted inside the tree makes no
    event, so a scan after any change to it lists everything."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return f.read()
    except OSError:
        return b""


# -- which scans are watched -----------------------------------------------------------------------
_WATCHES: dict[str, TreeWatch] = {}
_SCANNED: set[str] = set()
_MUTEX = threading.Lock()
ENABLED = os.environ.get("PEERSYNC_WATCHED_SCANS", "1") != "0"
LONG_LIVED = False  # set by a process that exists to sync again and again (a keeper): watch from the first scan


def scans_again(root: Path | str) -> bool:
    """Whether this process scanned `root` before, or exists to scan again and again (a keeper):
    then what a scan loads (the stat cache) is worth keeping in memory for the next one."""
    return LONG_LIVED or os.path.realpath(root) in _SCANNED


def walker(root: Path | str, selection: Selection) -> TreeWatch | None:
    """The watch for this process's scans of `root` with `selection`, held for the caller (release
    it with `done`); None for a plain walk: the process's first scan of `root`, another scan of it
    under way, or no inotify here."""
    key = os.path.realpath(root)
    with _MUTEX:
        if key not in _SCANNED and not LONG_LIVED or not ENABLED:
            _SCANNED.add(key)  # a process that scans once never pays for watches
            return None
        watch = _WATCHES.get(key)
        if watch is not None and watch.selection != selection:  # the configuration changed
            if not watch.mutex.acquire(blocking=False):
                return None
            del _WATCHES[key]
            watch.close()  # and stays held: a thread that found it a moment ago walks plainly
            watch = None
        if watch is None:
            lib = _lib()
            if lib is None:
                return None
            for old in list(_WATCHES)[:max(0, len(_WATCHES) - MAX_TREES + 1)]:  # the least recently used
                if _WATCHES[old].mutex.acquire(blocking=False):
                    _WATCHES.pop(old).close()
            if len(_WATCHES) >= MAX_TREES:
                return None  # every watch is in use by a scan right now: this one lists everything
            watch = TreeWatch(key, selection, lib)
        _WATCHES[key] = _WATCHES.pop(key, watch)  # most recently used last
    if not watch.mutex.acquire(blocking=False):
        # Another thread scans it now: this scan lists everything itself — but waits for a prime
        # (the same listing, already under way) rather than list it all a second time alongside.
        if not (watch.priming and watch.mutex.acquire(timeout=PRIME_WAIT)):
            return None
    return watch


def prime(root: Path | str, selection: Selection, cache: Path | None = None) -> None:
    """Between syncs (a kept agent told its client left): if this process scanned `root` before but
    watches nothing there yet, set the watches up now, in the background, so that the next sync's
    scan is already watch-fed; and load the stat cache at `cache` back into memory (a first scan
    let it go: scan.forget_cache).  A scan that starts meanwhile waits for it (walker)."""
    threading.Thread(target=prime_now, args=(root, selection, cache), name="peersync-prime", daemon=True).start()


def prime_now(root: Path | str, selection: Selection, cache: Path | None = None, *, first: bool = False) -> None:
    """prime(), in this thread.  `first`: before this process's first scan of `root` too (a keeper
    and its agent, which will scan it again and again: Handler.warm)."""
    key = os.path.realpath(root)
    if first and ENABLED:
        with _MUTEX:
            _SCANNED.add(key)
    existing = _WATCHES.get(key)
    watch_it = ENABLED and key in _SCANNED and not (
        existing is not None and existing.fd >= 0 and existing.selection == selection)
    load = cache is not None and str(cache) not in scanning._KEPT
    watch = walker(root, selection) if watch_it else None
    if watch is None:
        if load:
            scanning.StatCache(cache)  # kept in memory for the next scan
        return
    ok = False
    watch.priming = True  # a scan that starts now waits for this (walker)
    try:
        if load:
            scanning.StatCache(cache)
        if watch.fd < 0:
            for _ in watch.walk([], []):
                pass
        ok = True
    except Exception:  # noqa: BLE001 - the next scan lists everything (done() closes the watch)
        pass
    finally:
        watch.priming = False
        done(watch, ok)


def done(watch: TreeWatch, ok: bool) -> None:
    """After a scan that used `watch`; `ok` False (it stopped midway): the next one lists everything."""
    try:
        if not ok:
            watch.close()
    finally:
        watch.mutex.release()


def changed_between(before: tuple | None, now: tuple | None) -> set[str] | None:
    """Given two watch-fed scans' ScanResult.fresh (watch, walk), the paths where the later one's
    manifest may hold another entry object than the earlier one's (TreeWatch.fresh_between); None
    when that is not known: then compare everything."""
    if before is None or now is None or before[0] is not now[0]:
        return None
    return now[0].fresh_between(before[1], now[1])


def forget_all() -> None:
    """Drop every watch (tests; a process that forks)."""
    with _MUTEX:
        for watch in _WATCHES.values():
            watch.close()
        _WATCHES.clear()
        _SCANNED.clear()


