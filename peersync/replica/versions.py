"""A replica's version records: the version vector of every file it holds and of every deletion it
made or accepted (core/versions.py says what a vector means).

When a scan finds a file whose content differs from its record (an edit made outside peersync, or a
file that is new), the file gets a new version: its old vector plus one new event of this replica.
A file missing from the scan that is on record (and inside the selection, and not merely
unreadable) was deleted here: the deletion is a version too, with its own event.  A version that
arrives by sync keeps the vector it came with.

Stored in SQLite (`versions.sqlite` in the state dir, rollback journal: a reader creates no file,
so a dry run leaves the state dir as it was): one row per path, updated in place and durable
before a scan's result leaves this replica.  Counters come from one sequence per replica,
stored in the same database and never handed out twice, so a lost row can only make a later
version look concurrent (a conflict, nothing lost), never make two different versions look equal.

The first scan of an existing workspace (an upgrade from a version without vectors) records its
files with the empty vector: their history is unknown, and reconcile then decides them by the
pair's ancestor, as before.
"""

from __future__ import annotations

import functools
import itertools
import json
import marshal
import mmap
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import xxhash

from peersync.core import versions
from peersync.core.changelog import ChangeLog
from peersync.core.types import Entry
from peersync.core.versions import VV
from peersync.workspace.storage import atomic_write_bytes

FILE = "versions.sqlite"
FORMAT = 1  # bump me when the schema changes (then migrate in _open)
SNAPSHOT = "versions.marshal"  # the rows as a process held them (Versions.keep_snapshot)…
SNAPSHOT_DELTA = "versions.delta.marshal"  # … and the rows changed since, as a later one held them
_SNAPSHOT_MAGIC = b"peersync versions snapshot 1\n"
_DELTA_MAGIC = b"peersync versions delta 1\n"
DELTA_MAX = 1 / 16  # changed rows (of all) beyond which keep_snapshot writes the whole snapshot anew

_SCHEMA = """
create table if not exists meta (key text primary key, value text not null);
create table if not exists versions (
    path text primary key,
    present integer not null,   -- 1: the file holds this version; 0: this version is a deletion
    size integer not null, mtime_ns integer not null, mode integer not null, hash text not null,
    vv text not null,           -- JSON [[replica, counter], ...]: the content's lineage
    seen text not null,         -- JSON, the same form: versions set aside in its favour
    at real not null            -- when recorded (deletions are pruned with the trash)
);
"""


# A name that is not UTF-8 reaches Python as a lone surrogate per byte (surrogateescape), which
# SQLite's text cannot hold: such a path is kept as \x01 and its bytes in hex (a wire path never
# starts with a control character, so no real path is spelled so).
_RAW = "\x01"


def _key(path: str) -> str:
    if path.isascii():
        return path
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return _RAW + path.encode("utf-8", "surrogateescape").hex()


def _path(key: str) -> str:
    return bytes.fromhex(key[1:]).decode("utf-8", "surrogateescape") if key[:1] == _RAW else key


