"""What the file system under a directory does with names, links, holes and modes, learnt by probing it once per device.

The replica side runs `probe(directory)` at the start of a session, before it scans: the answer
says whether two names can be one entry (case folding, Unicode normalisation), in which form
names come back from readdir, and which of symlinks, holes and permission bits the volume keeps.
Like Mutagen's behaviour probes, it asks the file system itself rather than guessing from its
type: it creates a private directory named PROBE_PREFIX + random hex inside `directory`, makes a
few entries in it, looks them up under other spellings, lists them, and always removes it again.
A directory left behind by a killed process is swept by a later probe once it is an hour old.
Scans should skip names starting with PROBE_PREFIX; probing inside the state directory avoids
even that.

Results are cached per device for the life of the process; `fresh=True` probes again.  The
device is st_dev plus the inode of its mount's root directory, because Linux hands a freed device
number to the next mount (FUSE and tmpfs mounts come and go in tests).  Linux can fold case per
directory (ext4 and f2fs `chattr +F`): a probe speaks for the directory it ran in and the ones
created below it.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from dataclasses import asdict, dataclass, fields

PROBE_PREFIX = ".peersync-probe-"
STALE_AFTER = 3600.0  # seconds before a leftover probe directory is someone's to sweep
_HOLE_AT = 1 << 20  # the probe file's only byte sits past a 1 MiB hole
# Errors that mean "this file system does not do that", as opposed to a failure of the probe.
_UNSUPPORTED = {errno.EPERM, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EILSEQ}

_CACHE: dict[tuple[int, int], "FsBehaviour"] = {}  # (st_dev, inode of the mount's root): result


class ProbeError(Exception):
    """The directory could not be probed (missing, read-only, not ours); the message says which."""


@dataclass(frozen=True)
class FsBehaviour:
    """How one volume treats names and file metadata."""

    device: int
    case_sensitive: bool  # "Notes.md" and "notes.md" are two entries
    case_preserving: bool  # an entry is listed in the case it was created with
    normalization_sensitive: bool  # the NFC and NFD spellings of a name are two entries
    stored_form: str  # how a name is listed: "as-given", "nfd" (HFS+) or "nfc"
    utf8_only: bool  # a name that is not valid UTF-8 is refused (APFS, HFS+)
    symlinks: bool
    sparse: bool  # a hole takes no space
    seek_hole: bool  # SEEK_DATA and SEEK_HOLE find holes
    permissions: bool  # mode bits are kept as set (rwx for user, group, other)

    @property
    def folds_names(self) -> bool:
        """Whether two different names can be one entry here."""
        return not self.case_sensitive or not self.normalization_sensitive

    def summary(self) -> str:
        """One line for logs and status: "case-insensitive, normalisation-insensitive, names stored NFD, …"."""
        parts = [
            "case-sensitive" if self.case_sensitive else "case-insensitive",
            "normalisation-sensitive" if self.normalization_sensitive else "normalisation-insensitive",
            {"as-given": "names stored as given", "nfd": "names stored NFD", "nfc": "names stored NFC"}[self.stored_form],
        ]
        if not self.case_preserving:
            parts.append("case not preserved")
        if self.utf8_only:
            parts.append("UTF-8 names only")
        parts += [f"{'' if ok else 'no '}{what}" for ok, what in (
            (self.symlinks, "symlinks"), (self.sparse, "sparse files"), (self.permissions, "permission bits"))]
        return ", ".join(parts)

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, doc: object) -> "FsBehaviour":
        """The inverse of to_wire; ValueError on anything else (it comes from a peer)."""
        names = {f.name: f.type for f in fields(cls)}
        if not isinstance(doc, dict) or set(doc) != set(names):
            raise ValueError(f"not a file-system description: {doc!r:.200}")
        for key, value in doc.items():
            expected = {"int": int, "bool": bool, "str": str}[names[key]]
            if type(value) is not expected:
                raise ValueError(f"file-system description: {key} is not {names[key]}")
        if doc["stored_form"] not in ("as-given", "nfd", "nfc"):
            raise ValueError(f"file-system description: unknown stored_form {doc['stored_form']!r}")
        return cls(**doc)


def probe(directory: str | os.PathLike, *, fresh: bool = False) -> FsBehaviour:
    """How the file system holding `directory` behaves (cached per device unless `fresh`)."""
    path = os.fspath(directory)
    try:
        st = os.stat(path)
    except OSError as err:
        raise ProbeError(f"cannot probe {path}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ProbeError(f"cannot probe {path}: not a directory")
    key = (st.st_dev, _mount_root_inode(path, st))
    if not fresh and key in _CACHE:
        return _CACHE[key]
    result = _probe(path, st.st_dev)
    _CACHE[key] = result
    return result


def forget(device: int | None = None) -> None:
    """Drop the cached results for st_dev `device`, or all of them."""
    for key in [k for k in _CACHE if device is None or k[0] == device]:
        del _CACHE[key]


def _mount_root_inode(path: str, st: os.stat_result) -> int:
    """The inode of the topmost directory above `path` on the same device (its mount's root)."""
    current, inode = os.path.abspath(path), st.st_ino
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            return inode
        try:
            up = os.stat(parent)
        except OSError:
            return inode
        if up.st_dev != st.st_dev:
            return inode
        current, inode = parent, up.st_ino


def _probe(directory: str, device: int) -> FsBehaviour:
    _sweep(directory)
    private = os.path.join(directory, PROBE_PREFIX + os.urandom(8).hex())
    try:
        os.mkdir(private, 0o700)
    except OSError as err:
        raise ProbeError(f"cannot probe the file system at {directory}: {err.strerror} "
                         f"(the directory must be writable)") from None
    try:
        return FsBehaviour(device=device, **_names(private), **_metadata(private))
    except OSError as err:
        raise ProbeError(f"probing the file system at {directory} failed: {err}") from None
    finally:
        _remove(private)


def _create(path: str | bytes) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _names(private: str) -> dict:
    import unicodedata  # lazy: the probe runs at every session start; only this check needs it

    # Case: one name with capitals; is the lower-case spelling the same entry, and is the
    # name listed as created?
    _create(os.path.join(private, "Case-Probe"))
    case_sensitive = not os.path.lexists(os.path.join(private, "case-probe"))

    # Normalisation: one name created composed, another created decomposed; how are they
    # listed, and does the other form of the first find it?
    nfc = unicodedata.normalize("NFC", "n\u00e9-c")
    nfd = unicodedata.normalize("NFD", "n\u00e9-d")
    _create(os.path.join(private, nfc))
    _create(os.path.join(private, nfd))
    listed = set(os.listdir(private))
    normalization_sensitive = not os.path.lexists(os.path.join(private, unicodedata.normalize("NFD", nfc)))
    if unicodedata.normalize("NFD", nfc) in listed:
        stored_form = "nfd"
    elif unicodedata.normalize("NFC", nfd) in listed:
        stored_form = "nfc"
    else:
        stored_form = "as-given"

    try:
        _create(os.fsencode(private) + b"/not-utf8-\xff")
        utf8_only = False
    except OSError as err:
        if err.errno not in _UNSUPPORTED:
            raise
        utf8_only = True
    return dict(case_sensitive=case_sensitive, case_preserving="Case-Probe" in listed,
                normalization_sensitive=normalization_sensitive, stored_form=stored_form,
                utf8_only=utf8_only)


def _metadata(private: str) -> dict:
    try:
        os.symlink("link-target", os.path.join(private, "link"))
        symlinks = os.readlink(os.path.join(private, "link")) == "link-target"
    except OSError as err:
        if err.errno not in _UNSUPPORTED:
            raise
        symlinks = False

    fd = os.open(os.path.join(private, "file"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:  # Mutagen's executability test, plus a full round trip of the other bits
            os.fchmod(fd, 0o700)
            executable = stat.S_IMODE(os.fstat(fd).st_mode) & 0o111 == 0o100
            os.fchmod(fd, 0o640)
            permissions = executable and stat.S_IMODE(os.fstat(fd).st_mode) == 0o640
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
            permissions = False
        os.pwrite(fd, b"x", _HOLE_AT)
        sparse = os.fstat(fd).st_blocks * 512 < _HOLE_AT
        try:
            seek_hole = os.lseek(fd, 0, os.SEEK_DATA) > 0  # without support, all is data from 0
        except (OSError, AttributeError) as err:  # AttributeError: no SEEK_DATA on this system
            if isinstance(err, OSError) and err.errno not in _UNSUPPORTED | {errno.ENXIO}:
                raise
            seek_hole = False
    finally:
        os.close(fd)
    return dict(symlinks=symlinks, sparse=sparse, seek_hole=seek_hole, permissions=permissions)


def _remove(private: str) -> None:
    """Best effort: the entries of a probe directory (never directories), then the directory."""
    try:
        with os.scandir(os.fsencode(private)) as entries:  # bytes: names that are not UTF-8 too
            for entry in entries:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
        os.rmdir(private)
    except OSError:
        pass


def _sweep(directory: str) -> None:
    """Remove probe directories that a killed process left behind (an hour old or more)."""
    now = time.time()
    try:
        with os.scandir(directory) as entries:
            stale = [e.path for e in entries if e.name.startswith(PROBE_PREFIX)
                     and now - e.stat(follow_symlinks=False).st_mtime > STALE_AFTER]
    except OSError:
        return
    for path in stale:
        _remove(path)


def main(argv: list[str]) -> int:
    """`python -m peersync.replica.fsprobe DIR…`: what each directory's file system does, one line each."""
    if not argv:
        print("usage: python -m peersync.replica.fsprobe DIRECTORY…", file=sys.stderr)
        return 2
    status = 0
    for directory in argv:
        try:
            print(f"{directory}: {probe(directory).summary()}")
        except ProbeError as err:
            print(err, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
