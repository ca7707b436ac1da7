"""Mac-like volumes on Linux for tests: FUSE passthrough file systems that fold names as APFS and HFS+ do.

A volume mirrors a private backing directory.  Names are looked up, created and listed the way a
Mac volume does it, according to its profile:

| profile    | case            | Unicode normalisation                  | holes | models                         |
|------------|-----------------|----------------------------------------|-------|--------------------------------|
| `apfs`     | insensitive     | insensitive, preserving (stored as given) | yes | APFS as macOS formats it (default) |
| `hfs`      | insensitive     | stored NFD (HFS+'s variant of it)      | no    | HFS+, "Mac OS Extended (Journaled)" |
| `casefold` | insensitive     | sensitive (NFC and NFD are two names)  | yes   | case alone, to isolate it in tests  |
| `nfd`      | sensitive       | stored NFD                             | no    | HFSX (case-sensitive HFS+): normalisation alone |

Every profile preserves case (a name is stored as it was created, NFD aside), refuses to create a
name that folds to an existing one (EEXIST), finds an entry under any folded spelling, renames
case-only (and normalisation-only) changes in place, refuses names that are not valid UTF-8
(EILSEQ, as APFS and HFS+ do), and supports symlinks, hard links of files, permission bits,
timestamps in nanoseconds, RENAME_NOREPLACE and RENAME_EXCHANGE (macOS: RENAME_EXCL, RENAME_SWAP).
Where Apple's tables differ from Python's the fold is Python's: `str.casefold` (full Unicode case
folding, so "ß" meets "ss") of the canonical decomposition; HFS+ leaves U+2000–U+2FFF, U+F900–U+FAFF
and U+2F800–U+2FAFF undecomposed, as here.  `hfs` and `nfd` keep no holes, as HFS+ cannot: a
file's blocks are reported fully allocated and SEEK_HOLE finds none (the backing file itself
stays sparse, to spare the test disk).  readdir lists HFS+ volumes in folded order and APFS
ones in the backing directory's order (APFS lists in hash order).  Extended attributes are not
supported (ENOTSUP); flock and POSIX locks are the kernel's own (local to this machine).  One
known difference: fstat(2) of a file unlinked while open fails (ENOENT) when it was unlinked
under another spelling than the one it was opened with (libfuse counts opens per spelling);
read, write and the rest keep working, and under the same spelling fstat does too.

How: libfuse 3's high-level API through mfusepy (ctypes), single-threaded, with `use_ino` (stat
shows the backing inode, so every spelling of a name reports the same st_ino, as on a Mac) and
every kernel cache timeout zero.  The kernel gives each spelling its own node, which is what
lets a case-only rename reach the file system at all (the VFS drops a rename whose source and
target are one inode); with zero timeouts no spelling can outlive a change made through
another.  Paths are resolved component by component through a per-directory map from folded
key to stored name, built from the backing directory on first use and kept up to date by
every operation, so the backing directory must not be changed behind the mount's back.  Open
files are served through their backing file descriptor (read, write, fsync, fstat, ftruncate,
fchmod, futimens) without any path lookup.

`mounted(profile, backing, mountpoint)` runs a volume in a child process (`python -m
peersync.testing.fusefs PROFILE BACKING MOUNTPOINT`), returns once the kernel lists the mount, and
always unmounts it again (fusermount3 -u, lazily if busy; the server is killed if it hangs).
"""

from __future__ import annotations

# Lazy imports: libfuse (mfusepy, ctypes) loads only in the child process that serves a volume,
# so that importing this module for its constants or `mounted()` costs nothing.
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# libfuse names a file that is unlinked while open ".fuse_hidden…" (renamed, then unlinked on its last
# close), so that fstat(2) on it keeps working; we keep such files in UNLINKED, out of every listing.
HIDDEN_PREFIX = ".fuse_hidden"
UNLINKED = ".peersync-fuse-unlinked"  # reserved in the backing directory's root
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


