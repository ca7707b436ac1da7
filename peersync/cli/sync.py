"""CLI commands for peers and syncing: peers, status, sync, push, pull, diff, history."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import asyncio
from typing import List, Optional

import typer

from peersync.cli.app import state
from peersync.core.types import Mode, Policy
from peersync.errors import UsageError

peers_app = typer.Typer(help="Configured peers (peers.json).", no_args_is_help=True)


def _finish(reports, st) -> None:
    from peersync.core.render import reports_text

    st.emit(reports_text(reports), {"ok": all(r.ok for r in reports), "reports": [r.to_json() for r in reports]})
    failed = [r.error_exit or 1 for r in reports if not r.ok]
    if failed:
        raise typer.Exit(max(failed))


def _run(ctx: typer.Context, peers: list[str] | None, mode: Mode, dry_run: bool, force: bool,
         policy: Optional[str]) -> None:
    from peersync.sync.runner import run_sync

    st = state(ctx)
    try:
        chosen = Policy(policy) if policy else None
    except ValueError:
        raise UsageError(f"unknown policy {policy!r}", "Use one of: newest, local, remote, skip, manual.") from None
    reports = run_sync(st.workspace(), peers or None, mode=mode, dry_run=dry_run, force=force, policy=chosen)
    _finish(reports, st)


PEERS = typer.Argument(None, help="Peer names (default: all peers).")
FORCE = typer.Option(False, "--force", help="Allow a sync that deletes more than the mass-delete guard allows.")
POLICY = typer.Option(None, "--policy", help="Conflict policy for this run: newest, local, remote, skip, manual.")


def sync(ctx: typer.Context, peers: Optional[List[str]] = PEERS,
         dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would change; change nothing."),
         force: bool = FORCE, policy: Optional[str] = POLICY) -> None:
    """Two-way sync with the named peers (all peers, concurrently, when none is named)."""
    _run(ctx, peers, Mode.SYNC, dry_run, force, policy)


def push(ctx: typer.Context, peers: Optional[List[str]] = PEERS, force: bool = FORCE,
         dry_run: bool = typer.Option(False, "--dry-run", "-n")) -> None:
    """Make the peer match this workspace (its unseen versions are kept as conflicts)."""
    _run(ctx, peers, Mode.PUSH, dry_run, force, None)


def pull(ctx: typer.Context, peers: Optional[List[str]] = PEERS, force: bool = FORCE,
         dry_run: bool = typer.Option(False, "--dry-run", "-n")) -> None:
    """Make this workspace match the peer (local unseen versions are kept as conflicts)."""
    _run(ctx, peers, Mode.PULL, dry_run, force, None)


def diff(ctx: typer.Context, peers: Optional[List[str]] = PEERS, policy: Optional[str] = POLICY) -> None:
    """What a sync would do, per file, changing nothing (same as sync --dry-run)."""
    _run(ctx, peers, Mode.SYNC, True, True, policy)


def status(ctx: typer.Context, peer: Optional[str] = typer.Argument(None),
           timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for each peer.")) -> None:
    """Per peer: reachable?, round trip, clock offset, remote version, last sync."""
    from peersync.peers.status import status as get_status
    from peersync.peers.status import status_text
    from peersync.sync.runner import select_peers

    st = state(ctx)
    ws = st.workspace()
    peers = ws.load_peers()
    if not peers and peer is None:
        st.emit("🔄 peersync: no peers yet. Add one: peersync peers add NAME HOST --user U --path P",
                {"peers": []})
        return
    results = asyncio.run(get_status(ws, select_peers(ws, [peer] if peer else None), timeout=timeout))
    st.emit(status_text(results), {"peers": results})
    if peer and not results[0]["reachable"]:
        raise typer.Exit(1)


def history(ctx: typer.Context, limit: int = typer.Option(10, "--limit", "-n", min=1)) -> None:
    """Past syncs, newest first (clawdbot-sync's entries too)."""
    from peersync.workspace.clawdbot import entry_view

    st = state(ctx)
    entries = st.workspace().history()[:limit]
    lines = []
    for view in filter(None, map(entry_view, entries)):
        icons = [f"{label} {view['counts'][key]}" for key, label in
                 (("pushed", "📤"), ("pulled", "📥"), ("merged", "🔀"), ("conflicts", "⚠️"))
                 if view["counts"].get(key)]
        if view["ok"]:
            detail = " ".join(icons) or (f"{view['files']} files" if view["files"] else "no changes")
        else:
            detail = ((view["error"] or "").splitlines() or ["failed"])[0][:120]
        lines.append(f"{'✅' if view['ok'] else '❌'} {view['time'] or '?'} {view['mode']} {view['peer'] or '?'} {detail}")
    st.emit("\n".join(lines) or "No syncs yet.", {"entries": entries})


@peers_app.command("list")
def peers_list(ctx: typer.Context) -> None:
    """Configured peers."""
    st = state(ctx)
    peers = st.workspace().load_peers()
    lines = [f"• {p.name} — {p.target}:{p.path or '(same path)'}" + (f" port {p.port}" if p.port else "")
             for p in peers.values()]
    st.emit("\n".join(lines) or "No peers yet. Add one: peersync peers add NAME HOST --user U --path P",
            {"peers": {n: p.to_json() for n, p in peers.items()}})


@peers_app.command("add")
def peers_add(ctx: typer.Context, name: str, host: str,
              user: Optional[str] = typer.Option(None, "--user", "-u"),
              path: Optional[str] = typer.Option(None, "--path", "-p", help="Workspace path on the peer."),
              port: Optional[int] = typer.Option(None, "--port", min=1, max=65535),
              identity: Optional[str] = typer.Option(None, "--identity", "-i", help="SSH private key."),
              known_hosts: Optional[str] = typer.Option(None, "--known-hosts", help="known_hosts file for this peer."),
              remote_command: Optional[str] = typer.Option(None, "--remote-command", help="How to run peersync on the peer."),
              no_test: bool = typer.Option(False, "--no-test", help="Do not test the connection.")) -> None:
    """Add or update a peer, then test the connection (the peer is saved either way)."""
    from peersync.peers.manage import add_peer

    st = state(ctx)
    peer, result = add_peer(st.workspace(), name, host, user=user, path=path, port=port, identity=identity,
                            known_hosts=known_hosts, command=remote_command, test=not no_test)
    if result is None:
        human = f"✅ Added {name} ({peer.target})"
    elif result["reachable"]:
        human = f"✅ Added {name} ({peer.target}) — connected in {result['rtt_ms']:.0f} ms, peersync {result['version']}"
    else:
        human = f"⚠️ Added {name} ({peer.target}), but the connection test failed:\n{result['error']}"
    st.emit(human, {"peer": peer.to_json(), "name": name, "test": result})


@peers_app.command("remove")
def peers_remove(ctx: typer.Context, name: str) -> None:
    """Remove a peer (its sync state goes too)."""
    from peersync.peers.manage import remove_peer

    st = state(ctx)
    remove_peer(st.workspace(), name)
    st.emit(f"🗑️ Removed {name}", {"removed": name})


def register(app: typer.Typer) -> None:
    app.add_typer(peers_app, name="peers")
    for fn in (status, sync, push, pull, diff, history):
        app.command(fn.__name__)(fn)
