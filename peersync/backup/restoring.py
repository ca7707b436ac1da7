"""`backup restore`: restic restores into a private staging directory; peersync keeps only what may be written.

Whoever made a snapshot (this machine, another instance sharing the repository, or anyone
holding the passphrase), a restore writes only regular files the backup selection allows
(the synced selection plus IDENTITY.md and config/; state files and old OpenClaw copies to a
staging directory only), never a setuid, setgid or sticky bit, never a symlink, device or
fifo, never outside the destination, and files are owned by the workspace's owner.  restic
authenticates every snapshot, tree and blob with the repository key, so a snapshot forged
without the passphrase is refused by restic itself.

Every restore goes through a staging directory (mode 0700): restic writes there, peersync
checks each file against the snapshot listing (size, mtime; restic's --verify re-reads the
content against its blob hashes), removes what may not be restored, then either leaves the
result there (the default) or installs it over the live workspace (`in_place`), where every
replaced version is kept in conflicts/ (transition.Store does the install: no clobbered edit,
nothing lost if interrupted).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from peersync.backup.config import backup_dir, load_config
from peersync.backup.repo import Snapshot, iso, load_snapshots, local_lock, open_repo, workspace_owner
from peersync.backup.selection import OPENCLAW_PREFIX, BackupSelection, for_workspace, restorable
from peersync.errors import BackupError, UsageError
from peersync.core.paths import in_state_dir
from peersync.replica.scan import hash_file, walk
from peersync.replica.store import Refused, Store
from peersync.core.types import Entry, Problem
from peersync.workspace.lock import workspace_lock
from peersync.workspace.workspace import Workspace

_IGNORED = re.compile(r"^ignoring error for (/.*?): (.*)$", re.M)


@dataclass
class RestoreResult:
    snapshot: Snapshot
    dest: Path
    in_place: bool
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # in place: already identical, left alone
    refused: list[Problem] = field(default_factory=list)  # unreadable or failed verification: not written
    not_restored: list[Problem] = field(default_factory=list)  # the snapshot holds it, a restore may not write it
    skipped: list[str] = field(default_factory=list)  # in place: state and OpenClaw files (staging only)
    conflicts: list[dict] = field(default_factory=list)  # in place: {"path", "conflict"} replaced versions kept
    diff: dict = field(default_factory=dict)  # snapshot vs live workspace
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused

    def to_json(self) -> dict:
        return {"ok": self.ok, "snapshot": self.snapshot.summary(), "dest": str(self.dest),
                "in_place": self.in_place, "restored": len(self.restored), "bytes": self.bytes,
                "unchanged": len(self.unchanged), "skipped": self.skipped,
                "refused": [{"path": p.path, "message": p.message} for p in self.refused],
                "not_restored": [{"path": p.path, "message": p.message} for p in self.not_restored],
                "conflicts": self.conflicts, "diff": self.diff, "seconds": round(self.seconds, 3)}


def parse_time(text: str) -> datetime:
    """ISO 8601 ("2026-11-22", "2026-11-22T06:30", "…Z", "…+01:00"); no zone means local time."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}", "Use ISO 8601, e.g. 2026-11-22T06:30 or 2026-11-22.") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc)


def pick_snapshot(snaps: list[Snapshot], *, snapshot: str | None = None, at: datetime | None = None,
                  instance: str | None = None, host: str | None = None) -> Snapshot:
    """By id (a unique prefix will do), else the newest at or before `at`, else the newest —
    of this instance; on a machine with none of its own (a new one), of the one instance the
    repository holds, or of `host`; with several instances the user has to choose."""
    if not snaps:
        raise BackupError("there are no snapshots to restore")
    if snapshot:
        matches = [s for s in snaps if s.id.startswith(snapshot.lower())]
        if len(matches) != 1:
            what = "no snapshot" if not matches else f"{len(matches)} snapshots"
            raise UsageError(f"{what} matching {snapshot!r}", "See `peersync backup list`.")
        return matches[0]
    if host is not None:
        pool = [s for s in snaps if s.host == host]
        if not pool:
            hosts = sorted({s.host for s in snaps})
            raise UsageError(f"no snapshot from host {host!r}", f"Hosts with snapshots: {', '.join(hosts)}.")
    else:
        pool = [s for s in snaps if s.instance == instance]
        if not pool:
            groups: dict[str | None, list[Snapshot]] = {}
            for s in snaps:
                groups.setdefault(s.instance, []).append(s)
            if len(groups) > 1:
                choices = "; ".join(f"{g[-1].host} (instance {str(k)[:8]}): latest {g[-1].short_id} of {iso(g[-1].time)}"
                                    for k, g in sorted(groups.items(), key=lambda kv: kv[1][-1].time))
                raise UsageError(f"these backups hold {len(groups)} instances and none is this one: {choices}",
                                 "Choose with --snapshot ID or --host NAME (see `peersync backup list`).")
            pool = snaps
    if at is not None:
        before = [s for s in pool if s.time <= at]
        if not before:
            raise UsageError(f"no snapshot at or before {iso(at)} (the oldest is {iso(pool[0].time)})")
        return max(before, key=lambda s: s.time)
    return max(pool, key=lambda s: s.time)


