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
import os
import secrets
import shutil
import time
from pathlib import Path

from peersync.paths import STATE_DIR, check_relpath
from peersync.scan import hash_bytes, hash_file
from peersync.selection import Selection
from peersync.storage import atomic_write_bytes, atomic_write_json, ensure_private_dir, fsync_dir, read_json
from peersync.types import Entry

CONFLICTS_FORMAT = 1


class Refused(Exception):
    """This one path was not applied; the message says why (becomes a Problem)."""


class Store:
    """One workspace root as seen by the apply step (used locally and by the remote agent)."""

    def __init__(self, root: Path | str, selection: Selection):
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        self.selection = selection
        self.deferred_dirs: set[Path] | None = None  # set while a batch defers directory fsyncs

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
        check_relpath(path)
        if not self.selection.contains(path):
            raise Refused(f"path outside the synced selection: {path}")
        full = self.root / path
        # Never write through a symlinked parent directory (it could point outside the root).
        parent = full.parent
        while parent != self.root:
            if parent.is_symlink():
                raise Refused(f"parent directory is a symbolic link: {parent.relative_to(self.root)}")
            parent = parent.parent
        return full

    def new_staging(self) -> Path:
        ensure_private_dir(self.staging_root)
        path = self.staging_root / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        return path

    def _fsync_dir(self, directory: Path) -> None:
        if self.deferred_dirs is None:
            fsync_dir(directory)
        else:
            self.deferred_dirs.add(directory)

    def flush_dirs(self) -> None:
        """Make a batch's renames durable: one fsync per directory touched."""
        dirs, self.deferred_dirs = self.deferred_dirs or set(), None
        for directory in dirs:
            fsync_dir(directory)

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
        try:
            st = os.lstat(staged)
        except FileNotFoundError:
            raise Refused("transferred file is missing (transfer incomplete)") from None
        if st.st_size != new.size or hash_file(staged) != new.hash:
            raise Refused("content changed on the sending side during the sync; left for the next sync")
        os.chmod(staged, new.mode or 0o644)
        os.utime(staged, ns=(st.st_atime_ns, new.mtime_ns))

    def install(self, path: str, staged: Path, *, expect: Entry | None, new: Entry,
                quarantine: dict | None = None, prepared: bool = False) -> dict:
        """Put the verified staged file at `path` if the target still holds `expect`.

        `prepared`: the caller ran prepare() and made the staged data durable (one syncfs for a
        whole batch instead of an fsync per file) — the data is on disk before any rename.
        Returns {"entry": wire entry now at path, "conflict": id | None}.  Raises Refused.
        """
        full = self.target(path)
        if not prepared:
            self.prepare(staged, new)
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
        full.parent.mkdir(parents=True, exist_ok=True)
        if expect is None:
            return {"entry": self._create(full, staged, path, new), "conflict": None}
        return self._replace(full, staged, path, expect, new, quarantine)

    def _create(self, full: Path, staged: Path, path: str, new: Entry) -> list:
        # link() fails if anything appeared at the target meanwhile: a fresh file is never clobbered.
        try:
            os.link(staged, full)
        except FileExistsError:
            raise Refused("a file was created here during the sync; left for the next sync") from None
        os.unlink(staged)
        self._fsync_dir(full.parent)
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
            _release(held)
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
        _release(held)
        return {"entry": _stat_entry(full, new.hash), "conflict": conflict}

    def _hold(self, full: Path, path: str) -> Path:
        """A second name for the inode at `full`: holding/<token>/<path>.  If we die after the
        live name was replaced, this is the version's only name; the path in it lets
        recover_holding() put it in conflicts/ rather than lose it."""
        held = self.state / "holding" / secrets.token_hex(8) / path
        ensure_private_dir(held.parent)
        try:
            os.link(full, held)
        except FileNotFoundError:
            _release(held)
            raise Refused("deleted during the sync; left for the next sync") from None
        return held

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
            for held in [p for p in token.rglob("*") if p.is_file()]:
                if os.lstat(held).st_nlink == 1:
                    self._quarantine_file(held, held.relative_to(token).as_posix(),
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
            dest = self.trash_dir / batch / path
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
        """Keep the live content of each (path, hash) whose file still has that hash."""
        saved = 0
        for path, digest in items:
            blob = self.logbase_dir / _blob_name(digest)
            if blob.exists():
                continue
            try:
                data = self.target(path).read_bytes()
            except (OSError, Refused):
                continue
            if hash_bytes(data) == digest:
                # A cache for better merges, not data: no fsync (lost → the conflict policy decides).
                self.logbase_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                tmp = blob.with_name(blob.name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, blob)
                saved += 1
        return saved

    def logbase(self, digest: str) -> bytes | None:
        try:
            return (self.logbase_dir / _blob_name(digest)).read_bytes()
        except (OSError, ValueError):
            return None

    def prune_logbases(self, keep: set[str]) -> int:
        removed = 0
        if self.logbase_dir.is_dir():
            for blob in self.logbase_dir.iterdir():
                if blob.name not in keep:
                    blob.unlink(missing_ok=True)
                    removed += 1
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
        dest = self.conflicts_dir / cid / path
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
            for kept in sorted(p for p in top.rglob("*") if p.is_file()) if top.name not in known else ():
                st = kept.stat()
                items.append({"id": top.name, "path": kept.relative_to(top).as_posix(),
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
_swap_call = None  # resolved on first use: the agent must start fast


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the files named `a` and `b`.  False where the system or the filesystem
    cannot (the caller then falls back to a plain rename)."""
    global _swap_call
    import ctypes

    if _swap_call is None:
        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "renameat2"):
            fn = libc.renameat2
            _swap_call = lambda x, y: fn(-100, x, -100, y, _RENAME_SWAP)  # AT_FDCWD
        elif hasattr(libc, "renamex_np"):
            fn = libc.renamex_np
            _swap_call = lambda x, y: fn(x, y, _RENAME_SWAP)
        else:
            _swap_call = False
    if not _swap_call:
        return False
    if _swap_call(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _stat_entry(full: Path, digest: str) -> list:
    st = os.lstat(full)
    return Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, digest).to_wire()
