"""Encrypted, deduplicated backups of a workspace: restic is the engine, every target reached through rclone.

peersync decides what restic cannot know: which files (the synced selection plus this
instance's IDENTITY.md and config/), when (the heartbeat's and watch's due rule), the
passphrase (configured, or generated and kept 0600 in the state dir), what a restore may
write (the same selection; never special mode bits; never outside the workspace), and the
status a user or the dashboard reads.

The public API (everything else in this package is internal):

| call | returns |
|---|---|
| `take_snapshot(ws, target=None, now=None, progress=None, prune_after=True)` | `BackupResult` (`backup now`) |
| `list_snapshots(ws, target=None)` | dict: target, instance, snapshots [{id, full_id, time, host, instance, tags, files, bytes, bytes_added}], legacy |
| `status(ws, target=None)` | dict for `backup status` and the dashboard: snapshots, retention decisions with reasons, last run, last verify, next due, repository size, where the passphrase is, restic's version or the fix |
| `retention(ws, target=None, policy=None)` | [{id, time, host, instance, keep, reasons}] — what `backup.keep` keeps and why (no lock taken) |
| `retention_decisions(snapshots, policy, restic_version)` | the same, for snapshots already listed (pure) |
| `cached_listing(ws)` | ([Snapshot], {target, listed_at, restic, unreadable}): the last listing this machine saw, no network |
| `restore(ws, target=None, snapshot=None, at=None, to=None, in_place=False, host=None, progress=None)` | `RestoreResult` |
| `verify(ws, target=None, snapshot=None, progress=None)` / `last_verify(ws)` | `VerifyResult` / dict or None |
| `prune(ws, target=None, dry_run=False)` | `PruneResult` |
| `migrate(ws, target=None, trust_unencrypted=False, progress=None)` | `MigrateResult` (old-format snapshots into restic) |
| `backup_due(ws, now=None)`, `next_due(ws)`, `last_run(ws)` | the schedule (no network) |
| `repository_size(ws, target=None)` | dict: bytes, blobs, snapshots |
| `passphrase_info(ws)` | dict: source, where |
| `restic_check()` | dict: ok, version, path, fix |

Errors are peersync.errors classes (exit codes included): `WrongPassphrase` (exit 2),
`NoBackups`, `ResticMissing`, BusyError, UsageError, BackupError.

Submodules load on first use, so `peersync.backup.schedule` stays cheap for the heartbeat.  (No
submodule is named like a function of the API: importing it would shadow the function.)
"""

from __future__ import annotations

import importlib

_API = {
    "take_snapshot": "snapshot", "BackupResult": "snapshot",
    "list_snapshots": "listing", "status": "listing", "repository_size": "listing", "passphrase_info": "listing",
    "backup_due": "listing", "next_due": "listing", "last_run": "listing",
    "retention": "pruning", "retention_decisions": "pruning", "prune": "pruning", "PruneResult": "pruning",
    "cached_listing": "repo",
    "restore": "restoring", "RestoreResult": "restoring",
    "verify": "verifying", "last_verify": "verifying", "VerifyResult": "verifying",
    "migrate": "legacy", "MigrateResult": "legacy",
    "load_config": "config", "BackupConfig": "config", "default_target": "config",
    "WrongPassphrase": "restic", "ResticMissing": "restic", "restic_check": "restic",
    "NoBackups": "repo", "Snapshot": "repo",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'peersync.backup' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"peersync.backup.{module}"), "tool_check" if name == "restic_check" else name)
    globals()[name] = value
    return value