def restore(ws: Workspace, *, target: str | None = None, snapshot: str | None = None,
            at: str | datetime | None = None, to: str | Path | None = None, in_place: bool = False,
            host: str | None = None, progress=None) -> RestoreResult:
    """Restore a snapshot: by default into `<workspace>.restore-<id>` beside the workspace
    (or `to`, empty or new, outside the workspace); with `in_place`, over the live workspace
    under the workspace lock, each replaced version kept in conflicts/."""
    started = time.monotonic()
    if in_place and to is not None:
        raise UsageError("--in-place and --to exclude each other")
    cfg = load_config(ws)
    repo = open_repo(ws, cfg, target)
    when = parse_time(at) if isinstance(at, str) else at
    unreadable: dict[str, str] = {}
    snaps = load_snapshots(repo, unreadable)
    bad = [sid for sid in unreadable if snapshot and sid.startswith(snapshot.lower()[:8])]
    if bad:
        raise BackupError(f"snapshot {bad[0]} is refused: {unreadable[bad[0]]}",
                          "It fails restic's authentication (damaged, or not written with this repository's key); "
                          "nothing was restored.  See `peersync backup verify`.")
    snap = pick_snapshot(snaps, snapshot=snapshot, at=when, instance=ws.existing_instance_id(), host=host)
    selection = for_workspace(ws)
    if in_place:
        with workspace_lock(ws, 0, what="restore"), local_lock(ws, "restore"):
            staging = backup_dir(ws) / f"restore-{secrets.token_hex(4)}"
            staging.mkdir(mode=0o700)
            try:
                result = RestoreResult(snap, ws.root, True)
                _restic_restore(repo, snap, staging, selection, result, in_place=True)
                result.diff = diff_live(ws, selection, staging)
                _install(ws, selection, snap, staging, result)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    else:
        dest = Path(to).expanduser().absolute() if to is not None else ws.root.with_name(
            f"{ws.root.name}.restore-{snap.short_id}")
        _check_destination(ws, dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(dest, 0o700)  # private: a snapshot may hold files others must not read
        result = RestoreResult(snap, dest, False)
        _restic_restore(repo, snap, dest, selection, result, in_place=False)
        result.diff = diff_live(ws, selection, dest)
    result.seconds = time.monotonic() - started
    return result


def _check_destination(ws: Workspace, dest: Path) -> None:
    live = ws.root.resolve()
    if dest.resolve() == live:
        raise UsageError("that is the live workspace", "Use --in-place to restore over it (replaced files are kept).")
    if live in dest.resolve().parents:
        raise UsageError(f"{dest} is inside the workspace", "Restore outside it (it would be synced and backed up).")
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise UsageError(f"{dest} already exists and is not empty", "Choose an empty or new directory with --to.")


# -- restic restores, peersync sorts ------------------------------------------------------------------

def _restic_restore(repo, snap: Snapshot, dest: Path, selection: BackupSelection, result: RestoreResult,
                    *, in_place: bool) -> None:
    """restic restores the whole snapshot into `dest` (private); then everything a restore may
    not write is removed and the rest checked against the snapshot's listing."""
    nodes = repo.with_lock_recovery(lambda: repo.restic.json_lines(["ls", snap.id]))
    files: dict[str, dict] = {}
    for node in nodes:
        if node.get("struct_type") != "node":
            continue
        path = str(node.get("path", "")).lstrip("/")
        kind = node.get("type")
        if kind == "dir":
            continue
        if kind != "file":
            result.not_restored.append(Problem(path, f"a {kind or 'special file'}: only regular files are restored"))
            continue
        why = restorable(path, selection, in_place=in_place)
        if why is None:
            files[path] = node
        elif in_place and why.startswith("state and OpenClaw"):
            result.skipped.append(path)
        else:
            result.not_restored.append(Problem(path, why))

    def run():
        proc = repo.restic.run(["restore", snap.id, "--target", str(dest), "--verify"], check=False)
        stderr = proc.stderr.decode(errors="replace")
        failed = {m.group(1).lstrip("/"): m.group(2) for m in _IGNORED.finditer(stderr)}
        if proc.returncode != 0 and not failed:
            raise repo.restic.error(["restore"], proc.returncode, stderr)
        return failed

    failed = repo.with_lock_recovery(run)
    owner = workspace_owner(repo.ws) if os.geteuid() == 0 else None
    kept = _sanitise(dest, files, failed, owner, result)
    result.restored = sorted(kept)
    result.bytes = sum(int(files[p].get("size") or 0) for p in kept)


def _sanitise(dest: Path, files: dict[str, dict], failed: dict[str, str], owner, result: RestoreResult) -> set[str]:
    """Leave in `dest` only the allowed, verified regular files (and their directories)."""
    needed_dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    kept: set[str] = set()
    for top, dirs, names in os.walk(dest):
        rel_top = os.path.relpath(top, dest).replace(os.sep, "/")
        rel_top = "" if rel_top == "." else rel_top + "/"
        for name in list(dirs):
            full, rel = os.path.join(top, name), rel_top + name
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode) and rel in needed_dirs:
                os.chmod(full, (st.st_mode & 0o777) | 0o700)  # no sgid/sticky bit; we must enter it
                if owner:
                    os.lchown(full, *owner)
                continue
            dirs.remove(name)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(full)
            else:
                os.unlink(full)  # a symlink to a directory: the link only
        for name in names:
            full, rel = os.path.join(top, name), rel_top + name
            st = os.lstat(full)
            node = files.get(rel)
            if node is None or not stat.S_ISREG(st.st_mode):
                os.unlink(full)
                continue
            if rel in failed:
                os.unlink(full)
                result.refused.append(Problem(rel, f"not restored: {failed[rel]}"))
                continue
            if owner:
                os.lchown(full, *owner)
            os.chmod(full, int(node.get("mode") or 0) & 0o777)  # never setuid, setgid or sticky
            if st.st_size != int(node.get("size") or 0) or st.st_mtime_ns != restic_ns(node.get("mtime", "")):
                os.unlink(full)
                result.refused.append(Problem(rel, "not restored: size or time differs from the snapshot"))
                continue
            kept.add(rel)
    for rel, why in failed.items():
        if rel in files and rel not in kept and not any(p.path == rel for p in result.refused):
            result.refused.append(Problem(rel, f"not restored: {why}"))
    for rel in files:
        if rel not in kept and not any(p.path == rel for p in result.refused):
            result.refused.append(Problem(rel, "not restored: missing after restic's restore"))
    return kept