@dataclass(frozen=True)
class Profile:
    """How one kind of volume treats names and holes."""

    name: str
    case_sensitive: bool
    normalization: str  # "sensitive" | "insensitive" (APFS: preserved, found in any form) | "nfd" (HFS+: stored NFD)
    sparse: bool  # holes are kept and SEEK_HOLE/SEEK_DATA find them
    models: str

    @property
    def folds(self) -> bool:
        """Whether two different stored names can be one entry (so lookups need the fold map)."""
        return not self.case_sensitive or self.normalization == "insensitive"

    def stored_name(self, name: str) -> str:
        """The name an entry created as `name` is stored (and listed) under."""
        return hfs_decompose(name) if self.normalization == "nfd" else name

    def key(self, name: str) -> str:
        """Two names are one entry exactly when their keys are equal."""
        if self.normalization == "nfd":
            name = hfs_decompose(name)
        elif self.normalization == "insensitive" and not name.isascii():
            name = unicodedata.normalize("NFD", name)
        if not self.case_sensitive:
            name = name.casefold()
            if self.normalization != "sensitive" and not name.isascii():
                # casefold may compose (or change) what was decomposed: decompose again
                name = unicodedata.normalize("NFD", name)
        return name


PROFILES: dict[str, Profile] = {
    p.name: p for p in (
        Profile("apfs", case_sensitive=False, normalization="insensitive", sparse=True,
                models="APFS, case-insensitive (macOS's default volume)"),
        Profile("hfs", case_sensitive=False, normalization="nfd", sparse=False,
                models="HFS+ (Mac OS Extended, Journaled)"),
        Profile("casefold", case_sensitive=False, normalization="sensitive", sparse=True,
                models="case-insensitive, case-preserving only (isolates case folding)"),
        Profile("nfd", case_sensitive=True, normalization="nfd", sparse=False,
                models="HFSX, case-sensitive HFS+ (isolates NFD storage)"),
    )
}

# HFS+ decomposes per Unicode 3.2 and leaves these ranges alone (Apple TN1150).
_HFS_UNDECOMPOSED = ((0x2000, 0x2FFF), (0xF900, 0xFAFF), (0x2F800, 0x2FAFF))


def hfs_decompose(name: str) -> str:
    """`name` in the decomposed form HFS+ stores: NFD, except in the ranges HFS+ leaves alone."""
    if name.isascii():
        return name
    if not any(lo <= ord(c) <= hi for c in name for lo, hi in _HFS_UNDECOMPOSED):
        return unicodedata.normalize("NFD", name)
    out, run = [], []
    for c in name:
        if any(lo <= ord(c) <= hi for lo, hi in _HFS_UNDECOMPOSED):
            out.append(unicodedata.normalize("NFD", "".join(run)))
            out.append(c)
            run = []
        else:
            run.append(c)
    out.append(unicodedata.normalize("NFD", "".join(run)))
    return "".join(out)


