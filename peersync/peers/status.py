"""Peer health: reachability, round trip, clock offset, remote version, last sync."""

from __future__ import annotations

# Lazy imports: the clawdbot-sync history reader loads on use.
import asyncio
import os
import time

from peersync.cloud.folder import probe_cloud
from peersync.core.render import milliseconds
from peersync.core.paths import valid_instance_id
from peersync.errors import PeersyncError
from peersync.transport.ssh import open_session
from peersync.workspace.workspace import Peer, Workspace


async def probe(ws: Workspace, peer: Peer, *, timeout: float = 10.0, create: bool = False) -> dict:
    """Connect, start the agent, say hello; never raises for per-peer trouble.  `create` makes the
    peer's workspace (its root and peersync's state dir) when it is missing or not one yet."""
    started = time.monotonic()
    out = {"peer": peer.name, "host": peer.host, "user": peer.user, "path": peer.path, "reachable": False}
    try:
        session = await open_session(ws, peer, timeout=timeout)
    except PeersyncError as err:
        out["error"] = str(err)
        out["error_kind"] = err.kind
        return out
    try:
        hello = session.hello
        version, instance = hello.get("version"), hello.get("instance_id")
        out.update(reachable=True, rtt_ms=round(session.rtt * 1000, 1), clock_offset_s=round(session.offset, 3),
                   # what a peer says is shown and kept only in its expected shape
                   version=version if isinstance(version, str) and len(version) <= 40 and version.isprintable() else "?",
                   workspace=bool(hello.get("workspace")),
                   instance_id=instance if valid_instance_id(instance) else None,
                   restricted=bool(hello.get("restricted")), root=_path(hello.get("root")),
                   agent_workspace=bool(hello.get("agent_workspace")), home=_path(hello.get("home")))
        if create and not out["agent_workspace"] and out["root"] != out["home"]:
            created = await session.request("init")
            instance = created.get("instance_id")
            out.update(created=True, workspace=True, agent_workspace=True,
                       instance_id=instance if valid_instance_id(instance) else None)
    except PeersyncError as err:
        out.update(reachable=False, error=str(err), error_kind=err.kind)
    finally:
        await session.close()
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def _path(value) -> str | None:
    """A path the peer reported, kept only as a printable absolute path of sane length."""
    return value if isinstance(value, str) and value.startswith("/") and len(value) <= 4096 and value.isprintable() \
        else None


def last_sync(ws: Workspace, name: str) -> dict | None:
    """The newest real sync with `name` (peersync's or clawdbot-sync's), as clawdbot.entry_view."""
    from peersync.workspace.clawdbot import entry_view

    for view in map(entry_view, ws.history()):
        if view and view["peer"] == name and not view["dry_run"]:
            return view
    return None


async def status(ws: Workspace, peers: list[Peer], *, timeout: float = 10.0) -> list[dict]:
    results = await asyncio.gather(*((probe_cloud(ws, p, timeout=timeout) if p.extra.get("type") == "cloud"
                                      else probe(ws, p, timeout=timeout)) for p in peers))
    for result in results:
        last = last_sync(ws, result["peer"])
        result["last_sync"] = {"time": last.get("time"), "ok": last.get("ok")} if last else None
    return list(results)


def linked_tops(ws: Workspace) -> list[str]:
    """One line per selected top directory that is a link (`memory/` → a cloud drive's folder): the
    sync follows it, as the user configured it (replica/scan.py walk, replica/dirs.py)."""
    notes = []
    for top in ws.sync_config().selection.roots:
        path = ws.root / top
        if "/" not in top and path.is_symlink() and path.is_dir():
            notes.append(f"📎 {top}/ is a link to {os.path.realpath(path)}: synced through it")
    return notes


def status_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        last = r.get("last_sync")
        when = f"last sync {last['time']}{'' if last['ok'] else ' (failed)'}" if last else "never synced"
        if r["reachable"] and r.get("kind") == "cloud":
            lines.append(f"☁️ {r['peer']} ({r['host']}) — {milliseconds(r.get('rtt_ms') or 0)}, {r.get('version')}, "
                         f"{r.get('mode')}; {when}")
        elif r["reachable"]:
            skew = r["clock_offset_s"]
            clock = f", clock {skew:+.1f} s" if abs(skew) >= 1 else ""
            ws_note = "" if r.get("workspace") else ", no workspace yet (the first sync creates it)"
            lines.append(f"🟢 {r['peer']} ({r['host']}) — {milliseconds(r['rtt_ms'])}, peersync {r['version']}"
                         f"{clock}{ws_note}; {when}")
        else:
            first, *hint = r["error"].splitlines()
            lines.append(f"🔴 {r['peer']} ({r['host']}) — {first}; {when}" + "".join(f"\n   {h}" for h in hint))
    return "\n".join(lines)