def restic_ns(text: str) -> int:
    """An RFC 3339 time with nanoseconds as integer nanoseconds since the epoch."""
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text or "")
    if not match:
        return -1
    base = datetime.fromisoformat(match.group(1) + match.group(3).replace("Z", "+00:00"))
    return int(base.timestamp()) * 1_000_000_000 + int((match.group(2) or "0").ljust(9, "0")[:9])


# -- comparing with the live workspace, installing in place ----------------------------------------------

def diff_live(ws: Workspace, selection: BackupSelection, staged: Path) -> dict:
    """How the restored workspace files differ from the live workspace now.  A live file with the
    restored one's size and mtime (to the nanosecond) counts as the same without being read —
    the rule restic's own change detection uses; any other pair of equal sizes is compared by hash."""
    ours = dict(walk(staged, selection))
    live = dict(walk(ws.root, selection))
    changed, same = [], 0
    for rel, st_ours in ours.items():
        st = live.get(rel)
        if st is None:
            continue
        if st.st_size == st_ours.st_size and (st.st_mtime_ns == st_ours.st_mtime_ns
                                              or hash_file(ws.root / rel) == hash_file(staged / rel)):
            same += 1
        else:
            changed.append(rel)
    return {"same": same, "changed": sorted(changed), "only_in_snapshot": sorted(p for p in ours if p not in live),
            "only_live": sorted(p for p in live if p not in ours)}


def _install(ws: Workspace, selection: BackupSelection, snap: Snapshot, staging: Path, result: RestoreResult) -> None:
    """Each restored file over the live one; the live version goes to conflicts/.  A restore in
    place is the user's latest edit: files get the current time, so peers take them."""
    store = Store(ws.root, selection)
    info = {"peer": None, "reason": f"replaced by backup restore of {snap.short_id}"}
    restored: list[str] = []
    for rel in result.restored:
        if in_state_dir(rel) or rel.startswith(OPENCLAW_PREFIX):
            continue
        staged = staging / rel
        live = ws.root / rel
        try:
            st = os.lstat(live)
        except FileNotFoundError:
            st = None
        except OSError as err:
            result.refused.append(Problem(rel, f"cannot look at the live file: {err.strerror}"))
            continue
        if st is not None and not stat.S_ISREG(st.st_mode):
            what = "symbolic link" if stat.S_ISLNK(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "special file"
            result.refused.append(Problem(rel, f"a {what} is in the way; not restored"))
            continue
        size = staged.stat().st_size
        digest = hash_file(staged)
        expect = None
        if st is not None:
            live_digest = hash_file(live)
            if st.st_size == size and live_digest == digest:
                result.unchanged.append(rel)
                continue
            expect = Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, live_digest)
        new = Entry(size, time.time_ns(), staged.stat().st_mode & 0o777, digest)
        try:
            done = store.install(rel, staged, expect=expect, new=new, quarantine=info)
        except Refused as err:
            result.refused.append(Problem(rel, str(err)))
            continue
        except OSError as err:
            result.refused.append(Problem(rel, f"cannot write: {err.strerror or err}"))
            continue
        restored.append(rel)
        if done.get("conflict"):
            result.conflicts.append({"path": rel, "conflict": done["conflict"]})
    result.bytes = sum((ws.root / rel).stat().st_size for rel in restored if (ws.root / rel).exists())
    result.restored = restored