def _serialised(method):
    """One operation at a time on the connection (the local side calls from worker threads)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._mutex:
            return method(self, *args, **kwargs)
    return run


# One open store per state dir and process: a keeper or kept agent syncs again and again, and its
# scans, installs and deletions all use the same rows in memory.
_OPEN: dict[str, "Versions"] = {}
_OPEN_LOCK = threading.Lock()


def open_versions(state: Path, me: str) -> "Versions":
    """The store of the replica whose state dir is `state` (shared within this process)."""
    key = str(Path(state).resolve())
    with _OPEN_LOCK:
        found = _OPEN.get(key)
        if found is None or found.me != me:
            found = _OPEN[key] = Versions(state, me)
        return found


class Versions:
    """One replica's records.  `me` is the replica's short id (core.versions.short_id)."""

    def __init__(self, state: Path, me: str):
        self.path = Path(state) / FILE
        self.me = me
        self._mutex = threading.RLock()
        self._db: sqlite3.Connection | None = None
        # path -> (present, size, mtime_ns, mode, hash, vv, seen, at): plain tuples, vectors parsed
        # once per distinct text (most files share a few), Entries built only where needed.
        self._rows: dict[str, tuple] | None = None
        self._data_version = None
        self._inode = None
        self._gen = 0  # bumped by every change to the rows in memory (a scan's `known` is then stale)
        self._present: tuple[int, dict | None, int] = (-1, None, 0)  # (gen, rows, how many present)
        self._log = ChangeLog(LOG_MAX, LOG_PATHS_MAX)  # the paths each recent generation changed at
        self._snapshot = Path(state) / SNAPSHOT
        # Whether the rows in memory differ from the snapshot on disk (read from SQLite, or written
        # since): keep_snapshot then writes one.  None: the rows came from SQLite, and nothing since.
        self._unsnapped: bool | None = False
        # While the rows in memory are the snapshot's, plus the paths a delta changed, plus what
        # changed after generation `gen`: (the snapshot's stamp, those paths, gen); else None.
        self._based: tuple[bytes, frozenset[str], int] | None = None
        self._recorded = False  # whether a scan recorded (assign_scanned with save): not a dry run

    # -- storage -----------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self._db is not None and self._inode != _inode(self.path):  # replaced or removed under us
            self._db.close()
            self._db, self._rows, self._based = None, None, None
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.path.is_symlink():  # SQLite follows links: a planted one would write elsewhere
                raise OSError(f"{self.path} is a symbolic link: peersync will not use it")
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("pragma synchronous=full")
            if not db.execute("select 1 from sqlite_master where name = 'meta'").fetchone():
                db.executescript(_SCHEMA)
                db.execute("insert into meta values ('format', ?)", (str(FORMAT),))
            stored = dict(db.execute("select key, value from meta"))
            if int(stored.get("format", FORMAT)) != FORMAT:
                raise ValueError(f"{self.path}: unknown format {stored['format']}")
            self._db = db
            self.path.chmod(0o600)
            self._inode = _inode(self.path)
        return self._db

    def _all(self) -> dict[str, tuple]:
        """Every record, by path.  Kept in memory by a long-lived process (a kept agent, a keeper)
        and read again when another process has written meanwhile (SQLite's data_version says so)."""
        db = self._open()
        version = db.execute("pragma data_version").fetchone()[0]
        if self._rows is None and (snapped := self._read_snapshot()) is not None:
            self._rows, self._data_version, self._unsnapped = snapped[0], version, False
            self._based = (snapped[1], snapped[2], self._gen)
        elif self._rows is None or version != self._data_version:
            # One object per distinct mode and per distinct record time (one per write: a handful in
            # 100k rows), where SQLite gives a new one per row: ~5 MB less at 100k.
            mode_of, time_of = {}.setdefault, {}.setdefault
            # (Most vectors of files that came by a first sync, and most `seen`, are empty, and most
            # paths plain: told here, not by calls of _vv and _path — ~10% of a cold read's time.)
            self._rows = {key if key[:1] != _RAW else _path(key): (present, size, mtime, mode_of(mode, mode), digest,
                                       () if vv == "[]" else _vv(vv), () if seen == "[]" else _vv(seen),
                                       time_of(at, at))
                          for key, present, size, mtime, mode, digest, vv, seen, at in db.execute(
                              "select path, present, size, mtime_ns, mode, hash, vv, seen, at from versions")}
            self._data_version = version
            self._unsnapped = self._unsnapped or None
            self._based = None
        return self._rows

    # A new process's first read of the rows: SQLite hands over 100k rows in ~140 ms, marshal the
    # same rows in ~40.  The snapshot is taken only of rows known to be the database's as it stands
    # (keep_snapshot), and names the database's state it was taken of: the file's identity and
    # SQLite's own count of the transactions that changed it (the header's file change counter,
    # which every writer — an older peersync, the sqlite3 shell — moves in rollback-journal mode).
    # A sync changes a few rows of 100k: it writes them alone, as a delta on the snapshot (naming
    # both states), until they are DELTA_MAX of all.  Any other state, and any doubt (a journal
    # present, WAL mode, a file not ours or damaged), and the rows are read from SQLite.
    def _read_snapshot(self) -> tuple[dict[str, tuple], bytes, frozenset[str]] | None:
        """(the rows, the snapshot's stamp, the paths its delta changed) while they are the database's."""
        stamp = _stamp(self.path)
        base = _read_marshal(self._snapshot, _SNAPSHOT_MAGIC) if stamp is not None else None
        if base is None or len(base[0]) != 1 or type(base[1]) is not dict:
            return None
        (base_stamp,), rows = base
        if base_stamp == stamp:
            return rows, base_stamp, frozenset()
        delta = _read_marshal(self._delta, _DELTA_MAGIC)
        if delta is None or delta[0] != [base_stamp, stamp] or type(delta[1]) is not dict:
            return None
        for path, row in delta[1].items():
            if row is None:
                rows.pop(path, None)
            else:
                rows[path] = row
        return rows, base_stamp, frozenset(delta[1])

    @property
    def _delta(self) -> Path:
        return self._snapshot.with_name(SNAPSHOT_DELTA)

    @_serialised
    def keep_snapshot(self) -> None:
        """Write the rows in memory for the next process's first read of them, when they changed
        here (or came from SQLite, after a scan that recorded: not a dry run, which leaves the state
        dir as it was) and no other process wrote the database since they were read: the rows that
        changed since the snapshot, or all of them.  A cache, best effort: missing, stale or
        damaged, the rows are read from SQLite."""
        if self._rows is None or self._db is None or not (self._unsnapped or self._unsnapped is None and self._recorded):
            return
        stamp = _stamp(self.path)  # (first: a write after this is caught by the check below or, later, by the stamp)
        try:
            if stamp is None or self._db.execute("pragma data_version").fetchone()[0] != self._data_version:
                return
            rows, changed = self._rows, None
            if self._based is not None and (since := self._log.between(self._based[2], self._gen)) is not None:
                changed = self._based[1].union(since)
            if changed is not None and len(changed) <= len(rows) * DELTA_MAX:
                _write_marshal(self._delta, _DELTA_MAGIC, [self._based[0], stamp], {p: rows.get(p) for p in changed})
                self._based = (self._based[0], changed, self._gen)
            else:
                _write_marshal(self._snapshot, _SNAPSHOT_MAGIC, [stamp], rows)
                self._based = (stamp, frozenset(), self._gen)
                self._delta.unlink(missing_ok=True)
        except (OSError, ValueError, sqlite3.Error):
            return
        self._unsnapped = False

    @property
    @_serialised
    def started(self) -> bool:
        """Whether this replica has recorded versions before (else its files are from before vectors)."""
        return self._meta("started") is not None

    def _meta(self, key: str) -> str | None:
        row = self._open().execute("select value from meta where key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _write(self, records: list[tuple[str, bool, Entry]], *, started: bool = False, drop: Iterable[str] = (),
               make: Callable[[int], list[tuple[str, bool, Entry]]] | None = None) -> None:
        """Store (path, present, version) records in one transaction, durable before it returns.
        `make`: records that take a new event of this replica, made from the counter reserved in
        the same transaction (one commit, not two: each costs fsyncs, right after the installs)."""
        now = time.time()
        db = self._open()
        db.execute("begin immediate")
        try:
            if make is not None:
                records = records + make(self._take(db, 1))
            db.executemany("insert or replace into versions values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(_key(p), int(present), e.size, e.mtime_ns, e.mode, e.hash, _json(e.vv), _json(e.seen), now)
                            for p, present, e in records])
            drop = list(drop)
            db.executemany("delete from versions where path = ?", [(_key(p),) for p in drop])
            if started:
                db.execute("insert or ignore into meta values ('started', '1')")
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
        rows = self._all()
        gen, counted, count = self._present
        kept = gen == self._gen and counted is rows  # the count stays right as the rows change
        self._bump([*drop, *(r[0] for r in records)])
        for path in drop:
            row = rows.pop(path, None)
            count -= bool(row and row[0])
        for path, present, e in records:
            row = rows.get(path)
            count += bool(present) - bool(row and row[0])
            rows[path] = (int(present), e.size, e.mtime_ns, _MODES.setdefault(e.mode, e.mode), e.hash, e.vv, e.seen, now)
        if kept:
            self._present = (self._gen, rows, count)
        self._unsnapped = True

    @_serialised
    def reserve(self, count: int = 1) -> int:
        """The first of `count` new counters of this replica (durable before it is returned)."""
        db = self._open()
        db.execute("begin immediate")
        try:
            first = self._take(db, count)
            db.execute("commit")
        except BaseException:
            db.execute("rollback")
            raise
        return first

    @staticmethod
    def _take(db: sqlite3.Connection, count: int) -> int:
        """Within a transaction: reserve `count` counters, the first of which is returned."""
        current = int((db.execute("select value from meta where key = 'counter'").fetchone() or ("0",))[0])
        db.execute("insert or replace into meta values ('counter', ?)", (str(current + count),))
        return current + 1

    @_serialised
    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._rows = self._based = None

    # -- versions of what a scan found ---------------------------------------------------------
    @_serialised
    def known(self) -> tuple[dict[str, tuple], int] | None:
        """(records by path, their generation), for a scan to give each file whose record it matches
        that record's history as it makes its entry (scan's `known`; assign's `scanned`): a no-op
        scan of 100k files then builds each entry once.  None before the first scan.  Read-only."""
        if not self.path.exists() or not self.started:
            return None
        return self._all(), self._gen

    def _present_count(self, rows: dict[str, tuple]) -> int:
        """How many records are of present files (counted once per change to the rows)."""
        gen, counted, count = self._present
        if gen != self._gen or counted is not rows:
            count = sum(1 for row in rows.values() if row[0])
            self._present = (self._gen, rows, count)
        return count

    @_serialised
    def present_count(self) -> int:
        """How many files this replica's records say it holds."""
        return sum(1 for row in self._all().values() if row[0])

    def assign(self, manifest: Mapping[str, Entry], *, covers: Callable[[str], bool], save: bool = True,
               fold: Callable[[str], str] | None = None, scanned: tuple | None = None) -> dict[str, Entry]:
        """See assign_scanned."""
        return self.assign_scanned(manifest, covers=covers, save=save, fold=fold, scanned=scanned)[0]

    @_serialised
    def assign_scanned(self, manifest: Mapping[str, Entry], *, covers: Callable[[str], bool], save: bool = True,
                       fold: Callable[[str], str] | None = None, scanned: tuple | None = None,
                       own: bool = False, gone: set[str] | None = None) -> tuple[dict[str, Entry], bool]:
        """`manifest` with each file's history; new versions (edits, new files) and deletions
        (recorded paths missing from the scan that `covers` — inside the selection, and not paths
        the scan could not read) get a new event of this replica.  `save=False` (a dry run):
        nothing recorded; new versions then carry a provisional counter (and a store that does not
        exist yet is not created: everything is then as at a first scan).  `fold`: on a volume that
        takes several spellings for one name, the key of a name there — a record made under another
        spelling of a scanned file (a sync writes under the pair's spelling, core/names.py) is that
        file's record, not a deletion.  `scanned`: (records, generation, paths) when the scan that
        made `manifest` (every path it found) matched each file against `known()`'s records: the
        entries it matched carry their history already, and only `paths` (the others) are looked at.
        Returns (the manifest with histories, whether only `paths` were looked at: every other
        entry is then the very object `manifest` holds).  `own`: the caller gives `manifest` up —
        changed in place and returned on that path, not copied (100k entries: ~3 ms, twice over
        with freeing the copy).  `gone`: with `scanned`, the paths where a file may have gone since
        the last scan that recorded (a watch's word), taken as all when as many records of present
        files are missing from the scan (else every record is looked for in it)."""
        if not save and not self.path.exists():
            return dict(manifest), False
        self._recorded = self._recorded or save
        rows = self._all()
        first = not self.started
        if scanned is not None and scanned[0] is rows and scanned[1] == self._gen and not first and fold is None:
            return self._assign_rest(manifest, rows, scanned[2], covers=covers, save=save, own=own, gone=gone), True
        respelled: list[tuple[str, bool, Entry]] = []
        dropped: list[str] = []
        if fold is not None and not first:
            rows, respelled, dropped = _respelled(rows, manifest, fold)
        out: dict[str, Entry] = {}
        legacy: list[tuple[str, bool, Entry]] = []  # files found at the first scan: history unknown
        moved: list[tuple[str, Entry | None, VV]] = []  # (path, entry or None for a deletion, what it descends from)
        for path, entry in manifest.items():
            row = rows.get(path)
            if row is not None and row[0] and row[4] == entry.hash and row[1] == entry.size:
                out[path] = entry.with_vv(row[5], row[6]) if row[5] or row[6] else entry
            elif row is None and first:
                out[path] = entry
                legacy.append((path, True, entry))
            else:
                moved.append((path, entry, _entry(row).history if row is not None else ()))
        if len(rows) > len(out) - len(legacy):  # some record is not in this scan: deleted here?
            moved += [(path, None, _entry(row).history) for path, row in rows.items()
                      if row[0] and path not in manifest and covers(path)]
        rewritten = {m[0] for m in moved}
        records = legacy + [r for r in respelled if r[0] not in rewritten]
        new_versions = self._new_versions(moved, rows, out)
        if not save:
            if moved:  # a dry run: provisional counters, nothing recorded
                new_versions(self._peek())
        elif moved or records or first or dropped:
            self._write(records, started=True, drop=dropped, make=new_versions if moved else None)
        return out, False

    def _assign_rest(self, manifest: Mapping[str, Entry], rows: dict[str, tuple], rest: list[str], *,
                     covers: Callable[[str], bool], save: bool, own: bool = False,
                     gone: set[str] | None = None) -> dict[str, Entry]:
        """assign() after a scan that matched its files against these records: the other paths
        (`rest`) are new versions unless they match now; records of present files that the scan
        did not find are deletions."""
        out = manifest if own else dict(manifest)
        moved: list[tuple[str, Entry | None, VV]] = []
        unmatched_present = 0
        for path in rest:
            entry, row = manifest[path], rows.get(path)
            if row is not None and row[0]:
                unmatched_present += 1
                if row[4] == entry.hash and row[1] == entry.size:
                    out[path] = entry.with_vv(row[5], row[6]) if row[5] or row[6] else entry
                    continue
            moved.append((path, entry, _entry(row).history if row is not None else ()))
        # Matched entries are present records the scan found: any other present record was not found.
        missing = self._present_count(rows) - (len(manifest) - len(rest) + unmatched_present)
        if missing > 0:
            found = [] if gone is None else \
                [p for p in gone if p not in manifest and (row := rows.get(p)) is not None and row[0]]
            if len(found) != missing:
                found = [p for p in itertools.filterfalse(manifest.__contains__, rows) if rows[p][0]]  # (a C-level loop)
            moved += [(path, None, _entry(rows[path]).history) for path in sorted(found) if covers(path)]
        if moved:
            made = self._new_versions(moved, rows, out)
            if not save:
                made(self._peek())  # a dry run: provisional counters, nothing recorded
            else:
                self._write([], started=True, make=made)
        return out

    def _new_versions(self, moved: list, rows: dict[str, tuple], out: dict[str, Entry]):
        """The records of `moved` (path, entry or None for a deletion, what it descends from), made
        with a new event's counter; `out` takes the new entries."""
        def made(counter: int) -> list[tuple[str, bool, Entry]]:
            records = []
            for path, entry, previous in moved:
                vv = versions.bump(previous, self.me, counter)
                if entry is None:  # deleted here: the deletion is a version of its own
                    records.append((path, False, _entry(rows[path]).with_vv(vv, ())))
                else:
                    out[path] = entry.with_vv(vv, ())
                    records.append((path, True, out[path]))
            return records
        return made

    def _peek(self) -> int:
        return int(self._meta("counter") or "0") + 1

    # -- what syncs record ---------------------------------------------------------------------
    @_serialised
    def record(self, items: Iterable[tuple[str, Entry, bool]],
               make: Callable[[int], Iterable[tuple[str, Entry, bool]]] | None = None) -> None:
        """Versions this replica now holds (present=True) or deleted (False) because a sync said so;
        `make(counter)`: more of them, which take a new event of this replica (reserved with them)."""
        records = [(p, present, e) for p, e, present in items]
        if make is not None:
            def made(counter: int) -> list[tuple[str, bool, Entry]]:
                return [(p, present, e) for p, e, present in make(counter)]
            self._write(records, started=True, make=made)
        elif records:
            self._write(records, started=True)

    @_serialised
    def deleted(self, paths: Iterable[str] | None = None) -> dict[str, Entry]:
        """The deletion versions on record (for `paths`, or all), each with its history."""
        rows = self._all()
        wanted = rows.items() if paths is None else ((p, rows[p]) for p in paths if p in rows)
        return {p: _entry(row) for p, row in wanted if not row[0]}

    @_serialised
    def deletions(self) -> list[tuple[str, Entry, float]]:
        """(path, deletion version, when recorded) for every deletion on record."""
        return [(p, _entry(row), row[7]) for p, row in self._all().items() if not row[0]]

    @_serialised
    def has_deleted(self) -> bool:
        rows = self._all()
        return self._present_count(rows) < len(rows)  # (counted once per change to the rows)

    @_serialised
    def current(self, path: str) -> Entry | None:
        row = self._all().get(path)
        return _entry(row) if row is not None and row[0] else None

    @_serialised
    def prune(self, days: float, now: float | None = None) -> int:
        """Forget deletions recorded more than `days` ago (with the trash)."""
        cutoff = (time.time() if now is None else now) - days * 86400
        old = [p for p, row in self._all().items() if not row[0] and row[7] < cutoff]
        if old:
            db = self._open()
            db.execute("begin immediate")
            db.executemany("delete from versions where path = ?", [(_key(p),) for p in old])
            db.execute("commit")
            self._bump(old)
            for p in old:
                self._all().pop(p, None)
            self._unsnapped = True
        return len(old)

    def _bump(self, paths: list[str]) -> None:
        """A new generation of the rows in memory, which changed at `paths` (remembered a while)."""
        self._gen += 1
        self._log.add(self._gen, paths)

    @_serialised
    def changed_since(self, gen: int) -> set[str] | None:
        """The paths whose record changed after generation `gen` of the rows in memory (each by a new
        row); None when that is no longer known."""
        return self._log.between(gen, self._gen)


