"""Directory handles: reach, create and rename below a root one component at a time, never through a link.

A path that is checked and then used again by name can be redirected in between (a directory
swapped for a symbolic link).  Here each directory is opened from its already-open parent with
O_NOFOLLOW, and files are opened, linked, renamed and removed relative to that descriptor: what
was checked is what is written.  A directory moved elsewhere after it was opened is still the
same directory (rename needs write access to where it lands), never a place a link points to.
"""

from __future__ import annotations

import collections
import errno
import os
import stat

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
AT_FDCWD = -100
KEEP_OPEN = 64  # descriptors one DirHandles keeps (least recently used closed first): macOS allows 256


class LinkInPath(OSError):
    """A component of a path is a symbolic link or not a directory (`rel` names it)."""

    def __init__(self, rel: str, what: str):
        super().__init__(errno.ELOOP, f"{what}: {rel}")
        self.rel, self.what = rel, what


class DirHandles:
    """Open directories below `root`, by relative path ("" is the root itself).

    `root` is opened as given (it is the user's own setting, and may sit below a link such as
    /tmp → /private/tmp) unless `follow_root` is False; so are the top-level names in `follow` (the
    selected top directories: a `memory/` that is a link to a cloud drive's folder is the user's
    own setting too, and only a link to a directory is followed); every other component is opened
    with O_NOFOLLOW.  `create` makes missing directories with `mode` (the umask applies)."""

    def __init__(self, root: str, *, mode: int = 0o777, follow_root: bool = True, follow: frozenset[str] = frozenset()):
        self.root, self.mode, self.follow_root, self.follow = str(root), mode, follow_root, follow
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()

    def dir(self, rel: str, create: bool = False) -> int:
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        if rel == "":
            flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
            if create and self.follow_root:
                os.makedirs(self.root, exist_ok=True)
            fd = os.open(self.root, flags if self.follow_root else O_DIR)
        elif rel in self.follow:
            fd = open_top(self.dir("", create), rel, create=create, mode=self.mode)
        else:
            parent_rel, _, name = rel.rpartition("/")
            fd = open_dir(self.dir(parent_rel, create), name, rel, create=create, mode=self.mode)
        self._fds[rel] = fd
        while len(self._fds) > KEEP_OPEN:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def parent(self, path: str, create: bool = False) -> tuple[int, str]:
        """(descriptor of the directory holding `path`, its last component)."""
        head, _, name = path.rpartition("/")
        return self.dir(head, create), name

    def forget(self, rel: str) -> None:
        """Drop a handle (its directory was removed)."""
        fd = self._fds.pop(rel, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __enter__(self) -> "DirHandles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dir(parent: int, name: str, rel: str, *, create: bool = False, mode: int = 0o777) -> int:
    """The directory `name` in `parent`, never through a link; made when missing and `create`."""
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise _link_error(parent, name, rel) from None
        raise
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        pass
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise _link_error(parent, name, rel) from None
        raise


def open_top(root: int, name: str, *, create: bool = False, mode: int = 0o777) -> int:
    """A selected top directory of the root, through a link if it is one (DirHandles `follow`)."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0), dir_fd=root)
    except FileNotFoundError:
        if not create:
            raise
    except NotADirectoryError:
        raise _link_error(root, name, name) from None
    return open_dir(root, name, name, create=True, mode=mode)


def _link_error(parent: int, name: str, rel: str) -> LinkInPath:
    try:
        link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        link = False
    return LinkInPath(rel, "a symbolic link" if link else "not a directory")


def remove_entry(parent: int, name: str) -> None:
    """Remove `name` from `parent` whatever it is — a directory with all it holds (walked by
    descriptor, links removed, never followed), a file or a link."""
    import shutil  # lazy: the agent's start-up need not load it for a rare removal

    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


# -- renames with flags (renameat2 / renameatx_np), relative to directory descriptors ---------------
RENAME_SWAP = 2  # RENAME_EXCHANGE (Linux renameat2) and RENAME_SWAP (macOS renameatx_np) alike
_rename2 = None  # (call, no-replace flag), resolved on first use: the agent must start fast


def _rename_call():
    global _rename2
    if _rename2 is None:
        import ctypes  # lazy: loaded the first time a rename needs renameat2, not at start-up

        libc = ctypes.CDLL(None, use_errno=True)
        if hasattr(libc, "renameat2"):  # RENAME_NOREPLACE = 1
            _rename2 = (libc.renameat2, 1)
        elif hasattr(libc, "renameatx_np"):  # RENAME_EXCL = 4
            _rename2 = (libc.renameatx_np, 4)
        else:
            _rename2 = (None, 0)
    return _rename2


def noreplace_flag() -> int:
    return _rename_call()[1]


def rename_flags(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> bool:
    """rename(2) with `flags`, both names relative to their directory descriptors (AT_FDCWD:
    the current directory, or an absolute path).  False where the system or the file system
    cannot (the caller then falls back); OSError for a real failure (FileExistsError when
    no-replace finds a file)."""
    call, _ = _rename_call()
    if call is None or not flags:
        return False
    if call(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) == 0:
        return True
    import ctypes  # lazy: loaded with the rename call above (start-up)

    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), dst)
