"""The clawdbot-sync skill's state files, read and written so that both tools understand each other.

clawdbot-sync keeps, in the same state dir as peersync (memory/clawdbot-sync/):

- history.json  {"entries": [{"timestamp", "action", "peer", "files", "status"}, …]}, newest
  first; its `status` command shows `entries[0].timestamp` as the last sync.  peersync keeps the
  recent syncs there and moves older ones to history-archive.jsonl (Workspace.record).
- config.json   {"autoSync", "syncSkills", "excludePatterns", …}; its `auto on|off` flips autoSync.
- peers.json    {"peers": {NAME: {"host", "user", "path", "addedAt"}}} — peersync's format too
  (Workspace.load_peers keeps unknown keys).

peersync writes its own history entries with the clawdbot-sync keys added, reads theirs through
`entry_view`, maps config.json onto config.yaml's structure without dropping a key, and keeps
config.json's autoSync in step with `auto on|off`.  Pure functions except `sync_config_json`.
"""

from __future__ import annotations

# Lazy imports: the JSON writer is needed only when config.json changes.
import time

# clawdbot-sync's own default excludes (its handler always excluded these from rsync).
CLAWDBOT_EXCLUDES = ("*.tmp", "*.log", ".git/", "cache/", "node_modules/", "*.bak")
# config.json keys that map onto config.yaml; every other key is kept under `clawdbot:`.
_MAPPED = {"syncSkills", "excludePatterns", "conflictResolution", "conflictStrategy", "autoSync",
           "syncInterval", "interval"}


# -- history --------------------------------------------------------------------------------
CLAWDBOT_KEYS = ("timestamp", "action", "files", "status")  # what with_clawdbot_keys adds


def is_peersync(entry: dict) -> bool:
    """Was this history entry written by peersync (else by clawdbot-sync)?"""
    return "ok" in entry or "mode" in entry


def without_clawdbot_keys(entry: dict) -> dict:
    """A peersync entry as peersync wrote it (its Report), for --json."""
    return {k: v for k, v in entry.items() if k not in CLAWDBOT_KEYS}


def files_count(entry: dict) -> int:
    """How many files a peersync entry moved, counted as clawdbot-sync counted them."""
    return sum(len(entry.get(key) or []) for key in
               ("pushed", "pulled", "merged", "deleted_local", "deleted_remote"))


def with_clawdbot_keys(entry: dict, now: float | None = None) -> dict:
    """A peersync history entry plus the keys clawdbot-sync reads, so its `status` and `history`
    show peersync's syncs too.  `timestamp` is UTC with a Z, as clawdbot-sync writes it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    return {"timestamp": stamp, "action": entry.get("mode", "sync"), "files": files_count(entry),
            "status": "success" if entry.get("ok") else "error", **entry}


def entry_view(entry) -> dict | None:
    """One history entry, written by either tool, in peersync's terms:
    {time, mode, peer, ok, files, counts, error, dry_run}.  None for an entry that is not a dict."""
    if not isinstance(entry, dict):
        return None
    ours = is_peersync(entry)
    if ours:
        ok = bool(entry.get("ok"))
        files = files_count(entry)
        counts = {key: len(entry.get(key) or []) for key in ("pushed", "pulled", "merged", "conflicts")}
    else:  # a clawdbot-sync entry
        ok = entry.get("status") in ("success", "ok")
        files = entry.get("files") if isinstance(entry.get("files"), int) else 0
        counts = {}
    error = entry.get("error") if isinstance(entry.get("error"), str) else None
    if not ok and not error and not ours:
        error = f"status {entry.get('status')!r}" if entry.get("status") is not None else None
    return {"time": entry.get("time") or entry.get("timestamp"), "mode": entry.get("mode") or entry.get("action") or "sync",
            "peer": entry.get("peer"), "ok": ok, "files": files, "counts": counts, "error": error,
            "dry_run": bool(entry.get("dry_run")), "tool": "peersync" if ours else "clawdbot-sync"}


# -- config.json ----------------------------------------------------------------------------
def config_from_json(raw) -> dict:
    """clawdbot-sync's config.json mapped onto config.yaml's structure.  Keys without a
    peersync meaning are kept, unchanged, under `clawdbot:` (so writing config.yaml from this
    loses nothing)."""
    if not isinstance(raw, dict):
        return {}
    sync: dict = {}
    if "syncSkills" in raw:
        sync["skills"] = bool(raw["syncSkills"])
    patterns = raw.get("excludePatterns")
    if isinstance(patterns, list) and all(isinstance(p, str) for p in patterns):
        sync["exclude"] = list(patterns)
    strategy = raw.get("conflictResolution") or raw.get("conflictStrategy")
    if isinstance(strategy, str):
        sync["policy"] = {"newest-wins": "newest", "timestamp": "newest"}.get(strategy, strategy)
    auto: dict = {}
    if "autoSync" in raw:
        auto["enabled"] = bool(raw["autoSync"])
    for key in ("syncInterval", "interval"):
        if isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool):
            auto["interval"] = raw[key]
    out = {"sync": sync, "auto": auto}
    rest = {k: v for k, v in raw.items() if k not in _MAPPED}
    if rest:
        out["clawdbot"] = rest
    return out


def sync_config_json(ws, enabled: bool) -> bool:
    """Keep a clawdbot-sync config.json's autoSync equal to peersync's auto setting (every
    other key untouched).  Returns True when the file was changed; no file, nothing done."""
    import json

    from peersync.workspace.storage import atomic_write_json

    path = ws.state / "config.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return False  # absent or unreadable: never overwrite what cannot be read
    if not isinstance(data, dict) or data.get("autoSync") is enabled:
        return False
    data["autoSync"] = enabled
    atomic_write_json(path, data)
    return True
