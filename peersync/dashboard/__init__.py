"""The dashboard: one self-contained HTML page of peers, syncs, conflicts, trash, backups and auto-sync.

`data` gathers the document, `page` renders it (uPlot vendored and inlined, nothing fetched),
`server` serves it live on 127.0.0.1 with restore / drop buttons (`actions`), `config` holds the
settings (config.yaml `dashboard:`).  This module writes the static file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from peersync.dashboard.config import (  # noqa: F401  (the package's face)
    DEFAULT_OUT,
    SEED_OUT,
    Settings,
    leaves_machine,
    out_path,
    settings,
)
from peersync.dashboard.data import gather, probe_peers
from peersync.dashboard.page import render
from peersync.workspace.storage import atomic_write_bytes
from peersync.workspace.workspace import Workspace


@dataclass
class Written:
    path: Path
    doc: dict
    synced: bool  # the page lies inside the synced selection (so without conflict contents)


def write_dashboard(ws: Workspace, out: str | None = None, *, probe: bool = True,
                    backups_online: bool = True) -> Written:
    """Gather, render and atomically write the static page (mode 0600: it may hold conflict contents)."""

    path = out_path(ws, out)
    synced = leaves_machine(ws, path)
    if probe:
        probe_peers(ws)
    doc = gather(ws, contents=not synced, backups_online=backups_online)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render(doc).encode("utf-8", "backslashreplace"))  # a name not UTF-8: \udcNN
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
