"""Retention: `backup.keep` as restic's forget rules, applied by restic, explained by peersync.core.retention.

Snapshots are grouped by their tags (peersync + instance:<id>), so each instance keeps its own
history whichever machine prunes, and a renamed host does not start a new group.  Only
snapshots tagged `peersync` are ever forgotten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from peersync.backup.config import BackupConfig, load_config
from peersync.backup.repo import TAG, Snapshot, load_snapshots, open_repo
from peersync.backup.restic import keep_flags, keep_oldest
from peersync.errors import UsageError
from peersync.core.retention import KeepPolicy, Snap, apply_policy
from peersync.workspace.workspace import Workspace

NO_POLICY = ("Set backup.keep in config.yaml, e.g. `keep: 7` or `keep: {daily: 7, weekly: 4, monthly: 12}`.")


@dataclass
class PruneResult:
    policy: str
    kept: list[str] = field(default_factory=list)  # short ids
    removed: list[str] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # kept id → restic's reasons
    freed: str | None = None  # restic's own words, e.g. "12.3 MiB"
    dry_run: bool = False
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"ok": True, "policy": self.policy, "kept": self.kept, "removed": self.removed,
                "reasons": self.reasons, "freed": self.freed, "dry_run": self.dry_run, "notices": self.notices}


def prune(ws: Workspace, *, target: str | None = None, now: datetime | None = None, dry_run: bool = False,
          config: BackupConfig | None = None, policy: KeepPolicy | None = None) -> PruneResult:
    """`restic forget` with the keep rules, then `restic prune` when something was forgotten.

    Both take restic's exclusive lock: a running backup makes them wait (and they make a
    backup wait), a killed one's lock is cleared first (Repo.with_lock_recovery)."""
    cfg = config or load_config(ws)
    keep = policy or cfg.keep
    if keep is None or keep.empty:
        raise UsageError("no retention policy: nothing to prune", NO_POLICY)
    repo = open_repo(ws, cfg, target)
    result = PruneResult(keep.describe(), dry_run=dry_run)
    args = ["forget", "--group-by", "tags", "--tag", TAG, *keep_flags(keep, repo.restic.version)]
    groups = repo.with_lock_recovery(lambda: repo.restic.json([*args, *(["--dry-run"] if dry_run else [])]),
                                     said=result.notices) or []
    for group in groups:
        for snap in group.get("keep") or []:
            result.kept.append(snap["id"][:8])
        for snap in group.get("remove") or []:
            result.removed.append(snap["id"][:8])
        for reason in group.get("reasons") or []:
            snap = reason.get("snapshot") or {}
            sid = (snap.get("id") or "")[:8] or _match_id(group.get("keep") or [], snap)
            if sid:
                result.reasons[sid] = list(reason.get("matches") or [])
    if result.removed and not dry_run:
        out = repo.with_lock_recovery(lambda: repo.restic.run(["prune"]), said=result.notices)
        match = re.search(r"total prune:\s+\d+ blobs / ([\d.]+ \w+)", out.stdout.decode(errors="replace"))
        result.freed = match.group(1) if match else None
    return result


def _match_id(kept: list[dict], snap: dict) -> str | None:
    """restic 0.14's reasons repeat the snapshot without its id: find it by time and tree."""
    for k in kept:
        if k.get("time") == snap.get("time") and k.get("tree") == snap.get("tree"):
            return k["id"][:8]
    return None


def retention_decisions(snaps: list[Snapshot], policy: KeepPolicy | None, version: tuple[int, ...]) -> list[dict]:
    """What `policy` keeps and why, per snapshot (newest first within each instance), computed
    by peersync.core.retention the way this restic's forget decides — no lock, no network."""
    if policy is None or policy.empty:
        return [{**s.summary(), "keep": True, "reasons": ["no policy"]} for s in reversed(snaps)]
    groups: dict[tuple, list[Snapshot]] = {}
    for s in snaps:
        if TAG in s.tags:
            groups.setdefault(tuple(sorted(s.tags)), []).append(s)
    out: list[dict] = []
    for group in groups.values():
        by_id = {s.id: s for s in group}
        decision = apply_policy([Snap(s.id, s.time) for s in group], policy, keep_oldest=keep_oldest(version))
        for snap in decision.keep:
            out.append({**by_id[snap.id].summary(), "keep": True, "reasons": list(decision.reasons[snap.id])})
        for snap in decision.remove:
            out.append({**by_id[snap.id].summary(), "keep": False, "reasons": []})
    return sorted(out, key=lambda d: (d["instance"] or "", d["time"]), reverse=True)


def retention(ws: Workspace, *, target: str | None = None, policy: KeepPolicy | None = None) -> list[dict]:
    """The dashboard's view of `backup.keep`: every snapshot, kept or not, with reasons."""
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    return retention_decisions(load_snapshots(repo), policy or cfg.keep, repo.restic.version)
