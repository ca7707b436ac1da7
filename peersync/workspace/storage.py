"""Atomic, private writes of state files (temp + fsync + rename; files 0600, dirs 0700)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

from peersync.errors import StateDirError


def ensure_private_dir(path: Path) -> Path:
    """`path` as a real directory of this user, private (0700): made when missing, its mode
    tightened when looser.  A link, or a directory of another user, is refused (StateDirError):
    whoever controls it could steer what peersync reads, moves or deletes there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        what = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory") if not stat.S_ISDIR(st.st_mode) \
            else f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
        raise StateDirError(f"{path} is {what}: peersync will not use it",
                            "Something replaced peersync's own directory (possibly to steer it). "
                            "Check it, move it away, and run again.")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600, mtime_ns: int | None = None,
                       durable: bool = True) -> None:
    """Replace `path` with `data` so that readers see either the old or the new bytes, never a mix;
    on disk before it returns unless not `durable` (a cache: lost in a crash, it is rebuilt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


TEMP_PREFIX, TEMP_SUFFIX = ".peersync-", ".tmp"
TEMP_MAX_AGE = 3600.0


def sweep_temp(state: Path, *, max_age: float = TEMP_MAX_AGE, skip=("trash", "staging", "holding")) -> int:
    """Remove the temp files of atomic writes that a killed process left in the state dir.

    Only files older than `max_age` seconds: a younger one may belong to a write in progress.
    Kept versions (trash, conflicts/<id>/) and transfer areas are not walked.
    """
    removed, cutoff = 0, time.time() - max_age
    for top, dirs, files in os.walk(state):
        dirs[:] = [d for d in dirs if d not in skip and not (Path(top).name == "conflicts" and d.startswith("c-"))]
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                path = os.path.join(top, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except OSError:
                    pass
    return removed


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, value, *, indent: int | None = 2) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=indent, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))


def stat_identity(st: os.stat_result) -> tuple:
    """What tells one version of a file from another without reading it: a file replaced (a new
    inode) or written in place (size, mtime, ctime) has another identity."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_identity(path: Path | str) -> tuple | None:
    """stat_identity of the file at `path`; None when there is none to be had."""
    try:
        return stat_identity(os.stat(path))
    except OSError:
        return None


def read_json(path: Path, default=None):
    """Read a JSON state file; a missing file gives `default`, a corrupt one raises ValueError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    return json.loads(raw)
