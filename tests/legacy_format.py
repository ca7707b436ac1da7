"""Writes backups in the old peersync format (before restic), as peersync 0.x left them on a target.

Test support for `backup migrate`: the layout is documented in peersync/backup/legacy.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from peersync.backup.legacy import CHECK_NAME, CHECK_PLAINTEXT, CRYPT_REMOTE
from peersync.transport.rclone import Rclone, crypt_env


def old_snapshot_id(moment: datetime) -> str:
    return f"{moment.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def write_legacy(target: Path, snapshots: list[tuple[datetime, dict[str, tuple[bytes, int, int]]]], *,
                 instance: str, host: str = "old-laptop", passphrase: str | None = None,
                 entries_extra: list[dict] | None = None) -> list[str]:
    """Write an old-format repository at `target`: one snapshot per (time, {path: (data, mode, mtime_ns)}).
    `entries_extra` are raw manifest entries added to the last snapshot (for forged ones).
    Returns the snapshot ids, oldest first."""
    plain = Path(tempfile.mkdtemp(prefix="legacy-"))
    ids = []
    try:
        for moment, files in snapshots:
            sid = old_snapshot_id(moment)
            entries = []
            for path, (data, mode, mtime_ns) in sorted(files.items()):
                sha = hashlib.sha256(data).hexdigest()
                obj = plain / "objects" / sha[:2] / sha[2:]
                obj.parent.mkdir(parents=True, exist_ok=True)
                obj.write_bytes(data)
                entries.append({"path": path, "size": len(data), "mtime_ns": mtime_ns, "mode": mode, "sha256": sha})
            if entries_extra and moment == snapshots[-1][0]:
                entries += entries_extra
            doc = {"format": 1, "id": sid, "time": moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "files": len(entries), "bytes": sum(e["size"] for e in entries), "host": host,
                   "instance": instance, "workspace": "/home/u/clawd", "peersync": "0.9", "entries": entries}
            manifest = plain / "snapshots" / f"{sid}.json.gz"
            manifest.parent.mkdir(parents=True, exist_ok=True)
            manifest.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))
            ids.append(sid)
        target.mkdir(parents=True, exist_ok=True)
        marker = {"format": 1, "id": secrets.token_hex(8), "encrypted": bool(passphrase), "created": "2026-01-01T00:00:00Z"}
        if passphrase:
            marker["salt"] = secrets.token_hex(16)
            (plain / CHECK_NAME).write_bytes(CHECK_PLAINTEXT)
            rc = Rclone(env={**os.environ, "RCLONE_CONFIG": "/dev/null"})
            rc = rc.with_env(crypt_env(rc, CRYPT_REMOTE, str(target), passphrase, marker["salt"]))
            rc.run(["copy", str(plain), CRYPT_REMOTE + ":"])
        else:
            shutil.copytree(plain, target, dirs_exist_ok=True)
        (target / "peersync-backup.json").write_text(json.dumps(marker, indent=2) + "\n")
    finally:
        shutil.rmtree(plain, ignore_errors=True)
    return ids