def _valid_utf8(name: str) -> bool:
    """Paths reach us decoded with surrogateescape: a lone surrogate is a byte that was not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fail(code: int):
    raise OSError(code, os.strerror(code))


# ------------------------------------------------------------------------------------------
# The file system (runs in the server process)
# ------------------------------------------------------------------------------------------

class MacVolume:
    """The operations of one volume over `backing`, keyed by FUSE paths ("/a/B.md").

    Invariant: for every directory in `_maps`, the map holds exactly the backing directory's
    entries, as {profile.key(stored name): stored name}.  Every operation that adds, removes or
    renames an entry updates the maps of the directories it touches before returning.
    """

    use_ns = True  # mfusepy: timestamps in integer nanoseconds
    # mfusepy sets libfuse's nullpath_ok from these two: operations on an open file get its handle
    # and no path (libfuse then computes none), which also keeps working after an unlink.
    flag_nopath = True
    flag_nullpath_ok = True

    def __init__(self, profile: Profile, backing: str):
        self.profile = profile
        self.root = os.path.realpath(backing)
        self._maps: dict[str, dict[str, str]] = {}
        self._root_uid = os.geteuid() == 0
        self._root_fds: set[int] = set()  # open handles of the root directory (its listing hides UNLINKED)
        os.makedirs(self._abs(UNLINKED), exist_ok=True)

    # -- names ---------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _map(self, rel: str) -> dict[str, str]:
        entries = self._maps.get(rel)
        if entries is None:
            names = os.listdir(self._abs(rel))
            entries = {}
            for name in sorted(names):  # a clash in a pre-filled backing dir: the first name wins
                if rel or name != UNLINKED:
                    entries.setdefault(self.profile.key(name), name)
            self._maps[rel] = entries
        return entries

    def _find(self, parent: str, name: str) -> str | None:
        """The stored name in backing dir `parent` that `name` is a spelling of, or None."""
        if not self.profile.folds:  # lookups are exact once the name is in its stored form
            if not parent and name == UNLINKED:
                return None
            stored = self.profile.stored_name(name)
            return stored if os.path.lexists(f"{self._abs(parent)}/{stored}") else None
        return self._map(parent).get(self.profile.key(name))

    def _resolve(self, path: str) -> str:
        """The backing path (relative) of the existing entry `path` names; ENOENT if none."""
        leaf = path.rpartition("/")[2]
        if leaf.startswith(HIDDEN_PREFIX):
            return f"{UNLINKED}/{leaf}"
        rel = ""
        for component in path.split("/"):
            if not component:
                continue
            stored = self._find(rel, component)
            if stored is None:
                _fail(errno.ENOENT)
            rel = f"{rel}/{stored}" if rel else stored
        return rel

    def _split(self, path: str) -> tuple[str, str, str | None]:
        """(backing parent, leaf as given, stored name of an existing entry with that key or None)."""
        head, _, leaf = path.rstrip("/").rpartition("/")
        parent = self._resolve(head)
        return parent, leaf, self._find(parent, leaf)

    def _new_name(self, leaf: str) -> str:
        if not _valid_utf8(leaf):
            _fail(errno.EILSEQ)  # APFS and HFS+ accept only valid UTF-8 names
        return self.profile.stored_name(leaf)

    def _added(self, parent: str, stored: str) -> None:
        if parent in self._maps:
            self._maps[parent][self.profile.key(stored)] = stored

    def _removed(self, parent: str, stored: str) -> None:
        entries = self._maps.get(parent)
        if entries is not None and entries.get(self.profile.key(stored)) == stored:
            del entries[self.profile.key(stored)]

    def _moved_tree(self, old: str, new: str | None) -> None:
        """Cached maps of directory `old` and below now live under `new` (None: gone)."""
        prefix = old + "/"
        for rel in [r for r in self._maps if r == old or r.startswith(prefix)]:
            entries = self._maps.pop(rel)
            if new is not None:
                self._maps[new + rel[len(old):]] = entries

    def _chown_new(self, full: str) -> None:
        """Give a new entry to the caller, as the kernel would (we create everything as ourselves)."""
        if not self._root_uid:
            return
        from mfusepy import fuse_get_context

        uid, gid, _ = fuse_get_context()
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.chown(full, uid, gid, follow_symlinks=False)

    # -- metadata -------------------------------------------------------------------------
    def stat(self, path: str | None, fh: int | None) -> tuple[os.stat_result, int, int]:
        """(stat of the backing entry, its link count, its 512-byte blocks) as the volume shows them."""
        if fh is not None:
            st = os.fstat(fh)
            return st, st.st_nlink, self._blocks(st)
        rel = self._resolve(path)
        st = os.lstat(self._abs(rel))
        # an unlinked file that is still open has no link left (UNLINKED's own is ours)
        nlink = st.st_nlink - 1 if rel.startswith(UNLINKED + "/") else st.st_nlink
        return st, nlink, self._blocks(st)

    def _blocks(self, st: os.stat_result) -> int:
        if self.profile.sparse or not stat.S_ISREG(st.st_mode):
            return st.st_blocks
        return -(-st.st_size // 4096) * 8  # HFS+ allocates every block of a file

    def readlink(self, path: str) -> str:
        return os.readlink(self._abs(self._resolve(path)))

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        if fh is not None:
            os.fchmod(fh, stat.S_IMODE(mode))
        else:
            os.chmod(self._abs(self._resolve(path)), stat.S_IMODE(mode))
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        if fh is not None:
            os.fchown(fh, uid, gid)
        else:
            os.chown(self._abs(self._resolve(path)), uid, gid, follow_symlinks=False)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._abs(self._resolve(path)), length)
        return 0

    def set_times(self, path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None,
                  fh: int | None = None) -> int:
        """utimensat(2)'s semantics: `times` is ((sec, nsec) atime, mtime) with UTIME_NOW and
        UTIME_OMIT honoured, None for both now."""
        target = fh if fh is not None else self._abs(self._resolve(path))
        now = time.time_ns()
        if times is None:
            ns = (now, now)
        else:
            current = None
            ns_list = []
            for i, (sec, nsec) in enumerate(times):
                if nsec == _UTIME_NOW:
                    ns_list.append(now)
                elif nsec == _UTIME_OMIT:
                    if current is None:
                        current = os.stat(target, follow_symlinks=False) if fh is None else os.fstat(fh)
                    ns_list.append(current.st_atime_ns if i == 0 else current.st_mtime_ns)
                else:
                    ns_list.append(sec * 1_000_000_000 + nsec)
            ns = (ns_list[0], ns_list[1])
        if fh is not None:
            os.utime(fh, ns=ns)
        else:
            os.utime(target, ns=ns, follow_symlinks=False)
        return 0

    def statfs(self, path: str) -> dict:
        sv = os.statvfs(self.root)
        return {key: getattr(sv, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_namemax")}

    # -- namespace ------------------------------------------------------------------------
    def _create_entry(self, path: str, make) -> str:
        """Create the entry `path` names with `make(backing path)`; its backing path (relative)."""
        parent, leaf, existing = self._split(path)
        stored = self._new_name(leaf)
        if existing is not None:
            _fail(errno.EEXIST)
        full = f"{self._abs(parent)}/{stored}"
        make(full)
        self._added(parent, stored)
        self._chown_new(full)
        return f"{parent}/{stored}" if parent else stored

    def mkdir(self, path: str, mode: int) -> int:
        rel = self._create_entry(path, lambda full: os.mkdir(full, mode))
        self._maps[rel] = {}  # known to be empty: no listdir when it is first used
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        self._create_entry(path, lambda full: os.mknod(full, mode, dev))
        return 0

    def symlink(self, path: str, target: str) -> int:
        self._create_entry(path, lambda full: os.symlink(target, full))
        return 0

    def link(self, path: str, existing: str) -> int:
        source = self._abs(self._resolve(existing))
        self._create_entry(path, lambda full: os.link(source, full, follow_symlinks=False))
        return 0

    def unlink(self, path: str) -> int:
        if path.rpartition("/")[2].startswith(HIDDEN_PREFIX):  # its last close
            os.unlink(self._abs(self._resolve(path)))
            return 0
        parent, _, stored = self._split(path)
        if stored is None:
            _fail(errno.ENOENT)
        os.unlink(f"{self._abs(parent)}/{stored}")
        self._removed(parent, stored)
        return 0

    def rmdir(self, path: str) -> int:
        parent, _, stored = self._split(path)
        if stored is None:
            _fail(errno.ENOENT)
        os.rmdir(f"{self._abs(parent)}/{stored}")
        self._removed(parent, stored)
        self._moved_tree(f"{parent}/{stored}" if parent else stored, None)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            _fail(errno.EINVAL)
        src_parent, _, src = self._split(old)
        if src is None:
            _fail(errno.ENOENT)
        if new.rpartition("/")[2].startswith(HIDDEN_PREFIX):  # unlinked while open: out of sight
            os.rename(self._abs(f"{src_parent}/{src}" if src_parent else src), self._abs(self._resolve(new)))
            self._removed(src_parent, src)
            return 0
        dst_parent, leaf, existing = self._split(new)
        wanted = self._new_name(leaf)
        src_rel = f"{src_parent}/{src}" if src_parent else src
        src_full = self._abs(src_rel)
        dst_dir = self._abs(dst_parent)
        join = (lambda p, n: f"{p}/{n}" if p else n)
        if flags & RENAME_EXCHANGE:
            if existing is None:
                _fail(errno.ENOENT)
            _renameat2(src_full, f"{dst_dir}/{existing}", RENAME_EXCHANGE)
            # both names stay; whatever was cached below either of them changed places
            self._moved_tree(src_rel, None)
            self._moved_tree(join(dst_parent, existing), None)
            return 0
        same_entry = existing is not None and dst_parent == src_parent and existing == src
        if existing is not None and not same_entry:
            if flags & RENAME_NOREPLACE:
                _fail(errno.EEXIST)
            if os.path.samestat(os.lstat(src_full), os.lstat(f"{dst_dir}/{existing}")):
                return 0  # two links to one file: rename(2) does nothing
            # Over the existing entry (the backing rename checks types and emptiness), then to the
            # new spelling: a Mac keeps the name the rename gave.
            os.rename(src_full, f"{dst_dir}/{existing}")
            self._removed(src_parent, src)
            self._moved_tree(join(dst_parent, existing), None)
            if existing != wanted:
                os.rename(f"{dst_dir}/{existing}", f"{dst_dir}/{wanted}")
                self._removed(dst_parent, existing)
        elif same_entry and existing == wanted:
            return 0
        else:  # a new name, or a new spelling of the same entry (case- or normalisation-only)
            os.rename(src_full, f"{dst_dir}/{wanted}")
            self._removed(src_parent, src)
        self._added(dst_parent, wanted)
        self._moved_tree(src_rel, join(dst_parent, wanted))
        return 0

    # -- files ----------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        return os.open(self._abs(self._resolve(path)), flags & ~(os.O_CREAT | os.O_EXCL))

    def create(self, path: str, mode: int, flags: int) -> int:
        parent, leaf, existing = self._split(path)
        if existing is not None:
            # The kernel looked the name up first, so this is a race at most: behave as open(2)
            if flags & os.O_EXCL:
                _fail(errno.EEXIST)
            return os.open(f"{self._abs(parent)}/{existing}", flags & ~os.O_CREAT)
        stored = self._new_name(leaf)
        full = f"{self._abs(parent)}/{stored}"
        fd = os.open(full, flags | os.O_CREAT | os.O_EXCL, mode)
        self._added(parent, stored)
        self._chown_new(full)
        return fd

    def read(self, path, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh: int) -> int:
        return 0

    def release(self, path, fh: int) -> int:
        os.close(fh)
        return 0

    def fsync(self, path, datasync: int, fh: int) -> int:
        (os.fdatasync if datasync else os.fsync)(fh)
        return 0

    def seek(self, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA / SEEK_HOLE (the kernel does the other kinds itself)."""
        if not self.profile.sparse:
            _fail(errno.ENOSYS)  # the kernel then treats the whole file as data, as on HFS+
        return os.lseek(fh, offset, whence)

    # -- directories ----------------------------------------------------------------------
    def opendir(self, path: str) -> int:
        rel = self._resolve(path)
        fd = os.open(self._abs(rel), os.O_RDONLY | os.O_DIRECTORY)
        if not rel:
            self._root_fds.add(fd)
        return fd

    def readdir(self, path, fh: int):
        os.lseek(fh, 0, os.SEEK_SET)  # scandir works on a duplicate that shares the offset
        entries = [(".", stat.S_IFDIR, 0), ("..", stat.S_IFDIR, 0)]
        with os.scandir(fh) as it:
            for e in it:
                if e.name == UNLINKED and fh in self._root_fds:
                    continue
                if e.is_dir(follow_symlinks=False):
                    kind = stat.S_IFDIR
                elif e.is_file(follow_symlinks=False):
                    kind = stat.S_IFREG
                elif e.is_symlink():
                    kind = stat.S_IFLNK
                else:
                    kind = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode)
                entries.append((e.name, kind, e.inode()))
        if self.profile.normalization == "nfd":  # HFS+ lists in catalog (folded) order
            entries[2:] = sorted(entries[2:], key=lambda e: self.profile.key(e[0]))
        return [(name, {"st_mode": kind, "st_ino": ino}, 0) for name, kind, ino in entries]

    def releasedir(self, path, fh: int) -> int:
        self._root_fds.discard(fh)
        os.close(fh)
        return 0

    def fsyncdir(self, path, datasync: int, fh: int) -> int:
        os.fsync(fh)
        return 0

    def init(self, path) -> None:
        return None

    def destroy(self, path) -> None:
        return None


