"""The workspace lock: one writer per workspace; a dead holder's lock clears by itself (flock)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from peersync.errors import BusyError
from peersync.workspace.storage import ensure_private_dir


@contextlib.contextmanager
def state_lock(state_dir: Path, timeout: float | None = None, *, what: str = "sync"):
    """Hold `state_dir/lock` for the block.  timeout None waits forever, 0 fails at once.

    The lock is an flock(2) on the file: the kernel drops it when the holder dies, so a stale
    lock never needs clearing by hand (and we never delete another process's lock file).
    """
    ensure_private_dir(state_dir)
    info = state_dir / "lock.info"
    fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        _acquire(fd, timeout)
    except BlockingIOError:
        os.close(fd)
        raise BusyError(f"workspace is busy: another peersync {_holder(info)} is running",
                        "Try again in a moment.") from None
    try:
        with contextlib.suppress(OSError):
            fd_info = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd_info, "w") as f:
                f.write(json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}))
        yield
    finally:
        with contextlib.suppress(OSError):
            info.unlink()
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(fd: int, timeout: float | None) -> None:
    """flock with a deadline (None = wait forever); raises BlockingIOError on timeout.

    flock rather than the filelock package: same kernel mechanism, and the remote agent
    must start fast (filelock pulls in asyncio).
    """
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _holder(info: Path) -> str:
    try:
        data = json.loads(info.read_text())
        return f"{data.get('what', 'process')} (pid {data['pid']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "process"


def workspace_lock(ws, timeout: float | None = None, *, what: str = "sync"):
    return state_lock(ws.state, timeout, what=what)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
