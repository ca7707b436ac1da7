"""What the dashboard shows, gathered from a workspace's state files into one plain JSON document.

Reading never writes and never fails on a damaged file: a section whose source cannot be read
carries a `notice` (one or two lines for the page) instead.  Two functions are the seams where
other engines plug in: `backup_overview` (all backup data) and `auto_sync_modes` (heartbeat,
cron, watch).  Secrets are never put in the document; file contents only for conflicts, and only
when the caller says the page stays on this machine (`contents=True`).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import shlex
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from peersync import __version__
from peersync.core import versions
from peersync.core.paths import internal_rel
from peersync.daemons.watch import LOCK_FILE
from peersync.dashboard.config import settings
from peersync.errors import PeersyncError
from peersync.peers.status import status
from peersync.replica import tombstones
from peersync.replica.conflicts import store as conflict_store
from peersync.replica.scan import scan
from peersync.replica.store import Store, kept_files
from peersync.replica.versions import FILE as VERSIONS_FILE
from peersync.replica.versions import open_versions
from peersync.workspace import auto
from peersync.workspace.clawdbot import entry_view, is_peersync
from peersync.workspace.init import HEARTBEAT_MARK
from peersync.workspace.lock import pid_alive
from peersync.workspace.storage import atomic_write_json, ensure_private_dir
from peersync.workspace.workspace import Workspace

FORMAT = 1  # the document's shape; the page's script reads it (bump both together)
DIFF_MAX_BYTES = 256 * 1024  # a conflict is diffed when both versions are text up to this size
DIFF_MAX_LINES = 400  # diff lines kept per conflict (the rest is counted)
HISTORY_SHOWN = 300  # syncs in the timeline (history.json and its archive keep up to 1000)
TRASH_FILES_SHOWN = 50  # paths listed per trash batch
RECORDS_SHOWN = 200  # deletion records listed
SEEN_FILE = "dashboard/peers-seen.json"  # the last probe of each peer (state dir)
UNREACHABLE_KINDS = {"connect", "host-key", "timeout"}  # a history entry of these says "not reachable"


def gather(ws: Workspace, *, contents: bool = True, backups_online: bool = True, backups: dict | None = None,
           now: float | None = None) -> dict:
    """The whole document.  `backups_online`: ask the backup target (network) rather than only
    the local manifest cache; `backups`: that section already built (the server reuses it for a
    while).  Peers are shown as last probed (see probe_peers) and last synced."""
    now = time.time() if now is None else now
    history = history_section(ws)
    doc = {
        "format": FORMAT,
        "generated": iso(now),
        "peersync": __version__,
        "host": socket.gethostname(),
        "workspace": str(ws.root),
        "instance": ws.existing_instance_id(),
        "contents": contents,
        "history": history,
        "peers": peers_section(ws, history["entries"], now),
        "conflicts": conflicts_section(ws, contents=contents),
        "trash": trash_section(ws, history["entries"]),
        "records": records_section(ws),
        "backups": backups if backups is not None else guarded(
            lambda: backup_overview(ws, online=backups_online, now=now), "backups"),
        "auto": guarded(lambda: auto_sync_modes(ws, now=now), "auto-sync state"),
    }
    return scrub(doc, known_secrets(ws))


def guarded(build, what: str) -> dict:
    """A section that cannot be built becomes a notice, never a failed page."""
    try:
        return build()
    except (PeersyncError, OSError, ValueError) as err:
        return {"notice": f"cannot read the {what}: {str(err).splitlines()[0]}"}


# -- time -------------------------------------------------------------------------------------

def iso(value) -> str | None:
    """UTC ISO 8601 ("…Z") from epoch seconds or from the "%Y-%m-%dT%H:%M:%S%z" text history
    uses; None for anything else (the page shows "unknown")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
            except ValueError:
                return None
        if moment.tzinfo is None:
            moment = moment.astimezone()
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _read_json_file(path: Path) -> tuple[object, str | None]:
    """(document, None), or (None, why it cannot be read); a missing file is (None, None)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as err:
        return None, f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"


# -- history -----------------------------------------------------------------------------------

def history_section(ws: Workspace) -> dict:
    """Past syncs, newest first, each reduced to counts (plus a few paths for the tooltip):
    history.json's recent ones, then the archive's older ones."""
    raw, problem = _read_json_file(ws.history_file)
    name = f"{ws.history_file.relative_to(ws.root)}"
    notices, entries = [], []
    if problem:
        notices.append(f"The sync history ({name}) {problem}: its recent syncs cannot be shown. "
                       "Syncing is not affected; the next sync starts a new history.")
    elif raw is not None:
        entries = raw.get("entries") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            entries = []
            notices.append(f"The sync history ({name}) does not hold a list of entries: its recent syncs cannot "
                           "be shown. Syncing is not affected; the next sync starts a new history.")
    older, damaged = ws.older_history(entries)
    out, skipped = [], 0
    for entry in entries + older:
        row = _history_row(entry)
        if row is None:
            skipped += 1
        elif not row.pop("dry_run"):
            out.append(row)
    if skipped:
        notices.append(f"{skipped} damaged entr{'y' if skipped == 1 else 'ies'} of {name} skipped.")
    if damaged:
        archive = ws.history_archive.relative_to(ws.root)
        notices.append(f"{damaged} damaged line{'' if damaged == 1 else 's'} of {archive} skipped.")
    section = {"entries": out[:HISTORY_SHOWN], "total": len(out)}
    if notices:
        section["notice"] = " ".join(notices)
    return section


def _history_row(entry) -> dict | None:
    if isinstance(entry, dict) and not is_peersync(entry):  # clawdbot-sync's: timestamp, action, files, status
        view = entry_view(entry)
        entry = {key: view[key] for key in ("time", "peer", "mode", "ok", "error")}
    if not isinstance(entry, dict) or not isinstance(entry.get("peer"), str) or iso(entry.get("time")) is None:
        return None

    def paths(key: str) -> list[str]:
        value = entry.get(key)
        return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []

    def count(key: str) -> int:
        value = entry.get(key)
        return len(value) if isinstance(value, list) else 0

    error = entry.get("error")
    return {
        "time": iso(entry["time"]), "peer": entry["peer"], "host": str(entry.get("host") or ""),
        "mode": str(entry.get("mode") or "sync"), "dry_run": bool(entry.get("dry_run")),
        "ok": bool(entry.get("ok", not error)), "seconds": _number(entry.get("seconds")),
        "pushed": count("pushed"), "pulled": count("pulled"), "merged": count("merged"),
        "deleted": count("deleted_local") + count("deleted_remote"), "conflicts": count("conflicts"),
        "problems": count("problems"), "error": str(error).splitlines()[0] if error else None,
        "error_kind": entry.get("error_kind") if isinstance(entry.get("error_kind"), str) else None,
        "clock_offset": _number(entry.get("clock_offset")),
        "deleted_local": paths("deleted_local"),
        "sample": (paths("pushed") + paths("pulled") + paths("merged"))[:5],
    }


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- peers -------------------------------------------------------------------------------------

def peers_section(ws: Workspace, history: list[dict], now: float) -> dict:
    """Every configured peer: when last seen and how (probe or sync), last sync, pending changes."""
    try:
        peers = ws.load_peers()
    except PeersyncError as err:
        return {"items": [], "notice": str(err).splitlines()[0]}
    seen, _ = _read_json_file(ws.state / SEEN_FILE)
    seen = seen.get("peers", {}) if isinstance(seen, dict) and isinstance(seen.get("peers"), dict) else {}
    pending = _pending_changes(ws, peers)

    backoff = auto.read_state(ws.state).get("peers") or {}
    items = []
    for name, peer in sorted(peers.items()):
        cloud = peer.extra.get("type") == "cloud"
        last = next((h for h in history if h["peer"] == name), None)
        probe = seen.get(name) if isinstance(seen.get(name), dict) else None
        items.append({
            "name": name, "kind": "cloud" if cloud else "ssh", "host": peer.host,
            "user": None if cloud else peer.user, "path": peer.path,
            "mode": peer.extra.get("mode") if cloud else None,
            "seen": _last_seen(probe, last),
            "last_sync": None if last is None else {k: last[k] for k in (
                "time", "ok", "mode", "pushed", "pulled", "merged", "deleted", "conflicts", "error", "seconds")},
            "pending": pending.get(name),
            "backoff": _backoff(backoff.get(name), now),
        })
    return {"items": items}


def _last_seen(probe: dict | None, last: dict | None) -> dict | None:
    """The newer of the last probe and the last sync: reachable then or not, and what was measured."""
    seen = None
    if last is not None:
        reachable = last["ok"] or (last.get("error_kind") not in UNREACHABLE_KINDS)
        seen = {"time": last["time"], "source": "sync", "reachable": reachable,
                "clock_offset_s": last.get("clock_offset"), "error": None if reachable else last.get("error")}
    if probe is not None and iso(probe.get("time")) and (seen is None or _epoch(iso(probe["time"])) >= _epoch(seen["time"])):
        seen = {"time": iso(probe["time"]), "source": "probe", "reachable": bool(probe.get("reachable")),
                "clock_offset_s": _number(probe.get("clock_offset_s")),
                "error": str(probe["error"]).splitlines()[0] if probe.get("error") else None}
    if seen is not None and probe is not None:  # what only a probe measures, from the last one
        seen.update(rtt_ms=_number(probe.get("rtt_ms")), version=probe.get("version"),
                    probed=iso(probe.get("time")))
    return seen


def _backoff(record, now: float) -> dict | None:
    if not isinstance(record, dict) or not isinstance(record.get("retry_at"), (int, float)) or record["retry_at"] <= now:
        return None
    return {"failures": record.get("failures"), "retry_at": iso(record["retry_at"]),
            "error": str(record.get("error") or "")[:300]}


def _pending_changes(ws: Workspace, peers: dict) -> dict[str, int]:
    """Per SSH peer already synced: local files changed, created or deleted since the last sync
    with it (from the ancestor; the peer's own changes are known only by asking it)."""
    wanted = {name: p.extra.get("instanceId") for name, p in peers.items()
              if p.extra.get("type") != "cloud" and isinstance(p.extra.get("instanceId"), str)}
    ancestors = {}
    for name, instance in wanted.items():
        doc, problem = _read_json_file(ws.state / "ancestors" / f"{instance}.json")
        if not problem and isinstance(doc, dict) and isinstance(doc.get("entries"), dict):
            ancestors[name] = doc["entries"]
    if not ancestors:
        return {}

    try:  # the scan cache is read, never written: a sync may be running
        local = scan(ws.root, ws.sync_config().selection, ws.state / "scan-cache.json", save_cache=False).manifest
    except (PeersyncError, OSError):
        return {}
    out = {}
    for name, entries in ancestors.items():
        changed = sum(1 for path, e in local.items()
                      if not (isinstance(w := entries.get(path), list) and len(w) >= 4
                              and w[0] == e.size and w[3] == e.hash))
        out[name] = changed + sum(1 for path in entries if path not in local)
    return out


def probe_peers(ws: Workspace, *, timeout: float = 5.0, now: float | None = None) -> dict:
    """Ask every peer now (concurrently) and remember the answers for later pages (SEEN_FILE)."""


    peers = list(ws.load_peers().values())
    if not peers:
        return {}
    stamp = time.time() if now is None else now
    results = asyncio.run(status(ws, peers, timeout=timeout))
    keep = ("reachable", "rtt_ms", "clock_offset_s", "version", "error", "restricted")
    seen = {r["peer"]: {"time": stamp, **{k: r.get(k) for k in keep}} for r in results}
    ensure_private_dir((ws.state / SEEN_FILE).parent)
    atomic_write_json(ws.state / SEEN_FILE, {"format": 1, "peers": seen})
    return seen


# -- conflicts ---------------------------------------------------------------------------------

def conflicts_section(ws: Workspace, *, contents: bool) -> dict:
    """Quarantined versions, newest first, each with a diff against the live file when both are text."""

    try:
        store = conflict_store(ws)
    except PeersyncError as err:
        return {"items": [], "notice": str(err).splitlines()[0]}
    raw, problem = _read_json_file(store.conflicts_index)
    name = store.conflicts_index.relative_to(ws.root)
    notice = None
    items = raw.get("conflicts") if isinstance(raw, dict) else None
    if problem or (raw is not None and not isinstance(items, list)):
        items = _conflicts_on_disk(store)
        why = problem or "does not hold a list of conflicts"
        notice = (f"The conflicts index ({name}) {why}. The {len(items)} kept version(s) found on disk are "
                  "listed below and none is lost; the next sync lists them again. Restore and drop need the "
                  "index, so they wait until then.")
    elif raw is None:
        items = []
    rows = []
    for item in reversed(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(item.get("path"), str):
            continue
        rows.append(_conflict_row(ws, store, item, contents=contents, indexed=notice is None))
    section = {"items": rows}
    if notice:
        section["notice"] = notice
    return section


def _conflicts_on_disk(store) -> list[dict]:
    found = []
    for top in sorted(store.conflicts_dir.glob("c-*")) if store.conflicts_dir.is_dir() else ():
        for kept, path in sorted(kept_files(top), key=lambda f: f[1]):
            st = os.stat(kept)
            found.append({"id": top.name, "path": path, "time": st.st_mtime,
                          "size": st.st_size, "peer": None, "reason": "unknown (the index is damaged)"})
    return found


def _conflict_row(ws: Workspace, store, item: dict, *, contents: bool, indexed: bool) -> dict:
    cid, path = item["id"], item["path"]
    kept = store.conflicts_dir / cid / internal_rel(path)
    live = ws.root / path
    row = {"id": cid, "path": path, "time": iso(item.get("time")), "peer": item.get("peer"),
           "reason": str(item.get("reason") or "conflict"), "size": _number(item.get("size")),
           "actions": indexed, "diff": None, "diff_note": None, "live": None,
           "commands": {verb: f"peersync -w {shlex.quote(str(ws.root))} conflicts {verb} {cid}"
                        for verb in ("show", "restore", "drop")}}
    try:
        kept_bytes = kept.read_bytes() if not kept.is_symlink() else None
    except OSError:
        kept_bytes = None
    if kept_bytes is None:
        row["diff_note"] = "the kept version is missing from conflicts/"
        return row
    try:
        live_bytes = live.read_bytes() if live.is_file() and not live.is_symlink() else None
    except OSError:
        live_bytes = None
    row["live"] = {"exists": live_bytes is not None, "size": None if live_bytes is None else len(live_bytes),
                   "same": live_bytes == kept_bytes}
    if not contents:
        row["diff_note"] = "contents are not shown in a page that leaves this machine"
        return row
    if live_bytes == kept_bytes:
        row["diff_note"] = "identical to the live file"
        return row
    row["diff"], row["diff_note"] = text_diff(live_bytes, kept_bytes, path, cid)
    return row


def text_diff(live: bytes | None, kept: bytes, path: str, cid: str) -> tuple[list | None, str | None]:
    """Unified diff rows [kind, text] from the live file to the kept version ('-' only live, '+'
    only kept, ' ' both, '@' hunk header); (None, why) for binary or very large files."""
    if len(kept) > DIFF_MAX_BYTES or (live is not None and len(live) > DIFF_MAX_BYTES):
        return None, f"larger than {DIFF_MAX_BYTES // 1024} kB: not diffed"
    try:
        kept_text = kept.decode("utf-8")
        live_text = "" if live is None else live.decode("utf-8")
    except UnicodeDecodeError:
        return None, "binary file: not diffed"
    if "\0" in kept_text or "\0" in live_text:
        return None, "binary file: not diffed"
    lines = difflib.unified_diff(live_text.splitlines(), kept_text.splitlines(),
                                 fromfile=f"live {path}" if live is not None else "(no live file)",
                                 tofile=f"kept {cid}", lineterm="", n=3)
    rows = []
    for line in lines:
        if line.startswith(("---", "+++")) and len(rows) < 2:
            continue  # the page labels the two sides itself
        kind = "@" if line.startswith("@@") else line[:1] or " "
        rows.append([kind, line if kind == "@" else line[1:]])
    if len(rows) > DIFF_MAX_LINES:
        more = len(rows) - DIFF_MAX_LINES
        rows = rows[:DIFF_MAX_LINES] + [["…", f"{more} more diff line{'s' if more != 1 else ''} not shown"]]
    return rows, None if live is not None else "no live file: everything would come back"


# -- trash and deletion records ------------------------------------------------------------------

def trash_section(ws: Workspace, history: list[dict]) -> dict:
    """Trash batches (one per sync that deleted here), newest first, with the sync that did it."""

    trash = Store(ws.root, None).trash_dir  # the selection is not needed to find the trash
    try:
        days = ws.sync_config().trash_days
    except PeersyncError:
        days = 30
    batches = []
    for batch in sorted(trash.iterdir(), reverse=True) if trash.is_dir() else ():
        if not batch.is_dir():
            continue
        try:
            started = datetime.strptime(batch.name[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            started = None
        kept = sorted(kept_files(batch, links=True), key=lambda f: f[1])  # a long path's copy by its real path
        files, rels = [Path(f) for f, _ in kept], [rel for _, rel in kept]
        batches.append({
            "batch": batch.name, "time": iso(started), "files": len(rels),
            "bytes": sum(p.lstat().st_size for p in files), "paths": rels[:TRASH_FILES_SHOWN],
            "kept_until": iso(started + days * 86400) if started else None,
            "sync": _deleting_sync(history, started, set(rels)),
        })
    return {"batches": batches, "days": days, "dir": str(trash.relative_to(ws.root))}


def _deleting_sync(history: list[dict], started: float | None, paths: set[str]) -> dict | None:
    """The history entry of the sync that filled a trash batch: the first one recorded after the
    batch began that deleted one of its paths here.  None for a sync another machine started
    (recorded in that machine's history)."""
    if started is None:
        return None
    best = None
    for entry in history:  # newest first
        at = _epoch(entry["time"])
        if at is not None and at >= started - 1 and paths & set(entry["deleted_local"]):
            best = entry
    return None if best is None else {"time": best["time"], "peer": best["peer"], "mode": best["mode"]}


def records_section(ws: Workspace) -> dict:
    """Deletion records: the deletion versions on record (versions.sqlite) and the records from
    before version vectors (tombstones.json) — versions deleted here or there, not to come back."""

    path = ws.state / tombstones.FILE
    raw, problem = _read_json_file(path)
    if problem or (raw is not None and (not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict))):
        return {"items": [], "total": 0,
                "notice": f"The deletion records ({path.relative_to(ws.root)}) "
                          f"{problem or 'are in a format this version does not read'}; "
                          "they are ignored (at worst a deleted file comes back; nothing is lost)."}
    try:
        days = ws.sync_config().trash_days
    except PeersyncError:
        days = 30
    rows = []
    for rel, records in tombstones.load(path).items():
        for wire in records if isinstance(records, list) else ():
            if isinstance(wire, list) and len(wire) == 5 and all(isinstance(v, (int, float)) for v in wire[:2]) \
                    and isinstance(wire[4], (int, float)):
                rows.append({"path": rel, "size": wire[0], "mtime": iso(wire[1] / 1e9), "recorded": iso(wire[4]),
                             "expires": iso(wire[4] + days * 86400)})
    instance = ws.existing_instance_id()
    if instance and (ws.state / VERSIONS_FILE).exists():
        for rel, entry, at in open_versions(ws.state, versions.short_id(instance)).deletions():
            rows.append({"path": rel, "size": entry.size, "mtime": iso(entry.mtime_ns / 1e9), "recorded": iso(at),
                         "expires": iso(at + days * 86400)})
    rows.sort(key=lambda r: (r["recorded"] or "", r["path"]), reverse=True)
    return {"items": rows[:RECORDS_SHOWN], "total": len(rows)}


# -- backups: the one place that reads backup data -------------------------------------------------

def backup_overview(ws: Workspace, *, online: bool = True, now: float | None = None) -> dict:
    """Everything the page shows about backups, from the backup engine (peersync.backup: restic
    through rclone).

    Re-point this function (and actions.restore_snapshot) at another engine; the page reads only
    this structure:

        available       bool: this peersync has a backup engine
        target          str | None: where backups go, secrets removed
        encrypted       bool | None (restic repositories always are)
        initialized     bool: a repository exists at the target (as far as known)
        source          "target" (asked it now) | "local cache" (the last listing seen here)
        snapshots       oldest first: {id, time (ISO UTC), host, own (made by this workspace),
                        files, bytes (their total size), added_bytes / added_files (what that
                        backup stored anew / new and changed files; None when not known, e.g. a
                        snapshot another machine made with restic < 0.17), kept (under the
                        retention policy), reasons [str]}
        unreadable      [{id, error}]: snapshots restic refuses (damaged, or not made with the key)
        retention       {policy: text, kept: n, removed: n} | None when no policy is set
        repository      {bytes, objects} stored at the target | None when not asked (offline)
        content_bytes   what the repository stores (compressed, deduplicated), or the sum of the
                        known added_bytes when offline
        last_run        {time, ok, error, snapshot} | None
        last_verify     {time, ok, snapshots, objects, bad (damaged packs)} | None
        interval        seconds between scheduled backups | None
        next_due        ISO | None;  due: bool
        running         bool: a backup holds the local backup lock now
        passphrase      {source, where}: where the repository's passphrase comes from (never its value)
        error           str | None: why the target could not be asked (the rest is then local)
    """
    try:
        from peersync import (
            backup,  # lazy: a build without the backup engine still shows the rest
        )
    except ModuleNotFoundError as err:
        if err.name != "peersync.backup":
            raise
        return {"available": False, "snapshots": []}
    cfg = backup.load_config(ws)
    runs = backup.last_run(ws)
    due_at = backup.next_due(ws, cfg)
    verified = backup.last_verify(ws)
    out = {
        "available": True, "target": runs.get("target"), "encrypted": True, "initialized": False,
        "source": "local cache", "snapshots": [], "unreadable": [], "retention": None, "repository": None,
        "content_bytes": 0, "interval": cfg.interval, "due": backup.backup_due(ws, now),
        "next_due": iso(due_at) if due_at else None, "running": _backup_running(ws), "error": None,
        "last_run": None if not runs.get("last_attempt") else {
            "time": iso(runs.get("last_attempt")), "ok": runs.get("last_ok"),
            "error": (runs.get("error") or None), "snapshot": runs.get("snapshot")},
        "last_verify": None if not verified else {
            "time": iso(verified.get("checked_at")), "ok": verified.get("ok"), "snapshots": verified.get("snapshots"),
            "objects": None, "bad": verified.get("bad_packs")},
        "passphrase": guarded(lambda: backup.passphrase_info(ws, cfg), "passphrase"),
    }
    summaries: list[dict] = []
    decisions: list[dict] = []
    if online:
        try:
            doc = backup.status(ws)
            if not doc["restic"]["ok"]:
                raise PeersyncError(doc["restic"]["fix"])
            summaries, decisions = doc["snapshots"], doc["retention"]
            out.update(source="target", initialized=doc["initialized"], target=doc["target"],
                       unreadable=doc.get("unreadable") or [])
            if doc.get("repository"):
                out["repository"] = {"bytes": doc["repository"]["bytes"], "objects": doc["repository"]["blobs"]}
                out["content_bytes"] = doc["repository"]["bytes"] or 0
        except PeersyncError as err:
            out["error"] = str(err).splitlines()[0]
            online = False
    if not online:
        snaps, meta = backup.cached_listing(ws)
        version = tuple(int(p) for p in str(meta.get("restic") or "0.14").split(".") if p.isdigit())
        summaries = [s.summary() for s in snaps]
        decisions = backup.retention_decisions(snaps, cfg.keep, version) if cfg.keep else []
        out["initialized"] = bool(snaps) or bool(runs.get("last_success"))
        out["unreadable"] = [{"id": k, "error": v} for k, v in sorted((meta.get("unreadable") or {}).items())]
        out["target"] = meta.get("target") or out["target"]
        out["content_bytes"] = sum(s["bytes_added"] or 0 for s in summaries)
        if out["target"] is None:
            try:
                out["target"] = backup.default_target(ws).as_posix() if not cfg.target else None
            except PeersyncError:
                pass
    kept = {d["id"]: (d["keep"], d["reasons"]) for d in decisions}
    instance = ws.existing_instance_id()
    for s in summaries:
        keep, reasons = kept.get(s["id"], (True, ["no retention policy: all kept"]))
        out["snapshots"].append({
            "id": s["id"], "time": s["time"], "host": s["host"], "own": s["instance"] == instance,
            "files": s["files"], "bytes": s["bytes"], "added_bytes": s["bytes_added"], "added_files": s["files_added"],
            "kept": keep, "reasons": reasons if keep else ["no rule keeps it: the next prune removes it"]})
    if cfg.keep is not None and not cfg.keep.empty:
        out["retention"] = {"policy": cfg.keep.describe(),
                            "kept": sum(1 for s in out["snapshots"] if s["kept"]),
                            "removed": sum(1 for s in out["snapshots"] if not s["kept"])}
    return out


def _backup_running(ws: Workspace) -> bool:
    info, _ = _read_json_file(ws.state / "backup" / "lock.info")
    return isinstance(info, dict) and isinstance(info.get("pid"), int) and pid_alive(info["pid"])


# -- auto-sync: the one place that tells how this workspace syncs on its own -------------------------

def auto_sync_modes(ws: Workspace, *, now: float | None = None) -> dict:
    """Heartbeat, cron and watch state.  Re-point this function when a mode is added:

        mode        "watch" | "cron" | "heartbeat" | "off": what drives syncing now
        heartbeat   {enabled, interval, timeout, installed (HEARTBEAT.md runs it), last_run,
                     next_due, session_start, session_end}
        watch       {running, pid}
        cron        {installed: bool | None (None: this version cannot tell), detail}
        dashboard   {refresh: bool, out: str}: the page is rewritten after each automatic sync
    """

    now = time.time() if now is None else now
    cfg = auto.load_auto(ws)
    state = auto.read_state(ws.state)
    last = state.get("last_run") if isinstance(state.get("last_run"), (int, float)) else None
    heartbeat_md = ws.root / "HEARTBEAT.md"
    try:
        installed = HEARTBEAT_MARK in heartbeat_md.read_text(errors="replace")
    except OSError:
        installed = False
    due = None
    if cfg.enabled:
        due = now if last is None or last + cfg.interval < now else last + cfg.interval
    watch = _watch_daemon(ws)
    # The OpenClaw cron job (issue 11) is not known to this version: detect it here once it exists.
    cron = {"installed": None, "detail": None}
    mode = "watch" if watch["running"] else "cron" if cron["installed"] else "heartbeat" if cfg.enabled else "off"

    conf = settings(ws)
    return {
        "mode": mode,
        "heartbeat": {"enabled": cfg.enabled, "interval": cfg.interval, "timeout": cfg.timeout,
                      "installed": installed, "last_run": iso(last), "next_due": iso(due),
                      "session_start": cfg.on_session_start, "session_end": cfg.on_session_end},
        "watch": watch, "cron": cron,
        "dashboard": {"refresh": conf.refresh, "out": conf.out},
    }


def _watch_daemon(ws: Workspace) -> dict:
    """Whether `peersync watch` runs for this workspace: the pid its lock file names is alive and
    is a peersync watch.  Read-only (taking the lock, even briefly, could turn a daemon away)."""

    try:
        pid = int((ws.state / LOCK_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return {"running": False, "pid": None}
    if pid <= 0 or not pid_alive(pid):
        return {"running": False, "pid": None}
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        running = b"watch" in cmdline and any(b"peersync" in part for part in cmdline)
    except OSError:
        running = True  # no /proc (macOS): an alive pid is the best we can tell
    return {"running": running, "pid": pid if running else None}


# -- secrets -----------------------------------------------------------------------------------

SECRET_NAME_PARTS = ("SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "_KEY", "CREDENTIAL")


def known_secrets(ws: Workspace) -> list[str]:
    """Values that must never appear in a page: the backup passphrase, and environment values
    whose names say they are secret (cloud keys and tokens)."""
    found = {v for k, v in os.environ.items() if any(part in k.upper() for part in SECRET_NAME_PARTS)}
    try:  # read here, not through the backup engine: backup_overview stays its only reader
        section = ws.raw_config().get("backup")
    except PeersyncError:
        section = None
    passphrase = section.get("passphrase") if isinstance(section, dict) else None
    if isinstance(passphrase, str):
        found.add(re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), passphrase))
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def scrub(value, secrets: list[str]):
    """`value` with every secret replaced by ***, in every string it holds."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value
