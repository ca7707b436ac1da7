"""CLI commands for syncing and looking back: status, sync, push, pull, diff, history."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import asyncio
from typing import List, Optional

import typer

from peersync.cli.app import state
from peersync.cli.jsonout import error_doc, report_doc
from peersync.core.types import Mode
from peersync.errors import ConnectError


def _run(ctx: typer.Context, peers: list[str] | None, mode: Mode, dry_run: bool, force: bool,
         policy: Optional[str]) -> None:
    from peersync.cli.outcome import sync_and_print

    st = state(ctx)
    code = sync_and_print(st.workspace, st.command, st.json, peers, mode.value, dry_run, force, policy)
    if code:
        raise typer.Exit(code)


PEERS = typer.Argument(None, help="Peer names (default: all peers of this workspace, concurrently).")
FORCE = typer.Option(False, "--force", help="Allow a sync that deletes more than the mass-delete guard allows.")
POLICY = typer.Option(None, "--policy", help="Conflict policy for this run: newest, local, remote, skip, manual.")
DRY_RUN = typer.Option(False, "--dry-run", "-n", help="Show what would change; change nothing.")


def sync(ctx: typer.Context, peers: Optional[List[str]] = PEERS, dry_run: bool = DRY_RUN, force: bool = FORCE,
         policy: Optional[str] = POLICY) -> None:
    """Two-way sync with the named peers (all peers, concurrently, when none is named)."""
    _run(ctx, peers, Mode.SYNC, dry_run, force, policy)


def push(ctx: typer.Context, peers: Optional[List[str]] = PEERS, force: bool = FORCE,
         dry_run: bool = DRY_RUN) -> None:
    """Make the peer match this workspace (its unseen versions are kept as conflicts)."""
    _run(ctx, peers, Mode.PUSH, dry_run, force, None)


def pull(ctx: typer.Context, peers: Optional[List[str]] = PEERS, force: bool = FORCE,
         dry_run: bool = DRY_RUN) -> None:
    """Make this workspace match the peer (local unseen versions are kept as conflicts)."""
    _run(ctx, peers, Mode.PULL, dry_run, force, None)


def diff(ctx: typer.Context, peers: Optional[List[str]] = PEERS, policy: Optional[str] = POLICY) -> None:
    """What a sync would do, per file, changing nothing (same as sync --dry-run)."""
    _run(ctx, peers, Mode.SYNC, True, True, policy)


def status(ctx: typer.Context,
           peer: Optional[str] = typer.Argument(None, help="Only this peer (default: all peers)."),
           timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to wait for each peer.")) -> None:
    """Per peer: reachable?, round trip, clock offset, remote version, last sync; and the files
    that need a look (versions a merge kept live).  Exit status 3 when a peer could not be reached."""
    from peersync.peers.status import status as get_status
    from peersync.peers.status import linked_tops, status_text
    from peersync.replica.looks import looks_text, needing_a_look
    from peersync.sync.runner import select_peers

    st = state(ctx)
    ws = st.workspace()
    peers = ws.load_peers()
    looks = needing_a_look(ws, ws.sync_config())
    linked = linked_tops(ws)
    if not peers and peer is None:
        st.emit("\n".join(filter(None, [f"🔄 peersync: no peers yet in {ws.root}. Add one: peersync peers add NAME HOST --path P",
                                        *linked, looks_text(looks)])), {"peers": [], "needs_look": looks, "notes": linked})
        return
    results = asyncio.run(get_status(ws, select_peers(ws, [peer] if peer else None), timeout=timeout))
    down = [r["peer"] for r in results if not r["reachable"]]
    error = error_doc("connect", f"{len(down)} of {len(results)} peer{'s' if len(results) != 1 else ''} "
                                 f"could not be reached: {', '.join(down)}", None, ConnectError.exit_code) if down else None
    st.emit("\n".join(filter(None, [status_text(results), *linked, looks_text(looks)])),
            {"peers": [_probe_doc(r) for r in results], "needs_look": looks, "notes": linked}, error=error)
    if down:
        raise typer.Exit(ConnectError.exit_code)


def _probe_doc(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in ("error", "error_kind")}
    out["kind"] = result.get("kind", "ssh")
    out["error"] = error_doc(result.get("error_kind") or "connect", result["error"], None, ConnectError.exit_code) \
        if result.get("error") else None
    return out


def history(ctx: typer.Context,
            limit: int = typer.Option(10, "--limit", "-n", min=1, help="How many syncs to show, newest first.")) -> None:
    """Past syncs, newest first: what moved, what was deleted (to the trash), conflicts (clawdbot-sync's too)."""
    from peersync.core.render import history_line
    from peersync.workspace.clawdbot import entry_view, is_peersync, without_clawdbot_keys

    st = state(ctx)
    entries = [e for e in st.workspace().history(limit) if isinstance(e, dict)]
    lines, docs = [], []
    for entry in entries:
        if is_peersync(entry):
            lines.append(history_line(entry))
            docs.append(report_doc(without_clawdbot_keys(entry)))
            continue
        view = entry_view(entry)  # written by clawdbot-sync: time, action, files, status
        detail = (f"{view['files']} files" if view["files"] else "no changes") if view["ok"] else \
            ((view["error"] or "").splitlines() or ["failed"])[0][:120]
        lines.append(f"{'✅' if view['ok'] else '❌'} {view['time'] or '?'} {view['mode']} {view['peer'] or '?'} {detail}")
        docs.append({"tool": "clawdbot-sync", "time": view["time"], "mode": view["mode"], "peer": view["peer"],
                     "ok": view["ok"], "files": view["files"],
                     "error": error_doc("clawdbot-sync", view["error"]) if view["error"] else None})
    st.emit("\n".join(lines) or "No syncs yet.", {"entries": docs})


def register(app: typer.Typer) -> None:
    for fn in (status, sync, push, pull, diff, history):
        app.command(fn.__name__)(fn)
