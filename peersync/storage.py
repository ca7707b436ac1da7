"""Atomic, private writes of state files (temp + fsync + rename; files 0600, dirs 0700)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600, mtime_ns: int | None = None) -> None:
    """Replace `path` with `data` so that readers see either the old or the new bytes, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".peersync-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
    fsync_dir(path.parent)


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
    atomic_write_bytes(path, (json.dumps(value, indent=indent, ensure_ascii=False) + "\n").encode())


def read_json(path: Path, default=None):
    """Read a JSON state file; a missing file gives `default`, a corrupt one raises ValueError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    return json.loads(raw)