_libc_renameat2 = None


def _renameat2(src: str, dst: str, flags: int) -> None:
    global _libc_renameat2
    import ctypes

    if _libc_renameat2 is None:
        _libc_renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    if _libc_renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:  # AT_FDCWD
        _fail(ctypes.get_errno())


def serve(profile: Profile, backing: str, mountpoint: str) -> None:
    """Mount and serve until unmounted or signalled (SIGTERM, SIGINT: libfuse unmounts)."""
    # libfuse 3, whichever libfuse 2 may also be installed (mfusepy would take "fuse" first)
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import ctypes

    import mfusepy

    class Binding(mfusepy.FUSE):
        """mfusepy's wrappers, except where they drop what a faithful volume needs: rename flags,
        the file handle of setattr calls, UTIME_NOW/UTIME_OMIT, SEEK_DATA/SEEK_HOLE, and a stat
        filled straight from os.stat_result."""

        def _path(self, path):
            return None if path is None else path.decode(self.encoding, self.errors)

        @staticmethod
        def _fh(fip):
            return fip.contents.fh if fip else None

        def getattr_fuse_3(self, path, buf, fip):
            st, nlink, blocks = self.operations.stat(self._path(path), self._fh(fip))
            ctypes.memset(buf, 0, ctypes.sizeof(mfusepy.c_stat))
            c = buf.contents
            c.st_mode, c.st_ino, c.st_nlink = st.st_mode, st.st_ino, nlink
            c.st_uid, c.st_gid, c.st_rdev = st.st_uid, st.st_gid, st.st_rdev
            c.st_size, c.st_blksize, c.st_blocks = st.st_size, st.st_blksize, blocks
            c.st_atimespec.tv_sec, c.st_atimespec.tv_nsec = divmod(st.st_atime_ns, 1_000_000_000)
            c.st_mtimespec.tv_sec, c.st_mtimespec.tv_nsec = divmod(st.st_mtime_ns, 1_000_000_000)
            c.st_ctimespec.tv_sec, c.st_ctimespec.tv_nsec = divmod(st.st_ctime_ns, 1_000_000_000)
            return 0

        def rename_fuse_3(self, old, new, flags):
            return self.operations.rename(self._path(old), self._path(new), flags)

        def chmod_fuse_3(self, path, mode, fip):
            return self.operations.chmod(self._path(path), mode, self._fh(fip))

        def chown_fuse_3(self, path, uid, gid, fip):
            uid = -1 if mfusepy.c_uid_t(uid + 1).value == 0 else uid
            gid = -1 if mfusepy.c_gid_t(gid + 1).value == 0 else gid
            return self.operations.chown(self._path(path), uid, gid, self._fh(fip))

        def truncate_fuse_3(self, path, length, fip):
            return self.operations.truncate(self._path(path), length, self._fh(fip))

        def utimens_fuse_3(self, path, buf, fip):
            times = None
            if buf:
                t = buf.contents
                times = ((t.actime.tv_sec, t.actime.tv_nsec), (t.modtime.tv_sec, t.modtime.tv_nsec))
            return self.operations.set_times(self._path(path), times, self._fh(fip))

        def lseek(self, path, offset, whence, fip):
            return self.operations.seek(fip.contents.fh, offset, whence)

    volume = MacVolume(profile, backing)
    volume.lseek = volume.seek  # mfusepy registers a callback per attribute the operations have
    volume.utimens = volume.set_times
    volume.getattr = volume.stat
    os.umask(0)  # the kernel already applied the caller's umask to every mode it sends
    options = dict(foreground=True, nothreads=True, fsname=f"peersync-{profile.name}",
                   subtype=f"peersync-{profile.name}", default_permissions=True,
                   use_ino=True,
                   entry_timeout=0, attr_timeout=0, negative_timeout=0)
    if os.geteuid() == 0:
        options["allow_other"] = True  # the agent over SSH may be another user one day
    Binding(volume, mountpoint, **options)


