"""Apply decided changes to one replica's disk: install, delete to trash, quarantine conflicts.

Invariants (the safety model lives here):
- a file is replaced only while it still holds the content that was scanned (hash checked on the
  very inode being replaced); an edit that races the rename is caught and kept as a conflict
  (written in place: through the held inode; saved anew: through an atomic swap, where the OS has one);
- a run that dies mid-way leaves nothing at a real path but whole versions, and recover_holding()
  turns a replaced-but-not-yet-quarantined version into a conflict;
- new content is verified by hash before it becomes visible, and appears by rename (atomic);
- nothing is unlinked: replaced losers go to conflicts/, deletions go to the trash;
- nothing is written, read or moved through a symbolic link: workspace directories are reached
  one component at a time from held descriptors (dirs.py), never by a path checked earlier and
  resolved again; the state dir and its subdirectories are real directories of this user
  (workspace.storage.ensure_private_dir) and are walked without following links.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path

import xxhash

from peersync.core.paths import LONG_DIR, STATE_DIR, check_relpath, flat_rel, internal_rel, long_rel, unflat
from peersync.core.selection import Selection
from peersync.core import links
from peersync.core.types import DIR, LINK, Entry
from peersync.replica import packindex, sparse
from peersync.replica.bases import MAX_BASE
from peersync.replica.dirs import AT_FDCWD, RENAME_SWAP, DirHandles, LinkInPath, noreplace_flag, remove_entry, rename_flags
from peersync.replica.scan import CHUNK, DIR_ENTRY, RACY_NS, hash_bytes, hash_file, link_entry
from peersync.workspace.storage import atomic_write_bytes, atomic_write_json, ensure_private_dir, read_json

CONFLICTS_FORMAT = 1
PACK_MIN = 16  # log bases saved at once from which one pack file holds them (see save_logbases)
STASH_MAX = 32 << 20  # bytes of stashed merge bases (stash_bases) held before they are written
PACK_BUFFER = 1 << 20  # bytes written to a pack per write(2) (_store_bases)
# In the state dir: touched by each prune of unreferenced log bases (Handler.op_housekeeping, at
# most hourly), and when the log base dir is made — it holds nothing to prune then, and a first
# sync need not read its new ancestor again to find that out (~0.3 s at 100k files, both sides).
LOGBASE_PRUNED = "logbase.pruned"
PACKS_MAX = 8  # small packs beyond which a prune combines them (prune_logbases)
PACK_FULL = STASH_MAX  # bytes from which a pack is left as it is while mostly referenced (prune_logbases)
_CONFLICT_ID = re.compile(r"c-[0-9a-f]{1,32}")
SIDECAR = ".path"  # LONG_DIR/<id>.path holds the real path of the copy LONG_DIR/<id> (core.paths.internal_rel)
FLAT = "f-"  # a holding token dir whose copies are named by core.paths.flat_rel (older ones: by their path)


class Refused(Exception):
    """This one path was not applied; the message says why (becomes a Problem)."""


class Store:
    """One workspace root as seen by the apply step (used locally and by the remote agent)."""

    def __init__(self, root: Path | str, selection: Selection):
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        self.selection = selection
        self.deferred_dirs: set[str] | None = None  # set while a batch defers directory fsyncs
        self._handles: DirHandles | None = None  # a batch's workspace directories (see _tree)
        self._private: dict[str, DirHandles] = {}  # a batch's state subtrees, by top directory
        self._checked: set[str] = set()  # state directories a batch found to be ours
        self._batch_holding: Path | None = None  # one holding token dir per batch (see _hold)
        # Merge bases taken from bytes this run read or wrote (stash_bases), written with the run's
        # logbase_save (or as the session ends) in one pack: not a pack per request, no file read back.
        self._stash: dict[str, bytes] = {}
        self._stashed = 0
        # Stat cache rows of the files install() put in place, by path: their bytes were checked
        # against the hash as they were installed, so the next scan need not read them again
        # (Handler.release hands them to the stat cache).
        self.installed: dict[str, list] = {}

    @property
    def followed(self) -> frozenset[str]:
        """The selected top directories whose link, if they are one, is followed: the user's own
        configuration (`memory/` → a cloud drive's folder), as the scan walks through it.  Only the
        top component: a link below it is synced as a link (or not at all), never followed."""
        selection = getattr(self.selection, "second", self.selection)  # a restricted key's: this side's own roots
        return frozenset(r for r in getattr(selection, "roots", ()) if "/" not in r)

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

    def check(self, path: str) -> str:
        """`path` if it is a wire path inside the selection; Refused (or BadPath) otherwise."""
        check_relpath(path)
        if not self.selection.contains(path):
            raise Refused(f"path outside the synced selection: {path}")
        return path

    def target(self, path: str) -> Path:
        """The real path for a wire path, refusing anything outside the selection or the root,
        or below a symbolic link.  For callers that go on by path (a cloud upload reading a
        file); this module itself works through directory handles."""
        self.check(path)
        with DirHandles(str(self.root), follow=self.followed) as tree:
            try:
                tree.parent(path)
            except LinkInPath as err:
                raise Refused(f"parent directory is {err.what}: {err.rel}") from None
            except FileNotFoundError:
                pass
        return self.root / path

    @contextlib.contextmanager
    def walking(self):
        """One set of workspace directory handles for a whole request (deletions, mtimes):
        each directory is opened once, not once per file."""
        if self._handles is not None:
            yield
            return
        self._handles = DirHandles(str(self.root), follow=self.followed)
        try:
            yield
        finally:
            handles, self._handles = self._handles, None
            if handles is not None:
                handles.close()

    @contextlib.contextmanager
    def _tree(self):
        """Workspace directory handles: a batch (or a `walking()` request) keeps its own until
        flush_dirs(), so 10,000 files in a few hundred directories open each directory once."""
        if self._handles is None and self.deferred_dirs is not None:
            self._handles = DirHandles(str(self.root), follow=self.followed)
        if self._handles is not None:
            yield self._handles
            return
        tree = DirHandles(str(self.root), follow=self.followed)
        try:
            yield tree
        finally:
            tree.close()

    def _parent(self, tree: DirHandles, path: str, create: bool = False) -> tuple[int, str]:
        try:
            return tree.parent(path, create)
        except LinkInPath as err:
            if err.what == "not a directory":
                raise Refused(f"{err.rel} is a file here, a folder on the other side; rename one of them") from None
            raise Refused(f"parent directory is {err.what}: {err.rel}") from None

    def open_file(self, path: str, flags: int = os.O_RDONLY) -> int:
        """A descriptor of the regular file at wire path `path`, reached without following any
        link (parents and the file itself).  The caller closes it."""
        self.check(path)
        with self._tree() as tree:
            parent, name = self._parent(tree, path)
            fd = _open_regular(parent, name, path, flags)
        return fd

    # -- the state dir ---------------------------------------------------------------------
    def _state_sub(self, name: str) -> Path:
        """state/`name`, a real directory of this user (made 0700 when missing).  Checked with
        lstat before each use — once per batch inside a batch."""
        path = self.state / name
        if name not in self._checked:
            ensure_private_dir(self.state)
            ensure_private_dir(path)
            if self.deferred_dirs is not None:
                self._checked.add(name)
        return path

    @contextlib.contextmanager
    def _private_at(self, top: str, rel: str):
        """(descriptor of the directory holding state/top/rel, its last component, the whole
        path) for the block — missing directories made 0700, none reached through a link."""
        base = self._state_sub(top)
        tree = self._private.get(top)
        temporary = tree is None and self.deferred_dirs is None
        if tree is None:
            tree = DirHandles(str(base), mode=0o700, follow_root=False)
            if not temporary:
                self._private[top] = tree
        try:
            try:
                parent, name = tree.parent(rel, create=True)
            except LinkInPath as err:
                raise Refused(f"{STATE_DIR}/{top}/{err.rel} is {err.what}; refusing to use it") from None
            yield parent, name, f"{base}/{rel}"
        finally:
            if temporary:
                tree.close()

    @contextlib.contextmanager
    def _private_copy(self, top: str, prefix: str, path: str, *, flat: bool = False):
        """_private_at for peersync's copy of wire path `path` at state/top/prefix/: under its
        own path (`flat`: as one name, core.paths.flat_rel — no folders made for it), or, when
        that is too long, under a short id with a sidecar naming the path."""
        rel = flat_rel(path) if flat else internal_rel(path)
        with self._private_at(top, f"{prefix}/{rel}") as (where, name, full):
            if rel.startswith(LONG_DIR + "/"):
                _write_sidecar(where, name, path)
            yield where, name, full

    def read(self, paths: list[str]) -> dict[str, bytes]:
        """The content of each path: a regular file, never read through a symlink."""
        with DirHandles(str(self.root), follow=self.followed) as tree:  # one request: each parent opened once
            return {path: self._read(tree, path) for path in paths}

    def _read(self, tree: DirHandles, path: str) -> bytes:
        # Opened first, then asked what it is: a plain file costs an open, a stat, a read and a
        # close (not a stat by name and a second fstat too: a fifth less time a file on tmpfs,
        # where a first sync reads every file).  A link is not followed (O_NOFOLLOW fails on it).
        self.check(path)
        parent, name = self._parent(tree, path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EMLINK):
                return os.fsencode(os.readlink(name, dir_fd=parent))  # a link's content: its target
            raise
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                return _read_whole(fd, st.st_size)
        finally:
            os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            if _special_now(parent, name) is not DIR_ENTRY:
                raise Refused(f"not a regular file: {path}")
            return b""  # an empty directory's content (scan.DIR_ENTRY)
        raise Refused(f"not a regular file: {path}")

    def new_staging(self) -> Path:
        staging = self._state_sub("staging")
        path = staging / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}"
        path.mkdir(mode=0o700)
        return path

    def _fsync_dir(self, rel: str, fd: int) -> None:
        if self.deferred_dirs is None:
            _fsync(fd)
        else:
            self.deferred_dirs.add(rel)

    def flush_dirs(self) -> None:
        """Make a batch's renames durable: one fsync per directory touched."""
        dirs, self.deferred_dirs = self.deferred_dirs or set(), None
        tree, self._handles = self._handles, None
        try:
            for rel in dirs:
                try:
                    _fsync(tree.dir(rel) if tree is not None else None)
                except (OSError, LinkInPath):
                    pass  # gone meanwhile: nothing of ours left there to make durable
        finally:
            if tree is not None:
                tree.close()
            for private in self._private.values():
                private.close()
            self._private, self._checked = {}, set()
        token, self._batch_holding = self._batch_holding, None
        if token is not None:  # only its empty dirs: a name still held is recover_holding()'s
            for here, _, _ in os.walk(token, topdown=False):
                try:
                    os.rmdir(here)
                except OSError:
                    pass

    def clear_staging(self) -> int:
        """Remove leftovers of interrupted runs (only called while holding the workspace lock)."""
        if not _lexists(self.staging_root):
            return 0
        return _clear(self._state_sub("staging"), lambda name: True)

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
        self.check(path)
        if not prepared:
            self.prepare(staged, new)
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
        with self._tree() as tree:
            parent, name = self._parent(tree, path, create=True)
            if expect is None:
                return {"entry": self._create(parent, name, staged, path, new), "conflict": None}
            return self._replace(parent, name, staged, path, expect, new, quarantine)

    def _create(self, parent: int, name: str, staged: Path | str, path: str, new: Entry) -> list:
        # A no-replace rename (or link() where the system has none) fails if anything appeared
        # at the target meanwhile: a fresh file is never clobbered.
        try:
            if not _rename_noreplace(staged, parent, name):
                os.link(staged, name, dst_dir_fd=parent)
                os.unlink(staged)
        except FileExistsError:
            raise Refused(_occupant(parent, name)) from None
        self._fsync_dir(path.rpartition("/")[0], parent)
        return self._installed_entry(parent, name, path, new)

    def _installed_entry(self, parent: int, name: str, path: str, new: Entry) -> list:
        """The wire entry of the file just installed at `path`, and its stat cache row when the
        file is still the one installed: the size and mtime given to it, an mtime older than
        the racy window (as scan.scan stores a row).  A write since would have set its mtime to now."""
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if (stat.S_ISREG(st.st_mode) and st.st_size == new.size and st.st_mtime_ns == new.mtime_ns
                and new.mtime_ns < time.time_ns() - RACY_NS):
            self.installed[path] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, new.hash]
        return Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, new.hash).to_wire()

    def _replace(self, parent: int, name: str, staged: Path, path: str, expect: Entry, new: Entry,
                 quarantine: dict | None) -> dict:
        held = self._hold(None, path, at=(parent, name))  # a second name for the inode we are about to replace
        try:
            before = os.lstat(held)
            if not stat.S_ISREG(before.st_mode):
                raise Refused("not a regular file here; left alone")
            if before.st_size != expect.size or hash_file(held) != expect.hash:
                raise Refused("edited during the sync; left for the next sync")
            # Swap rather than replace where the system can: a file saved anew (a new inode)
            # between our check and this rename then lands at `staged` instead of vanishing.
            swapped = _exchange(staged, parent, name)
            if not swapped:
                os.replace(staged, name, dst_dir_fd=parent)
        except BaseException:
            self._unhold(held)
            raise
        # The new content is live.  From here `held` is kept until the old version is where the
        # rules want it (an error leaves it for recover_holding(), never unlinked).
        self._fsync_dir(path.rpartition("/")[0], parent)
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
        return {"entry": self._installed_entry(parent, name, path, new), "conflict": conflict}

    def _hold(self, full: Path | None, path: str, at: tuple[int, str] | None = None) -> Path:
        """A second name for the inode at `path` (`at`: its directory's handle and its name,
        else found from the root): holding/f-<token>/<the path as one name> (core.paths.flat_rel).
        If we die after the live name was replaced, this is the version's only name; the path in
        it lets recover_holding() put it in conflicts/ rather than lose it.  A link at `path` is
        held as the link itself."""
        if at is None:
            with self._tree() as tree:
                return self._hold(full, path, self._parent(tree, path))
        parent, name = at
        if self.deferred_dirs is None:
            token = FLAT + os.urandom(8).hex()
        else:  # a batch shares one token dir: fewer directories made and removed per file
            if self._batch_holding is None:
                self._batch_holding = self._state_sub("holding") / (FLAT + os.urandom(8).hex())
            token = self._batch_holding.name
        # Flat: the path is the name (escaped), not folders made and removed for every file held.
        with self._private_copy("holding", token, path, flat=True) as (hold_dir, hold_name, held):
            try:
                os.link(name, hold_name, src_dir_fd=parent, dst_dir_fd=hold_dir, follow_symlinks=False)
            except FileNotFoundError:
                self._unhold(Path(held))
                raise Refused("deleted during the sync; left for the next sync") from None
        return Path(held)

    def _unhold(self, held: Path) -> None:
        """Drop a holding name; in a batch only the name (flush_dirs() removes the token dir)."""
        if self._batch_holding is not None and held.is_relative_to(self._batch_holding):
            for name in (held, held.with_name(held.name + SIDECAR)) if held.parent.name == "long" else (held,):
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
        live, trashed or quarantined files and are simply dropped.  Links are not followed.
        """
        if not _lexists(self.state / "holding"):
            return 0
        holding = self._state_sub("holding")
        count = 0
        for token in _entries(holding):
            if not token.is_dir(follow_symlinks=False):  # not ours (holding/ only ever holds token dirs)
                continue
            for held, rel in kept_files(Path(token.path), flat=token.name.startswith(FLAT)):
                if os.lstat(held).st_nlink == 1:
                    self._quarantine_file(held, rel, {"peer": None, "reason": "kept from an interrupted sync"})
                count += 1
            shutil.rmtree(token.path, ignore_errors=True)
        return count

    # -- symbolic links and empty directories (core/links.py) ---------------------------------
    def install_special(self, path: str, *, expect: Entry | None, new: Entry, data: bytes | None = None,
                        staged: Path | str | None = None, quarantine: dict | None = None) -> dict:
        """Put a link or an empty directory (`data`: the link's target, b"" for a directory) at
        `path`, or a file (`staged`) where a link or a directory is — only while the target still
        holds `expect`.  A link is made with symlink(2) in the directory reached by handles, never
        through a link; one whose target is not inside this side's selection is refused, whoever
        sent it.  The replaced version is kept in conflicts/ when `quarantine` says so."""
        self.check(path)
        if new.kind:
            if data is None or len(data) != new.size or hash_bytes(data) != new.hash:
                raise Refused("content changed on the sending side during the sync; left for the next sync")
            if new.kind == LINK and not links.inside(path, os.fsdecode(data), self.selection.contains):
                raise Refused("refused a symbolic link that points outside the synced folders")
        else:
            self.prepare(staged, new)
        with self._tree() as tree:
            parent, name = self._parent(tree, path, create=True)
            now = _special_now(parent, name)
            if now is not None and now is not _OTHER and now.same_content(new):
                return {"entry": _special_wire(parent, name, new), "conflict": None}
            if new.kind == DIR and now is _OTHER and stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                return {"entry": _special_wire(parent, name, new), "conflict": None}  # a folder with files: it is there
            if expect is None:
                if now is not None:
                    raise Refused(_occupant(parent, name))
            elif now is None:
                raise Refused("deleted during the sync; left for the next sync")
            elif now is _OTHER or not now.same_content(expect):
                raise Refused("edited during the sync; left for the next sync")
            conflict = None
            if now is not None:
                conflict = self._set_aside(tree, parent, name, path, now, quarantine)
            self._put_special(parent, name, path, new, data, staged)
            self._fsync_dir(path.rpartition("/")[0], parent)
            return {"entry": _special_wire(parent, name, new), "conflict": conflict}

    def _set_aside(self, tree: DirHandles, parent: int, name: str, path: str, now: Entry,
                   quarantine: dict | None) -> str | None:
        """Take the link, empty directory or file at `name` away so that another kind of entry
        can be put there; a loser (`quarantine`) is kept in conflicts/ (a link as its target)."""
        if now.kind == DIR:
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise Refused("a folder with files in it is here now; left for the next sync") from None
                raise
            tree.forget(path)
            return None
        held = self._hold(None, path, at=(parent, name))
        try:
            before = os.lstat(held)
            os.unlink(name, dir_fd=parent)  # `held` keeps the version
        except BaseException:
            self._unhold(held)
            raise
        if quarantine is None:
            self._unhold(held)
            return None
        if stat.S_ISLNK(before.st_mode):  # kept as a file holding its target: never followed
            copy = self.new_staging() / f".link-{os.urandom(8).hex()}"
            copy.write_bytes(os.fsencode(os.readlink(held)))
            self._unhold(held)
            return self._quarantine_file(copy, path, quarantine)
        cid = self._quarantine_file(held, path, quarantine)
        self._unhold(held)
        return cid

    def _put_special(self, parent: int, name: str, path: str, new: Entry, data: bytes | None, staged) -> None:
        try:
            if new.kind == LINK:
                os.symlink(os.fsdecode(data), name, dir_fd=parent)
            elif new.kind == DIR:
                os.mkdir(name, 0o777, dir_fd=parent)
            else:
                self._create(parent, name, staged, path, new)
        except FileExistsError:
            raise Refused(_occupant(parent, name)) from None

    # -- delete --------------------------------------------------------------------------
    def delete(self, path: str, *, expect: Entry, batch: str, keep: str | None = None) -> dict:
        """Move `path` to the trash if it still holds `expect`.  The directories that become empty
        are removed, up to `keep` (a folder the other side still has: it stays, empty or not)."""
        self.check(path)
        with self._tree() as tree:
            try:
                parent, name = self._parent(tree, path)
            except FileNotFoundError:
                raise Refused("deleted during the sync; left for the next sync") from None
            if expect.kind:
                return self._delete_special(tree, parent, name, path, expect, batch, keep)
            held = self._hold(None, path, at=(parent, name))
            try:
                before = os.lstat(held)
                if not stat.S_ISREG(before.st_mode):
                    raise Refused("not a regular file here; not deleted")
                if before.st_size != expect.size or hash_file(held) != expect.hash:
                    raise Refused("edited during the sync; not deleted")
                with self._private_copy("trash", batch, path) as (trash, trash_name, _):
                    os.rename(name, trash_name, src_dir_fd=parent, dst_dir_fd=trash)
                    moved = os.stat(trash_name, dir_fd=trash, follow_symlinks=False)
                    if (moved.st_ino, moved.st_size, moved.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
                        # Saved anew or written to between our check and the move: a fresh edit is
                        # never deleted.  Put it back unless yet another file appeared there (then
                        # it stays in the trash).
                        try:
                            os.link(trash_name, name, src_dir_fd=trash, dst_dir_fd=parent, follow_symlinks=False)
                            os.unlink(trash_name, dir_fd=trash)
                        except FileExistsError:
                            pass
                        raise Refused("edited during the sync; not deleted")
            finally:
                _release(held)
            self._prune_empty_dirs(tree, path, keep)
        return {"entry": None, "trash": f"{STATE_DIR}/trash/{batch}/{internal_rel(path)}"}

    def _delete_special(self, tree: DirHandles, parent: int, name: str, path: str, expect: Entry, batch: str,
                        keep: str | None) -> dict:
        """Delete a link (to the trash, as a link) or an empty directory (rmdir: a folder that holds
        anything now is left as it is — its content is news for the next sync, never deleted)."""
        now = _special_now(parent, name)
        if now is None:
            raise Refused("deleted during the sync; left for the next sync")
        if expect.kind == DIR:
            if now is _OTHER and stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                return {"entry": None, "kept": "the folder holds files now"}
            if now is _OTHER or not now.same_content(expect):
                raise Refused("not an empty folder here any more; not deleted")
            os.rmdir(name, dir_fd=parent)
            tree.forget(path)
            self._prune_empty_dirs(tree, path, keep)
            return {"entry": None}
        if now is _OTHER or not now.same_content(expect):
            raise Refused("edited during the sync; not deleted")
        with self._private_copy("trash", batch, path) as (trash, trash_name, _):
            os.rename(name, trash_name, src_dir_fd=parent, dst_dir_fd=trash)
        self._prune_empty_dirs(tree, path, keep)
        return {"entry": None, "trash": f"{STATE_DIR}/trash/{batch}/{internal_rel(path)}"}

    def _prune_empty_dirs(self, tree: DirHandles, path: str, keep: str | None = None) -> None:
        """Remove the now empty directories above `path`, up to (not including) its top one and
        `keep` (with its own parents)."""
        directory = path.rpartition("/")[0]
        while "/" in directory:
            if keep is not None and (keep == directory or keep.startswith(directory + "/")):
                return
            head, _, name = directory.rpartition("/")
            try:
                os.rmdir(name, dir_fd=tree.dir(head))
            except (OSError, LinkInPath):
                return
            tree.forget(directory)
            directory = head

    def purge_trash(self, days: int, now: float | None = None) -> int:
        """Drop trash batches older than `days` (batch names start with a UTC timestamp)."""
        if not _lexists(self.trash_dir):
            return 0
        cutoff = time.strftime("%Y%m%dT%H%M%S", time.gmtime((now or time.time()) - days * 86400))
        return _clear(self._state_sub("trash"), lambda name: name[:15] < cutoff)

    # -- merge bases (named log bases when only logs merged) ------------------------------
    # The content of each mergeable file (logs, memory files: mergefile.MergeRules) as of the
    # last sync, by hash, so the next merge is three-way: it sees what each side changed since.
    @property
    def logbase_dir(self) -> Path:
        return self.state / "logbase"

    def save_logbases(self, items: list[tuple[str, str]]) -> int:
        """Keep the live content of each (path, hash) whose file still has that hash.

        A cache for better merges, not data: no fsync (lost → the conflict policy decides).  A
        file per base costs a file creation each (~0.1-0.3 ms): a large save, such as the first
        sync's, goes into one pack file instead.
        """
        stash = dict(self._take_stash())
        if not stash and not items:
            return 0
        unkept = self._unkept({*stash, *(digest for _, digest in items)})
        kept = {d: data for d, data in stash.items() if d in unkept}
        wanted: dict[str, str] = {}
        for path, digest in items:
            if digest in unkept and digest not in stash and digest not in wanted:
                wanted[digest] = path
        with DirHandles(str(self.root), follow=self.followed) as tree:
            return self._store_bases(len(kept) + len(wanted), itertools.chain(
                kept.items(), ((d, self._live_bytes(tree, p)) for d, p in wanted.items())))

    def stash_bases(self, contents) -> None:
        """Contents this run read or installed that are a mergeable file's synced content: kept as
        merge bases (each under its own hash) by this run's save_logbases, which then reads none
        of them back, or when the session ends (Handler.release).  Held in memory up to STASH_MAX,
        then written.  Lost only with the process: a cache, whose miss means reading the file at
        the next save."""
        for data in contents:
            if len(data) <= MAX_BASE:
                digest = hash_bytes(data)
                if digest not in self._stash:
                    self._stash[digest] = data
                    self._stashed += len(data)
        if self._stashed > STASH_MAX:
            self.keep_bases(self._take_stash())

    def _take_stash(self) -> list[tuple[str, bytes]]:
        stash, self._stash, self._stashed = self._stash, {}, 0
        return list(stash.items())

    def keep_bases(self, items: list[tuple[str, bytes]]) -> int:
        """Keep (hash, content) pairs as merge bases (replica/bases.py); content without that hash,
        or already kept, is skipped."""
        unkept = self._unkept({d for d, _ in items})
        wanted = {d: data for d, data in items if d in unkept}
        return self._store_bases(len(wanted), wanted.items())

    def _unkept(self, digests: set[str]) -> set[str]:
        """Those of `digests` kept neither in a pack nor as a loose blob (one listing, not a stat each)."""
        packed = self._packs().holding(digests)  # (checks the log base dir first)
        try:
            loose = set(os.listdir(self.logbase_dir))
        except OSError:
            loose = set()
        return {d for d in digests if d not in packed and _blob_name(d) not in loose}

    def _live_bytes(self, tree: DirHandles, path: str) -> bytes | None:
        try:
            return self._read(tree, path)
        except (OSError, Refused, ValueError):
            return None

    def _logbase_dir(self) -> Path | None:
        """The log base dir, checked to be ours; None while there is none."""
        return self._state_sub("logbase") if _lexists(self.logbase_dir) else None

    def _store_bases(self, count: int, bases) -> int:
        """Write (hash, bytes | None) pairs whose bytes have that hash: loose blobs, or one pack of
        concatenated contents (`pack-<token>`) with its index (`pack-<token>.json`: hash → [offset,
        size]), written after the pack so an index never points into a missing pack."""
        if not count:
            return 0
        made = not _lexists(self.logbase_dir)
        self._state_sub("logbase")
        if made:
            with contextlib.suppress(OSError):
                (self.state / LOGBASE_PRUNED).touch()
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
        name = f"pack-{os.urandom(6).hex()}"
        tmp = self.logbase_dir / f".tmp-{name}"  # not pack-*: a leftover is pruned like a stray blob
        places, offset = {}, 0
        # A first sync packs every mergeable file it moves (560 MB at 100k files) a few KB at a
        # time: through a 1 MiB buffer, and counting the offset rather than asking the file (a
        # seek per base), 560 MB take 0.2 s instead of 0.35-0.5 s on tmpfs.
        with open(tmp, "wb", buffering=PACK_BUFFER) as pack:
            for digest, data in bases:
                if data is not None and hash_bytes(data) == digest:
                    places[digest] = (offset, len(data))
                    pack.write(data)
                    offset += len(data)
        if not places:
            tmp.unlink()
            return 0
        os.replace(tmp, self.logbase_dir / name)
        index = packindex.PackIndex.from_places(places)
        atomic_write_bytes(self.logbase_dir / f"{name}{packindex.SUFFIX}", index.to_bytes(), durable=False)
        return len(places)

    def _packs(self) -> packindex.Packs:
        """The packs of merge bases and their indexes (read-only: shared)."""
        return packindex.Packs(self._pack_indexes())

    def read_pack_indexes(self) -> None:
        """Read and keep the pack indexes (a keeper's warm-up): the first merge of a process that
        will sync again then looks its bases up at once."""
        self._packs()

    def _pack_indexes(self) -> dict[str, packindex.PackIndex]:
        """pack name → its index (read-only: shared).  A pack and its index never change once
        written (a new one gets a new name), so each index is read once per process, by the
        identity of its file: a kept agent or a keeper syncing again pays a stat, not a read.
        An index from an earlier version (JSON) counts where the pack has no index of this one."""
        out = {}
        if self._logbase_dir() is None:
            return out
        seen = set()
        with os.scandir(self.logbase_dir) as found:
            names = sorted((e.name for e in found if e.name.startswith("pack-")
                            and e.name.endswith((packindex.SUFFIX, packindex.LEGACY_SUFFIX))),
                           key=lambda name: name.endswith(packindex.SUFFIX))  # (this version's last: they win)
        for name in names:
            where = os.path.join(self.logbase_dir, name)
            seen.add(where)
            try:
                st = os.stat(where)
                ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                cached = _INDEXES.get(where)
                if cached is None or cached[0] != ident:
                    with open(where, "rb") as f:
                        data = f.read()
                    index = (packindex.PackIndex.parse(data) if name.endswith(packindex.SUFFIX)
                             else packindex.PackIndex.from_places(json.loads(data)))
                    cached = _INDEXES[where] = (ident, index)
                out[name[:name.rindex(".")]] = cached[1]
            except (OSError, ValueError, TypeError, AttributeError):
                _INDEXES.pop(where, None)
                continue  # unreadable: its bases are simply not found (prune drops it)
        prefix = str(self.logbase_dir) + os.sep
        for gone in [w for w in _INDEXES if w.startswith(prefix) and w not in seen]:
            del _INDEXES[gone]
        return out

    def logbase(self, digest: str) -> bytes | None:
        return self.logbases([digest])[digest]

    def logbases(self, digests: list[str]) -> dict[str, bytes | None]:
        """The kept content for each hash (None where not kept), loose blobs first, then packs."""
        out: dict[str, bytes | None] = {}
        packs = None
        if self._logbase_dir() is None:
            return {digest: self._stash.get(digest) for digest in digests}
        for digest in digests:
            if digest in self._stash:
                out[digest] = self._stash[digest]
                continue
            try:
                out[digest] = (self.logbase_dir / _blob_name(digest)).read_bytes()
                continue
            except (OSError, ValueError):
                pass
            packs = self._packs() if packs is None else packs
            out[digest] = None
            for where in packs.places(digest):
                out[digest] = self._read_packed(*where, digest)
                if out[digest] is not None:
                    break
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
        if self._logbase_dir() is None:
            return 0
        indexes = self._pack_indexes()
        names = set()
        for blob in self.logbase_dir.iterdir():
            name = blob.name
            names.add(name)
            if name.startswith("pack-"):
                pack = name.rsplit(".", 1)[0] if name.endswith((packindex.SUFFIX, packindex.LEGACY_SUFFIX)) else name
                if pack not in indexes:  # an unreadable index, or a pack whose index was never written
                    blob.unlink(missing_ok=True)
                continue
            if name not in keep:
                blob.unlink(missing_ok=True)
                removed += 1
        # A pack mostly unreferenced is written anew with its live bases; and as every sync adds a
        # small pack or two, beyond PACKS_MAX small ones they are combined into one (each lookup
        # lists and checks every index).  A full pack (PACK_FULL bytes: an initial sync writes
        # one per STASH_MAX of bases) stays as it is: combining would read and write it all again
        # for nothing, and full packs are few (one per 32 MB of live bases).
        digests = {pack: list(index.digests()) for pack, index in indexes.items()}
        rewrite = [pack for pack, held in digests.items() if sum(d in keep for d in held) * 2 < len(held)]
        small = sorted((p for p in indexes if p not in rewrite and indexes[p].total() < PACK_FULL),
                       key=lambda p: len(indexes[p]))
        if len(small) > PACKS_MAX:
            rewrite += small[:-1]
        live = {d: pack for pack in rewrite for d in digests[pack] if d in keep}
        self._store_bases(len(live), ((d, self._read_packed(pack, *indexes[pack].find(d), d)) for d, pack in live.items()))
        for pack in rewrite:
            for name in (f"{pack}{packindex.SUFFIX}", f"{pack}{packindex.LEGACY_SUFFIX}", pack):
                (self.logbase_dir / name).unlink(missing_ok=True)
            removed += sum(d not in keep for d in digests[pack])
        # A pack kept whose index an earlier version wrote (JSON, parsed whole by every process
        # that looks a base up) gets one of this version's, read as it is.
        for pack in indexes.keys() - set(rewrite):
            if f"{pack}{packindex.LEGACY_SUFFIX}" in names:
                if f"{pack}{packindex.SUFFIX}" not in names:
                    atomic_write_bytes(self.logbase_dir / f"{pack}{packindex.SUFFIX}", indexes[pack].to_bytes(),
                                       durable=False)
                (self.logbase_dir / f"{pack}{packindex.LEGACY_SUFFIX}").unlink(missing_ok=True)
        return removed

    # -- conflicts -----------------------------------------------------------------------
    @property
    def conflicts_index(self) -> Path:
        return self.conflicts_dir / "index.json"

    def conflicts(self) -> list[dict]:
        if _lexists(self.conflicts_dir):
            self._state_sub("conflicts")
        try:
            data = read_json(self.conflicts_index, default={"conflicts": []})
        except ValueError:
            data = {"conflicts": []}
        items = data.get("conflicts") if isinstance(data, dict) else None
        return items if isinstance(items, list) else []

    def _save_conflicts(self, items: list[dict]) -> None:
        self._state_sub("conflicts")
        atomic_write_json(self.conflicts_index, {"format": CONFLICTS_FORMAT, "conflicts": items})

    def _quarantine_file(self, held: Path, path: str, info: dict) -> str:
        """Move a losing version (a hard link or staged copy) into conflicts/ and index it."""
        digest = hash_file(held)
        items = self.conflicts()
        for item in items:  # the same version is kept once, however often it loses
            if item.get("path") == path and item.get("hash") == digest:
                os.unlink(held)
                return item["id"]
        cid = "c-" + os.urandom(3).hex()
        with self._private_copy("conflicts", cid, path) as (where, name, _):
            os.rename(held, name, dst_dir_fd=where)
            size = os.stat(name, dir_fd=where, follow_symlinks=False).st_size
        items.append({"id": cid, "path": path, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "hash": digest, "size": size, "peer": info.get("peer"), "reason": info.get("reason", "conflict"),
                      "file": f"{STATE_DIR}/conflicts/{cid}/{internal_rel(path)}"})
        self._save_conflicts(items)
        return cid

    def reindex_conflicts(self) -> int:
        """List versions that a run moved into conflicts/ but died before indexing (under the lock)."""
        if not _lexists(self.conflicts_dir):
            return 0
        conflicts = self._state_sub("conflicts")
        items = self.conflicts()
        known = {item.get("id") for item in items}
        added = 0
        for top in sorted(_entries(conflicts), key=lambda e: e.name):
            if not _CONFLICT_ID.fullmatch(top.name) or top.name in known or not top.is_dir(follow_symlinks=False):
                continue
            for kept, rel in sorted(kept_files(Path(top.path)), key=lambda f: f[1]):
                st = os.lstat(kept)
                items.append({"id": top.name, "path": rel,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime)),
                              "hash": hash_file(kept), "size": st.st_size, "peer": None,
                              "reason": "kept from an interrupted sync",
                              "file": f"{STATE_DIR}/conflicts/{top.name}/{internal_rel(rel)}"})
                added += 1
        if added:
            self._save_conflicts(items)
        return added

    def quarantine_copy(self, path: str, staged: Path, info: dict) -> str:
        """Keep another side's version of `path` in conflicts/ without touching the live file."""
        self.check(path)
        return self._quarantine_file(staged, path, info)

    def find_conflict(self, cid: str) -> dict:
        item = next((i for i in self.conflicts() if i.get("id") == cid), None)
        if item is None or not _CONFLICT_ID.fullmatch(str(cid)):
            raise Refused(f"no conflict {cid}")
        return item

    def conflict_bytes(self, cid: str) -> bytes:
        """The kept version of conflict `cid`, read without following links."""
        item = self.find_conflict(cid)
        check_relpath(item["path"])
        with DirHandles(str(self._state_sub("conflicts")), follow_root=False) as tree:
            parent, name = tree.parent(f"{cid}/{internal_rel(item['path'])}")
            fd = _open_regular(parent, name, item["path"], os.O_RDONLY)
        try:
            return _read_whole(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def restore_conflict(self, cid: str, merge=None) -> dict:
        """Put a quarantined version back at its path; the version it replaces is quarantined in turn.
        `merge(kept, live) -> bytes | None`: put back the kept version merged into the live one
        instead (Refused when it cannot merge them)."""
        item = self.find_conflict(cid)
        path = self.check(item["path"])
        staging = self.new_staging()
        try:
            staged = staging / "restore"
            kept = self.conflict_bytes(cid)
            staged.write_bytes(kept)
            os.chmod(staged, 0o644)
            os.utime(staged)  # a restore is the user's latest edit: peers must take it, not undo it
            replaced = None
            with self._tree() as tree:
                parent, name = self._parent(tree, path, create=True)
                if _lexists_at(parent, name):
                    mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                    if stat.S_ISREG(mode):
                        os.chmod(staged, mode & 0o777)
                        if merge is not None:
                            merged = merge(kept, self._read(tree, path))
                            if merged is None:
                                raise Refused(f"{path}: the two versions cannot be merged (not text, or not JSON)")
                            staged.write_bytes(merged)
                            os.utime(staged)
                    held = self._hold(None, path, at=(parent, name))
                    os.replace(staged, name, dst_dir_fd=parent)
                    replaced = self._quarantine_file(held, path, {"peer": None, "reason": f"replaced by restore of {cid}"})
                    _release(held)
                else:
                    os.replace(staged, name, dst_dir_fd=parent)
                _fsync(parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.drop_conflict(cid)
        return {**item, "replaced_saved_as": replaced}

    def put_back(self, path: str, source: Path, reason: str) -> str | None:
        """Put a copy of `source` (a kept version) at `path` as the newest edit: it gets the current
        time, so peers take it instead of undoing it.  A live file there is quarantined first (its id
        is returned).  As restore_conflict: through directory handles, never following a link.
        Callers hold the workspace lock."""
        path = self.check(path)
        staging = self.new_staging()
        try:
            staged = staging / "restore"
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)  # a kept version is a regular file, never a link
            with os.fdopen(fd, "rb") as src:
                st = os.fstat(src.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise Refused(f"{path}: the kept version is not a regular file")
                with open(staged, "wb") as dst:
                    sparse.copy(src.fileno(), dst.fileno(), st.st_size)  # holes stay holes
            os.chmod(staged, stat.S_IMODE(st.st_mode))
            os.utime(staged)
            replaced = None
            with self._tree() as tree:
                parent, name = self._parent(tree, path, create=True)
                if _lexists_at(parent, name):
                    held = self._hold(None, path, at=(parent, name))
                    os.replace(staged, name, dst_dir_fd=parent)
                    replaced = self._quarantine_file(held, path, {"peer": None, "reason": reason})
                    _release(held)
                else:
                    os.replace(staged, name, dst_dir_fd=parent)
                _fsync(parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return replaced

    def drop_conflict(self, cid: str) -> dict:
        items = self.conflicts()
        item = next((i for i in items if i.get("id") == cid), None)
        if item is None or not _CONFLICT_ID.fullmatch(str(cid)):
            raise Refused(f"no conflict {cid}")
        conflicts = self._state_sub("conflicts")
        fd = os.open(conflicts, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            with contextlib.suppress(FileNotFoundError):
                remove_entry(fd, cid)
        finally:
            os.close(fd)
        self._save_conflicts([i for i in items if i.get("id") != cid])
        return item


def _occupant(parent: int, name: str) -> str:
    """Why a new file cannot be put at `name` in the directory `parent`: what is there (a permanent
    clash says so and how to end it; only a regular file that appeared meanwhile is a race)."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return "a file was created here during the sync; left for the next sync"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link is at this name here; move it away to receive the file"
    if stat.S_ISDIR(st.st_mode):
        return "a folder is at this name here, a file on the other side; rename one of them"
    if not stat.S_ISREG(st.st_mode):
        return "a special file (FIFO, socket or device) is at this name here; move it away to receive the file"
    try:
        listed = os.listdir(parent)
    except OSError:
        listed = [name]
    if name not in listed:  # found under another spelling: the volume folds names
        for other in listed:
            try:
                if os.path.samestat(os.stat(other, dir_fd=parent, follow_symlinks=False), st):
                    return (f"name clash: {other!r} is here, which this file system takes for the same name; "
                            "rename one of them")
            except OSError:
                continue
    return "a file was created here during the sync; left for the next sync"


# Read pack indexes of merge bases, by index file and its identity (Store._pack_indexes).
_INDEXES: dict[str, tuple[tuple[int, int, int, int], packindex.PackIndex]] = {}

_OTHER = object()  # something at a name that no entry describes (a folder with files, a FIFO…)


def _special_now(parent: int, name: str):
    """The entry of what is at `name` in `parent` — a file, a link, an empty directory — None when
    nothing is, _OTHER for anything else.  Nothing is followed."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return link_entry(os.fsencode(os.readlink(name, dir_fd=parent)))
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                return _OTHER if os.listdir(fd) else DIR_ENTRY
            finally:
                os.close(fd)
        if stat.S_ISREG(st.st_mode):
            fd = _open_regular(parent, name, name, os.O_RDONLY)
            try:
                return Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, hash_fd(fd, st.st_size))
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None
    return _OTHER


def _special_wire(parent: int, name: str, new: Entry) -> list:
    """What install_special reports: a link's or directory's entry as sent, a file's as it is now."""
    return Entry(new.size, new.mtime_ns, new.mode, new.hash).to_wire() if new.kind else _stat_entry(parent, name, new.hash)


def _write_sidecar(where: int, name: str, path: str) -> None:
    fd = os.open(name + SIDECAR, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=where)
    with os.fdopen(fd, "wb") as f:
        f.write(path.encode("utf-8", "surrogateescape"))


def original_rel(top: Path | str, rel: str) -> str | None:
    """The wire path of the copy at `rel` below `top` (a token, batch or conflict dir); None for a
    sidecar itself.  A copy whose sidecar is missing or wrong keeps its own name: listed (and kept
    by recover_holding) under it rather than dropped."""
    if not rel.startswith(LONG_DIR + "/"):
        return rel
    if rel.endswith(SIDECAR):
        return None
    try:
        fd = os.open(os.path.join(top, rel + SIDECAR), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            path = f.read(8192).decode("utf-8", "surrogateescape")
        check_relpath(path)
    except (OSError, ValueError):
        return rel
    return path if long_rel(path) == rel else rel  # (rel is a short id: internal_rel's or flat_rel's)


def kept_files(top: Path | str, *, links: bool = False, flat: bool = False):
    """(file, its wire path) of every copy below `top` (a token, batch or conflict dir): _files
    (and links, with `links`) with each short-id copy named by its sidecar (sidecars left out);
    `flat`: copies named by core.paths.flat_rel."""
    for full, rel in _files(top, links=links):
        path = unflat(rel) if flat and "/" not in rel else original_rel(top, rel)
        if path is not None:
            yield full, path


def remove_sidecar(top: Path | str, path: str) -> None:
    """Drop the sidecar of the copy of `path` below `top`, if it has one."""
    rel = internal_rel(path)
    if rel != path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(top, rel + SIDECAR))


def _release(held: Path) -> None:
    """Drop a holding name (if still there) with its token dir; the file keeps its other names."""
    token = held
    while token.parent.name != "holding":
        token = token.parent
    shutil.rmtree(token, ignore_errors=True)


def _blob_name(digest: str) -> str:
    if type(digest) is not str or _HASH(digest) is None:
        raise ValueError(f"bad hash {digest!r}")
    return digest


# A merge base's name: its xxh3-128 in lower-case hex (one check per base a sync keeps: a C-level
# match, where a generator over the 32 characters took ~1 µs, some 90 ms of a 100k first sync).
_HASH = re.compile(r"[0-9a-f]{32}").fullmatch


def _lexists(path: Path | str) -> bool:
    try:
        os.lstat(path)
        return True
    except FileNotFoundError:
        return False


def _lexists_at(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _entries(directory: Path) -> list[os.DirEntry]:
    """The entries of a directory already checked to be ours (scandir does not follow them)."""
    with os.scandir(directory) as it:
        return list(it)


def _files(top: Path | str, *, links: bool = False):
    """(path, path relative to `top`) of every regular file below `top` (and link, with `links`),
    links not followed."""
    for here, dirs, names in os.walk(top):  # os.walk never descends through a link
        for name in names + [d for d in dirs if links and os.path.islink(os.path.join(here, d))]:
            full = os.path.join(here, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode) or (links and stat.S_ISLNK(mode)):
                yield full, os.path.relpath(full, top).replace(os.sep, "/")


def _clear(directory: Path, wanted) -> int:
    """Remove the entries of `directory` whose name is `wanted` — each whole, by descriptor,
    links removed and never followed."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    removed = 0
    try:
        for name in os.listdir(fd):
            if wanted(name):
                with contextlib.suppress(OSError):
                    remove_entry(fd, name)
                    removed += 1
    finally:
        os.close(fd)
    return removed


def _open_regular(parent: int, name: str, path: str, flags: int) -> int:
    """`name` in `parent` opened with `flags`, refused unless it is a regular file (a link is
    not followed)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK):
            raise Refused(f"not a regular file: {path}") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"not a regular file: {path}")
    return fd


def _fsync(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass


def _exchange(a: Path | str, parent: int, name: str) -> bool:
    """Atomically swap the file named `a` and `name` in directory `parent`.  False where the
    system or the filesystem cannot (the caller then falls back to a plain rename)."""
    return rename_flags(AT_FDCWD, os.fspath(a), parent, name, RENAME_SWAP)


def _rename_noreplace(a: Path | str, parent: int, name: str) -> bool:
    """Rename `a` to `name` in directory `parent` unless that exists (FileExistsError then).
    False where the system or the filesystem cannot (the caller then falls back to link + unlink)."""
    return rename_flags(AT_FDCWD, os.fspath(a), parent, name, noreplace_flag())


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


def _stat_entry(parent: int, name: str, digest: str) -> list:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    return Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, digest).to_wire()
