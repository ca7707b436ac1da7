"""The dashboard: one self-contained HTML page of peers, syncs, conflicts, trash, backups and auto-sync.

`data` gathers the document, `page` renders it (uPlot vendored and inlined, nothing fetched),
`server` serves it live on 127.0.0.1 with restore / drop buttons (`actions`).  This module holds
the settings (config.yaml `dashboard:`) and writing the static file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from peersync.errors import ConfigError
from peersync.core.paths import STATE_DIR
from peersync.workspace.workspace import Workspace

DEFAULT_OUT = f"{STATE_DIR}/dashboard.html"
SEED_OUT = "memory/sync-dashboard.html"  # the name the session-sync-cloud design uses


@dataclass(frozen=True)
class Settings:
    """config.yaml's `dashboard:` section."""

    refresh: bool = False  # rewrite the static page after each heartbeat / watch sync
    out: str = DEFAULT_OUT  # workspace-relative (or absolute) path of the static page


def settings(ws: Workspace) -> Settings:
    raw = ws.raw_config().get("dashboard")
    if raw is None:
        return Settings()
    where = f"{ws.config_file}: dashboard"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping", "Fix the file (it was not changed).")
    unknown = sorted(set(map(str, raw)) - {"refresh", "out"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}", "Known: out, refresh.")
    if not isinstance(raw.get("refresh", False), bool):
        raise ConfigError(f"{where}.refresh must be true or false", "Fix the file (it was not changed).")
    out = raw.get("out", DEFAULT_OUT)
    if not isinstance(out, str) or not out.strip():
        raise ConfigError(f"{where}.out must be a file path", "Fix the file (it was not changed).")
    return Settings(refresh=raw.get("refresh", False), out=out)


def out_path(ws: Workspace, out: str | None = None) -> Path:
    """Where the static page goes: `out` (a relative path is taken from the workspace root),
    else dashboard.out, else DEFAULT_OUT."""
    target = Path(out or settings(ws).out).expanduser()
    return target if target.is_absolute() else ws.root / target


def leaves_machine(ws: Workspace, path: Path) -> bool:
    """True when `path` is inside the synced selection: peers receive it (SEED_OUT is, unless
    excluded), so such a page must not carry file contents."""
    try:
        rel = path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return False
    return ws.sync_config().selection.contains(rel)


@dataclass
class Written:
    path: Path
    doc: dict
    synced: bool  # the page lies inside the synced selection (so without conflict contents)


def write_dashboard(ws: Workspace, out: str | None = None, *, probe: bool = True,
                    backups_online: bool = True) -> Written:
    """Gather, render and atomically write the static page (mode 0600: it may hold conflict contents)."""
    from peersync.dashboard.data import gather, probe_peers
    from peersync.dashboard.page import render
    from peersync.workspace.storage import atomic_write_bytes

    path = out_path(ws, out)
    synced = leaves_machine(ws, path)
    if probe:
        probe_peers(ws)
    doc = gather(ws, contents=not synced, backups_online=backups_online)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render(doc).encode())
    return Written(path, doc, synced)


def refresh_after_sync(ws: Workspace) -> str | None:
    """For the heartbeat and `watch`: rewrite the page when dashboard.refresh is on — from local
    state only (no probe, backups from the local cache), so it adds no network time.  Returns a
    line to show when that failed; a sync never fails because of its dashboard."""
    try:
        if not settings(ws).refresh:
            return None
        path = out_path(ws)
        if leaves_machine(ws, path):
            # Rewritten after every sync, a synced page would itself be a change to sync, for ever.
            rel = os.path.relpath(path, ws.root)
            return f"⚠️ Dashboard not refreshed: {rel} is synced to your peers; add it to sync.exclude"
        write_dashboard(ws, probe=False, backups_online=False)
    except Exception as err:  # noqa: BLE001 — any failure here is reported, never raised
        return f"⚠️ Dashboard not refreshed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None