def _read_marshal(path: Path, magic: bytes) -> tuple[list[bytes], object] | None:
    """(the stamps, the value) of a file _write_marshal wrote; None when it is not one, or not ours.
    Mapped, not read: 10 MB of bytes read into the heap and freed leave it that much larger for
    the rest of the process (a peak RSS target of 150 MB at 100k files)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_uid != os.getuid():
                return None
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
                end = data.find(b"\n\n", 0, 4096)
                head = data[:end].split(b"\n")
                if end < 0 or head[0] + b"\n" != magic or len(head) < 3:
                    return None
                with memoryview(data)[end + 2:] as body:
                    if xxhash.xxh3_128_hexdigest(body).encode() != head[-1]:
                        return None
                    return head[1:-1], marshal.loads(body)
        finally:
            os.close(fd)
    except (OSError, ValueError, EOFError, TypeError, BufferError):
        return None


def _write_marshal(path: Path, magic: bytes, stamps: list[bytes], value) -> None:
    """`value` in marshal's form behind a head: `magic`, a line per stamp, the body's checksum, and
    an empty line.  Not durable: a cache."""
    body = marshal.dumps(value, 4)
    atomic_write_bytes(path, b"".join((magic, *(s + b"\n" for s in stamps),
                                       xxhash.xxh3_128_hexdigest(body).encode(), b"\n\n", body)), durable=False)


def _stamp(path: Path) -> bytes | None:
    """The state of the database file at `path`: its identity and SQLite's file change counter
    (with the version-valid-for number beside it); None when that cannot be told — no SQLite
    file, WAL mode (whose header does not count commits), or a journal present (a write under way,
    or one cut short that the next reader rolls back)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            head = os.pread(fd, 100, 0)
        finally:
            os.close(fd)
        if os.path.lexists(f"{path}-journal") or os.path.lexists(f"{path}-wal"):
            return None
    except OSError:
        return None
    if len(head) < 100 or head[:16] != b"SQLite format 3\x00" or head[18:20] != b"\x01\x01":
        return None
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {head[24:28].hex()} {head[92:96].hex()}".encode()


