"""Peer health: reachability, round trip, clock offset, remote version, last sync."""

from __future__ import annotations

# Lazy imports: the clawdbot-sync history reader loads on use.
import asyncio
import time

from peersync.cloud.folder import probe_cloud
from peersync.core.paths import valid_instance_id
from peersync.errors import PeersyncError
from peersync.transport.ssh import open_session
from peersync.workspace.workspace import Peer, Workspace


async def probe(ws: Workspace, peer: Peer, *, timeout: float = 10.0) -> dict:
    """Connect, start the agent, say hello; never raises for per-peer trouble."""
    started = time.monotonic()
    out = {"peer": peer.name, "host": peer.host, "user": peer.user, "path": peer.path, "reachable": False}
    try:
        session = await open_session(ws, peer, timeout=timeout)
    except PeersyncError as err:
        out["error"] = str(err)
        return out
    try:
        version = session.hello.get("version")
        instance = session.hello.get("instance_id")
        out.update(reachable=True, rtt_ms=round(session.rtt * 1000, 1), clock_offset_s=round(session.offset, 3),
                   # what a peer says is shown and kept only in its expected shape
                   version=version if isinstance(version, str) and len(version) <= 40 and version.isprintable() else "?",
                   workspace=bool(session.hello.get("workspace")),
                   instance_id=instance if valid_instance_id(instance) else None,
                   restricted=bool(session.hello.get("restricted")))
    finally:
        await session.close()
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


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


def status_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        last = r.get("last_sync")
        when = f"last sync {last['time']}{'' if last['ok'] else ' (failed)'}" if last else "never synced"
        if r["reachable"] and r.get("kind") == "cloud":
            lines.append(f"☁️ {r['peer']} ({r['host']}) — {r.get('rtt_ms', 0):.0f} ms, {r.get('version')}, "
                         f"{r.get('mode')}; {when}")
        elif r["reachable"]:
            skew = r["clock_offset_s"]
            clock = f", clock {skew:+.1f} s" if abs(skew) >= 1 else ""
            ws_note = "" if r.get("workspace") else ", no workspace yet (the first sync creates it)"
            lines.append(f"🟢 {r['peer']} ({r['host']}) — {r['rtt_ms']:.0f} ms, peersync {r['version']}"
                         f"{clock}{ws_note}; {when}")
        else:
            lines.append(f"🔴 {r['peer']} ({r['host']}) — {r['error'].splitlines()[0]}; {when}")
    return "\n".join(lines)