# ------------------------------------------------------------------------------------------
# Mounting from tests
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Volume:
    """A mounted volume: `path` is the mount point, `backing` the directory it mirrors."""

    path: Path
    backing: Path
    profile: Profile


class FuseUnavailable(RuntimeError):
    """This machine cannot mount FUSE file systems; the message says why."""


class MountError(RuntimeError):
    """The volume did not come up; the message carries the server's log."""


def fuse_unavailable() -> str | None:
    """Why FUSE cannot be mounted here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as err:
        return f"/dev/fuse cannot be opened: {err.strerror}"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "not root and no fusermount3 (Debian package fuse3)"
    return None


def _mount_line(mountpoint: str) -> str | None:
    """This mount point's line of /proc/self/mountinfo (read without touching the mount itself)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):  # the last one mounted there is on top
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == mountpoint:
            return line
    return None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _is_ours(mountpoint: str) -> bool:
    line = _mount_line(mountpoint)
    return line is not None and " - fuse.peersync-" in line


def _run_quietly(cmd: list[str], timeout: float) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _unmount(mountpoint: str, lazy: bool, timeout: float = 10.0) -> bool:
    if shutil.which("fusermount3"):
        return _run_quietly(["fusermount3", "-u", *(["-z"] if lazy else []), "--", mountpoint], timeout)
    return _run_quietly(["umount", *(["-l"] if lazy else []), mountpoint], timeout)


