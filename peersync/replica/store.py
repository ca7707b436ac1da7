"""Apply decided changes to one replica's disk: install, delete to trash, quarantine conflicts.

Invariants (the safety model lives here):
- a file is replaced only while it still holds the content that was scanned (hash checked on the
  very inode being replaced); an edit that races the rename is caught and kept as a conflict
  (written in place: through the held inode; saved anew: through an atomic swap, where the OS has one);
- a run that dies mid-way leaves nothing at a real path but whole versions, and recover_holding()
  turns a replaced-but-not-yet-quarantined version into a conflict;
- new content is verified by hash before it becomes visible, and appears by rename (atomic);
- nothing is unlinked: replaced losers go to conflicts/, deletions go to the trash.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

import xxhash

from peersync.core.paths import STATE_DIR, check_relpath
from peersync.core.selection import Selection
from peersync.core.types import Entry
from peersync.replica.scan import CHUNK, hash_bytes, hash_file
from peersync.workspace.storage import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_private_dir,
    fsync_dir,
    read_json,
)

CONFLICTS_FORMAT = 1
PACK_MIN = 16  # log bases saved at once from which one pack file holds them (see save_logbases)


class Refused(Exception):
    """This one path was not applied; the message says why (becomes a Problem)."""


class Store:
    """One workspace root as seen by the apply step (used locally and by the remote agent)."""

    def __init__(self, root: Path | str, selection: Selection):
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        self.selection = selection
        self.deferred_dirs: set[str] | None = None  # set while a batch defers directory fsyncs
        self._real_dirs: set[str] = set()  # parents a batch found to be real directories (see target)
        self._batch_holding: Path | None = None  # one holding token dir per batch (see _hold)

    # -- locations -------------------------------------------------------------------------
    @property
    def staging_root(self) -> Path:
        return self.state / "staging"

    @property
    def conflicts_dir(self) -> Path:
        return self.state / "conflicts"

    @property
    def trash_dir(self) -> Path:
        return self.state / "trash"

    def target(self, path: str) -> Path:
        """The real path for a wire path, refusing anything outside the selection or the root."""
        return Path(self._target(path))

    def _target(self, path: str, real: set[str] | None = None) -> str:
        """`real`: parents already found to be real directories by the caller's batch."""
        check_relpath(path)
        if not self.selection.contains(path):
            raise Refused(f"path outside the synced selection: {path}")
        # Never write through a symlinked parent directory (it could point outside the root).
        # Within one batch a parent found to be a real directory is not looked at again: only a
        # symlink already on this disk could lead outside (a peer cannot send one), and a local
        # process swapping one in mid-batch could as well race the check itself.
        if real is None:
            real = self._real_dirs if self.deferred_dirs is not None else set()
        root = str(self.root)
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in real:
            try:
                mode = os.lstat(f"{root}/{path[:cut]}").st_mode
            except (FileNotFoundError, NotADirectoryError):
                mode = 0
            if stat.S_ISLNK(mode):
                raise Refused(f"parent directory is a symbolic link: {path[:cut]}")
            if stat.S_ISDIR(mode):
                real.add(path[:cut])
            cut = path.rfind("/", 0, cut)
        return f"{root}/{path}"

    def read(self, paths: list[str]) -> dict[str, bytes]:
        """The content of each path: a regular file, never read through a symlink."""
        real: set[str] = set()  # one request is one batch for the parent checks (see _target)
        return {path: self._read(path, real) for path in paths}

    def _read(self, path: str, real: set[str]) -> bytes:
        fd = os.open(self._target(path, real), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"not a regular file: {path}")
            return _read_whole(fd, st.st_size)
        finally:
            os.close(fd)

    def new_staging(self) -> Path:
        ensure_private_dir(self.staging_root)
        path = self.staging_root / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        return path

    def _fsync_dir(self, directory: Path | str) -> None:
        if self.deferred_dirs is None:
            fsync_dir(directory)
        else:
            self.deferred_dirs.add(os.fspath(directory))

    def flush_dirs(self) -> None:
        """Make a batch's renames durable: one fsync per directory touched."""
        dirs, self.deferred_dirs = self.deferred_dirs or set(), None
        self._real_dirs = set()
        for directory in dirs:
            fsync_dir(directory)
        token, self._batch_holding = self._batch_holding, None
        if token is not None:  # only its empty dirs: a name still held is recover_holding()'s
            for here, _, _ in os.walk(token, topdown=False):
                try:
                    os.rmdir(here)
                except OSError:
                    pass

    def clear_staging(self) -> int:
        """Remove leftovers of interrupted runs (only called while holding the workspace lock)."""
        removed = 0
        if self.staging_root.is_dir():
            for child in self.staging_root.iterdir():
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        return removed

    # -- install -------------------------------------------------------------------------
    def prepare(self, staged: Path, new: Entry) -> None:
        """Check a staged file against the manifest and give it its mode and mtime."""
        # One descriptor for check, hash, mode and mtime (a batch does this for every file).
        try:
            fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise Refused("transferred file is missing (transfer incomplete)") from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise Refused("transferred file is not a regular file") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused("transferred file is not a regular file")
            if st.st_size != new.size or hash_fd(fd, new.size) != new.hash:
                raise Refused("content changed on the sending side during the sync; left for the next sync")
            if st.st_mode & 0o7777 != (new.mode or 0o644):  # rsync usually set both already
                os.fchmod(fd, new.mode or 0o644)
            if st.st_mtime_ns != new.mtime_ns:
                os.utime(fd, ns=(st.st_atime_ns, new.mtime_ns))
        finally:
            os.close(fd)

    def install(self, path: str, staged: Path, *, expect: Entry | None, new: Entry,
                quarantine: dict | None = None, prepared: bool = False) -> dict:
        """Put the verified staged file at `path` if the target still holds `expect`.

        `prepared`: the caller ran prepare() and made the staged data durable (one syncfs for a
        whole batch instead of an fsync per file) — the data is on disk before any rename.
        Returns {"entry": wire entry now at path, "conflict": id | None}.  Raises Refused.
        """
        full = self._target(path)
        if not prepared:
            self.prepare(staged, new)
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
        parent = path.rpartition("/")[0]
        if not (parent in self._real_dirs and self.deferred_dirs is not None):
            try:
                os.makedirs(os.path.dirname(full), exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise Refused(_file_in_the_way(str(self.root), parent)) from None
        if expect is None:
            return {"entry": self._create(full, staged, path, new), "conflict": None}
        return self._replace(Path(full), staged, path, expect, new, quarantine)

    def _create(self, full: str, staged: Path | str, path: str, new: Entry) -> list:
        # A no-replace rename (or link() where the system has none) fails if anything appeared
        # at the target meanwhile: a fresh file is never clobbered.
        try:
            if not _rename_noreplace(staged, full):
                os.link(staged, full)
                os.unlink(staged)
        except FileExistsError:
            raise Refused(_occupant(full)) from None
        self._fsync_dir(os.path.dirname(full))
        return _stat_entry(full, new.hash)

    def _replace(self, full: Path, staged: Path, path: str, expect: Entry, new: Entry,
                 quarantine: dict | None) -> dict:
        held = self._hold(full, path)  # a second name for the inode we are about to replace
        try:
            before = os.lstat(held)
            if before.st_size != expect.size or hash_file(held) != expect.hash:
                raise Refused("edited during the sync; left for the next sync")
            # Swap rather than replace where the system can: a file saved anew (a new inode)
            # between our check and this rename then lands at `staged` instead of vanishing.
            swapped = _exchange(staged, full)
            if not swapped:
                os.replace(staged, full)
        except BaseException:
            self._unhold(held)
            raise
        # The new content is live.  From here `held` is kept until the old version is where the
        # rules want it (an error leaves it for recover_holding(), never unlinked).
        self._fsync_dir(full.parent)
        after = os.lstat(held)
        try:
            fresh = swapped and os.lstat(staged).st_ino != before.st_ino
        except FileNotFoundError:
            fresh = False
        conflict = None
        if fresh:
            conflict = self._quarantine_file(staged, path, {**(quarantine or {}), "reason": "edited during sync"})
        elif swapped:
            os.unlink(staged)  # the held version's other name; `held` still has it
        raced = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        if raced:
            conflict = self._quarantine_file(held, path, {**(quarantine or {}), "reason": "edited during sync"})
        elif quarantine is not None:
            loser = self._quarantine_file(held, path, quarantine)
            conflict = conflict or loser
        self._unhold(held)
        return {"entry": _stat_entry(full, new.hash), "conflict": conflict}

    def _hold(self, full: Path, path: str) -> Path:
        """A second name for the inode at `full`: holding/<token>/<path>.  If we die after the
        live name was replaced, this is the version's only name; the path in it lets
        recover_holding() put it in conflicts/ rather than lose it."""
        if self.deferred_dirs is None:
            token = self.state / "holding" / secrets.token_hex(8)
        else:  # a batch shares one token dir: fewer directories made and removed per file
            if self._batch_holding is None:
                self._batch_holding = self.state / "holding" / secrets.token_hex(8)
            token = self._batch_holding
        held = internal_path(token, path)
        ensure_private_dir(held.parent)
        try:
            os.link(full, held)
        except FileNotFoundError:
            self._unhold(held)
            raise Refused("deleted during the sync; left for the next sync") from None
        return held

    def _unhold(self, held: Path) -> None:
        """Drop a holding name; in a batch only the name (flush_dirs() removes the token dir)."""
        if self._batch_holding is not None and held.is_relative_to(self._batch_holding):
            for name in (held, held.with_name(held.name + NAME_SUFFIX)) if held.parent.name == LONG else (held,):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
        else:
            _release(held)

    def recover_holding(self) -> int:
        """Clear holding/ after an interrupted run (only while holding the workspace lock).

        A held name whose file has no other name is a version that was replaced but not yet
        quarantined when the run died: it goes to conflicts/.  The others are second names of
        live, trashed or quarantined files and are simply dropped.
        """
        holding = self.state / "holding"
        count = 0
        for token in list(holding.iterdir()) if holding.is_dir() else ():
            if not token.is_dir():  # not ours (holding/ only ever holds token dirs)
                continue
            for held in [p for p in token.rglob("*") if p.is_file() and not _is_name_file(p)]:
                if os.lstat(held).st_nlink == 1:
                    self._quarantine_file(held, internal_relpath(token, held),
                                          {"peer": None, "reason": "kept from an interrupted sync"})
                count += 1
            shutil.rmtree(token, ignore_errors=True)
        return count

    # -- delete --------------------------------------------------------------------------
    def delete(self, path: str, *, expect: Entry, batch: str) -> dict:
        """Move `path` to the trash if it still holds `expect`."""
        full = self.target(path)
        held = self._hold(full, path)
        try:
            before = os.lstat(held)
            if before.st_size != expect.size or hash_file(held) != expect.hash:
                raise Refused("edited during the sync; not deleted")
            dest = internal_path(self.trash_dir / batch, path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(full, dest)
            moved = os.lstat(dest)
            if (moved.st_ino, moved.st_size, moved.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
                # Saved anew or written to between our check and the move: a fresh edit is never
                # deleted.  Put it back unless yet another file appeared there (then it stays in the trash).
                try:
                    os.link(dest, full)
                    os.unlink(dest)
                except FileExistsError:
                    pass
                raise Refused("edited during the sync; not deleted")
        finally:
            _release(held)
        self._prune_empty_dirs(full.parent)
        return {"entry": None, "trash": str(dest.relative_to(self.root))}

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and directory.parent != self.root:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def purge_trash(self, days: int, now: float | None = None) -> int:
        """Drop trash batches older than `days` (batch names start with a UTC timestamp)."""
        if not self.trash_dir.is_dir():
            return 0
        cutoff = time.strftime("%Y%m%dT%H%M%S", time.gmtime((now or time.time()) - days * 86400))
        removed = 0
        for batch in self.trash_dir.iterdir():
            if batch.name[:15] < cutoff:
                shutil.rmtree(batch, ignore_errors=True)
                removed += 1
        return removed

    # -- log bases -----------------------------------------------------------------------
    # The content of each log file as of the last sync, by hash, so the next merge can see what
    # each side inserted even after a third peer's lines landed in the middle (merge.insertion_merge).
    @property
    def logbase_dir(self) -> Path:
        return self.state / "logbase"

    def save_logbases(self, items: list[tuple[str, str]]) -> int:
        """Keep the live content of each (path, hash) whose file still has that hash.

        A cache for better merges, not data: no fsync (lost → the conflict policy decides).  A
        file per base costs a file creation each (~0.1-0.3 ms): a large save, such as the first
        sync's, goes into one pack file instead.
        """
        packed = self._packs()
        wanted: dict[str, str] = {}
        for path, digest in items:
            name = _blob_name(digest)
            if digest not in wanted and digest not in packed and not (self.logbase_dir / name).exists():
                wanted[digest] = path
        real: set[str] = set()
        return self._store_bases(len(wanted), ((d, self._live_bytes(p, real)) for d, p in wanted.items()))

    def _live_bytes(self, path: str, real: set[str]) -> bytes | None:
        try:
            return self._read(path, real)
        except (OSError, Refused):
            return None

    def _store_bases(self, count: int, bases) -> int:
        """Write (hash, bytes | None) pairs whose bytes have that hash: loose blobs, or one pack of
        concatenated contents (`pack-<token>`) with its index (`pack-<token>.json`: hash → [offset,
        size]), written after the pack so an index never points into a missing pack."""
        if not count:
            return 0
        self.logbase_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        saved = 0
        if count < PACK_MIN:
            for digest, data in bases:
                if data is not None and hash_bytes(data) == digest:
                    blob = self.logbase_dir / _blob_name(digest)
                    tmp = blob.with_name(blob.name + ".tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, blob)
                    saved += 1
            return saved
        name = f"pack-{secrets.token_hex(6)}"
        tmp = self.logbase_dir / f".tmp-{name}"  # not pack-*: a leftover is pruned like a stray blob
        index = {}
        with open(tmp, "wb") as pack:
            for digest, data in bases:
                if data is not None and hash_bytes(data) == digest:
                    index[digest] = [pack.tell(), len(data)]
                    pack.write(data)
        if not index:
            tmp.unlink()
            return 0
        os.replace(tmp, self.logbase_dir / name)
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.logbase_dir / f"{name}.json")
        return len(index)

    def _packs(self) -> dict[str, tuple[str, int, int]]:
        """hash → (pack name, offset, size) for every readable pack index."""
        found: dict[str, tuple[str, int, int]] = {}
        for name, index in self._pack_indexes().items():
            for digest, (offset, size) in index.items():
                found[digest] = (name, offset, size)
        return found

    def _pack_indexes(self) -> dict[str, dict]:
        out = {}
        for idx in self.logbase_dir.glob("pack-*.json"):
            try:
                index = json.loads(idx.read_bytes())
                out[idx.name[:-5]] = {d: (int(o), int(n)) for d, (o, n) in index.items()}
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # unreadable: its bases are simply not found (prune drops it)
        return out

    def logbase(self, digest: str) -> bytes | None:
        return self.logbases([digest])[digest]

    def logbases(self, digests: list[str]) -> dict[str, bytes | None]:
        """The kept content for each hash (None where not kept), loose blobs first, then packs."""
        out: dict[str, bytes | None] = {}
        packs = None
        for digest in digests:
            try:
                out[digest] = (self.logbase_dir / _blob_name(digest)).read_bytes()
                continue
            except (OSError, ValueError):
                pass
            packs = self._packs() if packs is None else packs
            where = packs.get(digest)
            out[digest] = None if where is None else self._read_packed(*where, digest)
        return out

    def _read_packed(self, name: str, offset: int, size: int, digest: str) -> bytes | None:
        try:
            with open(self.logbase_dir / name, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except (OSError, ValueError):
            return None
        return data if hash_bytes(data) == digest else None

    def prune_logbases(self, keep: set[str]) -> int:
        """Drop the bases no ancestor refers to: loose blobs one by one; a pack when mostly
        unreferenced (its live bases are written anew first)."""
        removed = 0
        if not self.logbase_dir.is_dir():
            return 0
        indexes = self._pack_indexes()
        for blob in self.logbase_dir.iterdir():
            name = blob.name
            if name.startswith("pack-"):
                pack = name[:-5] if name.endswith(".json") else name
                if pack not in indexes:  # an unreadable index, or a pack whose index was never written
                    blob.unlink(missing_ok=True)
                continue
            if name not in keep:
                blob.unlink(missing_ok=True)
                removed += 1
        for pack, index in indexes.items():
            live = [d for d in index if d in keep]
            if len(live) * 2 >= len(index):
                continue
            self._store_bases(len(live), ((d, self._read_packed(pack, *index[d], d)) for d in live))
            (self.logbase_dir / f"{pack}.json").unlink(missing_ok=True)
            (self.logbase_dir / pack).unlink(missing_ok=True)
            removed += len(index) - len(live)
        return removed

    # -- conflicts -----------------------------------------------------------------------
    @property
    def conflicts_index(self) -> Path:
        return self.conflicts_dir / "index.json"

    def conflicts(self) -> list[dict]:
        try:
            data = read_json(self.conflicts_index, default={"conflicts": []})
        except ValueError:
            data = {"conflicts": []}
        items = data.get("conflicts") if isinstance(data, dict) else None
        return items if isinstance(items, list) else []

    def _save_conflicts(self, items: list[dict]) -> None:
        ensure_private_dir(self.conflicts_dir)
        atomic_write_json(self.conflicts_index, {"format": CONFLICTS_FORMAT, "conflicts": items})

    def _quarantine_file(self, held: Path, path: str, info: dict) -> str:
        """Move a losing version (a hard link or staged copy) into conflicts/ and index it."""
        digest = hash_file(held)
        items = self.conflicts()
        for item in items:  # the same version is kept once, however often it loses
            if item.get("path") == path and item.get("hash") == digest:
                os.unlink(held)
                return item["id"]
        cid = "c-" + secrets.token_hex(3)
        dest = internal_path(self.conflicts_dir / cid, path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(held, dest)
        size = dest.stat().st_size
        items.append({"id": cid, "path": path, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "hash": digest, "size": size, "peer": info.get("peer"),
                      "reason": info.get("reason", "conflict"), "file": str(dest.relative_to(self.root))})
        self._save_conflicts(items)
        return cid

    def reindex_conflicts(self) -> int:
        """List versions that a run moved into conflicts/ but died before indexing (under the lock)."""
        if not self.conflicts_dir.is_dir():
            return 0
        items = self.conflicts()
        known = {item.get("id") for item in items}
        added = 0
        for top in sorted(self.conflicts_dir.glob("c-*")):
            for kept in sorted(p for p in top.rglob("*") if p.is_file() and not _is_name_file(p)) if top.name not in known else ():
                st = kept.stat()
                items.append({"id": top.name, "path": internal_relpath(top, kept),
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime)),
                              "hash": hash_file(kept), "size": st.st_size, "peer": None,
                              "reason": "kept from an interrupted sync", "file": str(kept.relative_to(self.root))})
                added += 1
        if added:
            self._save_conflicts(items)
        return added

    def quarantine_copy(self, path: str, staged: Path, info: dict) -> str:
        """Keep another side's version of `path` in conflicts/ without touching the live file."""
        check_relpath(path)
        return self._quarantine_file(staged, path, info)

    def find_conflict(self, cid: str) -> dict:
        item = next((i for i in self.conflicts() if i.get("id") == cid), None)
        if item is None:
            raise Refused(f"no conflict {cid}")
        return item

    def restore_conflict(self, cid: str) -> dict:
        """Put a quarantined version back at its path; the version it replaces is quarantined in turn."""
        item = self.find_conflict(cid)
        full = self.target(item["path"])
        source = self.conflicts_dir / cid / item["path"]
        staging = self.new_staging()
        try:
            staged = staging / "restore"
            shutil.copy2(source, staged)
            os.utime(staged)  # a restore is the user's latest edit: peers must take it, not undo it
            replaced = None
            if full.exists():
                held = self._hold(full, item["path"])
                os.replace(staged, full)
                replaced = self._quarantine_file(held, item["path"], {"peer": None, "reason": f"replaced by restore of {cid}"})
                _release(held)
            else:
                full.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, full)
            fsync_dir(full.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.drop_conflict(cid)
        return {**item, "replaced_saved_as": replaced}

    def drop_conflict(self, cid: str) -> dict:
        items = self.conflicts()
        item = next((i for i in items if i.get("id") == cid), None)
        if item is None:
            raise Refused(f"no conflict {cid}")
        shutil.rmtree(self.conflicts_dir / cid, ignore_errors=True)
        self._save_conflicts([i for i in items if i.get("id") != cid])
        return item


# Internal copies (holding/, trash/, conflicts/) keep a file under its workspace path inside a
# token or batch directory, which is longer than the file's own path: a path the workspace can
# hold may be too long there.  Such a copy goes to LONG/<hash of the path> instead, with its
# path in a NAME_SUFFIX file beside it (user paths never start with LONG: it is no synced root).
LONG = "~long"
NAME_SUFFIX = ".path"
_ROOM = 4096 - 64  # PATH_MAX, less what a temp name or a later suffix may add


def internal_path(base: Path, path: str) -> Path:
    """Where `path`'s internal copy under `base` goes (see LONG)."""
    full = base / path
    if len(os.fsencode(full)) < _ROOM:
        return full
    short = base / LONG / xxhash.xxh3_64_hexdigest(path.encode("utf-8", "surrogateescape"))
    short.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(short.with_name(short.name + NAME_SUFFIX), path.encode("utf-8", "surrogateescape"))
    return short


def internal_relpath(base: Path, copy: Path) -> str:
    """The workspace path of an internal copy under `base` (the inverse of internal_path)."""
    rel = copy.relative_to(base).as_posix()
    if rel.startswith(LONG + "/"):
        try:
            return copy.with_name(copy.name + NAME_SUFFIX).read_bytes().decode("utf-8", "surrogateescape")
        except OSError:
            pass
    return rel


def _is_name_file(p: Path) -> bool:
    return p.name.endswith(NAME_SUFFIX) and p.parent.name == LONG


def _occupant(full: str) -> str:
    """Why a new file cannot be put at `full`: what is there (a permanent clash says so and how to
    end it; only a regular file that appeared meanwhile is a race)."""
    try:
        st = os.lstat(full)
    except OSError:
        return "a file was created here during the sync; left for the next sync"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link is at this name here (links are not synced); move it away to receive the file"
    if stat.S_ISDIR(st.st_mode):
        return "a folder is at this name here, a file on the other side; rename one of them"
    if not stat.S_ISREG(st.st_mode):
        return "a special file (FIFO, socket or device) is at this name here; move it away to receive the file"
    name = os.path.basename(full)
    try:
        listed = os.listdir(os.path.dirname(full) or ".")
    except OSError:
        listed = [name]
    if name not in listed:  # found under another spelling: the volume folds names
        others = [n for n in listed if os.path.samestat(os.lstat(os.path.join(os.path.dirname(full), n)), st)]
        if others:
            return (f"name clash: {others[0]!r} is here, which this file system takes for the same name; "
                    "rename one of them")
    return "a file was created here during the sync; left for the next sync"


def _file_in_the_way(root: str, parent: str) -> str:
    """Why the folder `parent` cannot be made: which of its ancestors is not a folder here."""
    cut = len(parent)
    while cut > 0:
        try:
            st = os.lstat(f"{root}/{parent[:cut]}")
            if not stat.S_ISDIR(st.st_mode):
                return f"{parent[:cut]} is a file here, a folder on the other side; rename one of them"
        except OSError:
            pass
        cut = parent.rfind("/", 0, cut)
    return f"cannot make the folder {parent} here"


def _release(held: Path) -> None:
    """Drop a holding name (if still there) with its token dir; the file keeps its other names."""
    token = held
    while token.parent.name != "holding":
        token = token.parent
    shutil.rmtree(token, ignore_errors=True)


def _blob_name(digest: str) -> str:
    if len(digest) != 32 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"bad hash {digest!r}")
    return digest


_RENAME_SWAP = 2  # RENAME_EXCHANGE (Linux renameat2) and RENAME_SWAP (macOS renamex_np) alike
_rename2 = None  # (call, no-replace flag), resolved on first use: the agent must start fast


def _rename_call():
    global _rename2
    if _rename2 is None:
        import ctypes  # lazy: loaded the first time a rename needs renameat2

        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "renameat2"):  # RENAME_NOREPLACE = 1
            fn = libc.renameat2
            _rename2 = (lambda x, y, flags: fn(-100, x, -100, y, flags), 1)  # AT_FDCWD
        elif hasattr(libc, "renamex_np"):  # RENAME_EXCL = 4
            fn = libc.renamex_np
            _rename2 = (lambda x, y, flags: fn(x, y, flags), 4)
        else:
            _rename2 = (None, 0)
    return _rename2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the files named `a` and `b`.  False where the system or the filesystem
    cannot (the caller then falls back to a plain rename)."""
    return _rename_flags(a, b, _RENAME_SWAP)


def _rename_noreplace(a: Path, b: Path) -> bool:
    """Rename `a` to `b` unless `b` exists (FileExistsError then).  False where the system or
    the filesystem cannot (the caller then falls back to link + unlink)."""
    call, flag = _rename_call()
    return call is not None and _rename_flags(a, b, flag)


def _rename_flags(a: Path, b: Path, flags: int) -> bool:
    call, _ = _rename_call()
    if call is None:
        return False
    if call(os.fsencode(a), os.fsencode(b), flags) == 0:
        return True
    import ctypes  # lazy: loaded the first time a rename needs renameat2

    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def hash_fd(fd: int, size: int) -> str:
    """The hash of everything readable from `fd` (`size`, the expected length, sizes the reads)."""
    h = xxhash.xxh3_128()
    while chunk := os.read(fd, min(size + 1, CHUNK)):
        h.update(chunk)
    return h.hexdigest()


def _read_whole(fd: int, size: int) -> bytes:
    """Everything readable from `fd`, `size` being its expected length: one read(2) when the
    file did not grow (a short read of a regular file is its end)."""
    data = os.read(fd, size + 1)
    if len(data) <= size and size < 1 << 30:
        return data
    parts = [data]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _stat_entry(full: Path | str, digest: str) -> list:
    st = os.lstat(full)
    return Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, digest).to_wire()