LOG_MAX = 64  # generations remembered by changed_since
LOG_PATHS_MAX = 1 << 16  # and paths, over all of them


def _respelled(rows: dict[str, tuple], manifest: Mapping[str, Entry], fold: Callable[[str], str]
               ) -> tuple[dict[str, tuple], list[tuple[str, bool, Entry]], list[str]]:
    """Records of present files kept under another spelling than the scan's: each scanned file takes
    the latest record of its name (by when it was written), under the scanned spelling; the others
    are dropped, not taken for deletions.  (rows as they should be, records to write, paths to drop)."""
    stray: dict[str, list[str]] = {}
    for path, row in rows.items():
        if row[0] and path not in manifest:
            stray.setdefault(fold(path), []).append(path)
    if not stray:
        return rows, [], []
    rows = dict(rows)
    records, dropped = [], []
    for path in manifest:
        others = stray.get(fold(path))
        if not others:
            continue
        spellings = others + ([path] if path in rows else [])
        latest = max(spellings, key=lambda p: rows[p][7])
        rows[path] = rows[latest]
        records.append((path, True, _entry(rows[latest])))
        for other in others:
            dropped.append(other)
            del rows[other]
        others.clear()
    return rows, records, dropped


def _inode(path: Path):
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _entry(row: tuple) -> Entry:
    return Entry(row[1], row[2], row[3], row[4], row[5], row[6])


