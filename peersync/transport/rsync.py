"""Bulk file transfer with rsync over ssh, using the control connection's SSH settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal

from peersync.errors import TransferError
from peersync.transport import sshconfig
from peersync.workspace.workspace import Peer

PARTIAL_CODES = (23, 24)
# rsync gives up when no data moves for this long (a wedged peer); ssh's ConnectTimeout bounds the
# connection (rsync's --contimeout is for daemon connections only and refused over ssh).
IO_TIMEOUT = 120
_EXIT_MEANING = {
    10: "the connection broke off (socket I/O error)",
    11: "file I/O error on the receiving side (disk full or not writable?)",
    12: "the rsync stream broke off (connection cut?)",
    30: "timed out",
}
# rsync's last line is often generic ("error in file IO"); these name the cause.
_TELLING = ("No space left", "Permission denied", "Read-only file system", "Connection", "connection",
            "Host key", "command not found", "No such file")  # some files failed / vanished: per-file results are checked by hash anyway


def _remote(peer: Peer, path: str) -> str:
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    return f"{host}:{path}"


async def rsync_files(peer: Peer, paths: list[str], *, push: bool, local_dir: str, remote_dir: str,
                      basis_dir: str) -> None:
    """Copy `paths` (relative) from local_dir to remote_dir (push) or back (pull).

    Destinations are staging dirs; `basis_dir` (the receiving workspace root) gives rsync a basis
    for delta transfer without ever writing to a live file.
    """
    if not paths:
        return
    src, dst = (local_dir, _remote(peer, remote_dir)) if push else (_remote(peer, remote_dir), local_dir)
    # --sparse: runs of zeros become holes in the staged file (a sparse file stays sparse; the
    # install renames it into place).  Safe with every rsync here: we never use --inplace, which
    # rsync before 3.1.3 refused together with --sparse.
    cmd = ["rsync", "-t", "--perms", "-I", "--sparse", f"--timeout={IO_TIMEOUT}", "--files-from=-", "--from0",
           f"--copy-dest={basis_dir}", "-e", shlex.join(sshconfig.ssh_command(peer)), src.rstrip("/") + "/", dst.rstrip("/") + "/"]
    try:
        # Its own process group (rsync and its ssh): a cancelled sync (the heartbeat's time bound,
        # Ctrl-C) kills the whole group, so nothing is left running, one pair per tick.
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise TransferError("rsync is not installed on this machine",
                            "Install it (apt-get install rsync / brew install rsync).") from None
    try:
        _, err = await proc.communicate(b"\0".join(os.fsencode(p) for p in paths) + b"\0")
    except BaseException:
        await kill_group(proc)
        raise
    if proc.returncode in (0, *PARTIAL_CODES):
        return
    text = err.decode(errors="replace")
    from peersync.transport.hostkeys import from_openssh  # lazy: only on failure (it loads asyncssh)

    refused = await from_openssh(peer, text)
    if refused is not None:
        raise refused
    lines = [l for l in text.splitlines() if l.strip()]
    telling = [l for l in lines if any(k in l for k in _TELLING)]
    detail = (telling or [None])[-1] or _EXIT_MEANING.get(proc.returncode) or \
        (lines or [f"exit status {proc.returncode}"])[-1]
    if "No space left" in detail or proc.returncode == 11:
        raise TransferError(f"transfer with {peer.name} failed: disk full ({detail.strip()})",
                            "Free some space there, then run the sync again; nothing was lost.")
    if proc.returncode < 0:  # rsync itself was killed (by a signal, e.g. a shutdown)
        raise TransferError(f"transfer with {peer.name} was interrupted (rsync killed by signal {-proc.returncode})",
                            "Nothing was lost; run the sync again.")
    if proc.returncode in (10, 12, 255) or "connection" in detail.lower():
        raise TransferError(f"transfer with {peer.name} was cut off: {detail}",
                            "Nothing was lost; run the sync again.")
    raise TransferError(f"rsync with {peer.name} failed: {detail}", "Nothing was lost; run the sync again.")


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a child started in its own session, with everything it started (rsync's ssh), and
    reap it.  Safe to await while being cancelled: the kill itself happens at once."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(BaseException):
        await asyncio.shield(proc.wait())