def _log_tail(log: Path, limit: int = 4000) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:].strip() or "(empty log)"


@contextmanager
def mounted(profile: str | Profile, backing: Path | str, mountpoint: Path | str, *,
            timeout: float = 30.0) -> Iterator[Volume]:
    """Mount a volume of `profile` mirroring `backing` at `mountpoint` (both created if needed);
    unmount it on the way out, whatever happened inside."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
        profile = PROFILES[profile]
    reason = fuse_unavailable()
    if reason:
        raise FuseUnavailable(reason)
    backing, mountpoint = Path(backing).absolute(), Path(mountpoint).absolute()
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    where = os.path.realpath(mountpoint)
    log = mountpoint.with_name(mountpoint.name + ".fuse.log")
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "peersync.testing.fusefs", profile.name, str(backing), where],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _is_ours(where):
            if server.poll() is not None:
                raise MountError(f"the {profile.name} volume at {where} did not mount "
                                 f"(server exited {server.returncode}): {_log_tail(log)}")
            if time.monotonic() > deadline:
                raise MountError(f"the {profile.name} volume at {where} did not mount within "
                                 f"{timeout:.0f} s: {_log_tail(log)}")
            time.sleep(0.01)
        yield Volume(path=mountpoint, backing=backing, profile=profile)
    finally:
        _stop(server, where)


def _stop(server: subprocess.Popen, where: str) -> None:
    """Unmount (lazily if something still uses the mount), then make sure the server is gone
    and nothing is left mounted there, even when the server hung or died."""
    if _is_ours(where) and not _unmount(where, lazy=False):
        # Busy (or a hung server): detach it now.  The server would serve whoever still holds
        # it for as long as they do, so end it; they get ENOTCONN from then on.
        _unmount(where, lazy=True)
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()  # aborts the FUSE connection: nothing can hang on it any more
        server.wait()
    if _is_ours(where):
        _unmount(where, lazy=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in PROFILES:
        print(f"usage: python -m peersync.testing.fusefs {{{'|'.join(PROFILES)}}} BACKING MOUNTPOINT",
              file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    serve(PROFILES[argv[0]], argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