@functools.lru_cache(maxsize=8192)
def _json(vv: VV) -> str:
    return json.dumps(versions.to_wire(vv), separators=(",", ":"))


# File modes, one int object each (as _all reads them): rows recorded here, then kept in a snapshot.
_MODES: dict[int, int] = {}

# Replica ids, one str object each: the rows of 100k files name a handful of replicas, and a
# process that reads them all (Versions._all) would otherwise hold 100k copies (~8 MB).
_IDS: dict[str, str] = {}
_MAX_IDS = 4096


def _vv(raw: str, _loads=json.loads, _ids=_IDS) -> VV:
    """A stored vector (_json's form).  Called for two columns of every row a process reads: most
    `seen` are empty and most vectors name one replica, `[["id",n]]`, read here without the JSON
    parser; anything else — escapes, spaces, more pairs — is JSON's."""
    if raw == "[]":
        return ()
    intern = _ids.setdefault if len(_ids) < _MAX_IDS else _ids.get
    if raw[:3] == '[["' and raw[-2:] == "]]" and raw.count('"') == 2 and "\\" not in raw:
        who, _, n = raw[3:-2].partition('",')
        if who.isascii() and who.isalnum() and n.isascii() and n.isdigit() and (n[0] != "0" or n == "0"):
            return ((intern(who, who), int(n)),)
    return tuple([(intern(who, who), n) for who, n in _loads(raw)])
