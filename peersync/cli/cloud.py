"""CLI commands for cloud folders as peers: cloud add, list, remove, unlock."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import asyncio
from typing import Optional

import typer

from peersync.cli.app import state
from peersync.cli.jsonout import error_doc
from peersync.cli.peers import peer_json, probe_doc
from peersync.core.render import milliseconds
from peersync.errors import ConnectError

cloud_app = typer.Typer(help="Cloud folders (Dropbox, Drive, OneDrive, S3, any rclone remote) as peers: "
                             "mailbox, mirror or bisync.", no_args_is_help=True)

MODE_HELP = ("mailbox (safest: push the workspace, receive files dropped in the cloud _outbox/ into _inbox/), "
             "mirror (one-way copy), or bisync (two-way, like an SSH peer).")


@cloud_app.command("add")
def cloud_add(ctx: typer.Context, name: str = typer.Argument(..., help="The peer's name here, e.g. share."),
              remote: str = typer.Argument(..., help="rclone remote (dropbox:Agent, /path, :s3,…:bucket) — or, "
                                                     "with --provider, a path inside the provider."),
              mode: str = typer.Option(..., "--mode", help=MODE_HELP),
              path: Optional[str] = typer.Option(None, "--path", help="A folder inside the remote."),
              direction: Optional[str] = typer.Option(None, "--direction", help="mirror only: push (default) or pull."),
              provider: Optional[str] = typer.Option(None, "--provider",
                                                     help="dropbox, gdrive, onedrive, s3, r2, b2 or one from config.yaml "
                                                          "cloud.providers (secrets from the environment)."),
              no_test: bool = typer.Option(False, "--no-test", help="Do not test the connection.")) -> None:
    """Add or update a cloud peer, then test it (it is saved either way); `sync NAME` then syncs it."""
    from peersync.peers.manage import add_cloud_peer

    st = state(ctx)
    peer, result = add_cloud_peer(st.workspace(), name, remote, mode=mode, folder=path, direction=direction,
                                  provider=provider, test=not no_test)
    how = peer.extra["mode"] + (f", {peer.extra['direction']}" if peer.extra.get("direction") else "")
    if result is None:
        human = f"✅ Added cloud peer {name} ({peer.host}, {how})"
    elif result["reachable"]:
        note = "" if result.get("workspace") else "; the folder is empty or new (the first sync fills it)"
        human = f"✅ Added cloud peer {name} ({peer.host}, {how}) — reached in {milliseconds(result['rtt_ms'])}{note}"
    else:
        human = (f"⚠️ Added cloud peer {name} ({peer.host}, {how}), but it could not be reached:\n{result['error']}\n"
                 f"The peer is saved; `peersync status {name}` tests it again.")
    error = None
    if result is not None and not result["reachable"]:
        error = error_doc("connect", result["error"].splitlines()[0], "\n".join(result["error"].splitlines()[1:]) or None,
                          ConnectError.exit_code)
    st.emit(human, {"peer": peer_json(name, peer), "saved": True, "test": probe_doc(result)}, error=error)
    if error is not None:
        raise typer.Exit(ConnectError.exit_code)


@cloud_app.command("list")
def cloud_list(ctx: typer.Context) -> None:
    """Cloud peers, with their mode."""
    from peersync.cloud.config import cloud_peers

    st = state(ctx)
    peers = cloud_peers(st.workspace())
    lines = [f"☁️ {p.name} — {p.host} ({p.extra.get('mode')}"
             + (f", {p.extra['direction']}" if p.extra.get("direction") else "") + ")" for p in peers.values()]
    st.emit("\n".join(lines) or "No cloud peers yet. Add one: peersync cloud add NAME REMOTE --mode mailbox",
            {"peers": [peer_json(n, p) for n, p in sorted(peers.items())]})


@cloud_app.command("remove")
def cloud_remove(ctx: typer.Context, name: str = typer.Argument(..., help="The cloud peer to remove.")) -> None:
    """Remove a cloud peer and what peersync knew about it (the cloud folder itself is not touched)."""
    from peersync.peers.manage import remove_cloud_peer

    st = state(ctx)
    remove_cloud_peer(st.workspace(), name)
    st.emit(f"🗑️ Removed cloud peer {name} (its folder was left as it is)", {"removed": name})


@cloud_app.command("unlock")
def cloud_unlock(ctx: typer.Context, name: str = typer.Argument(..., help="The cloud peer whose folder holds the locks."),
                 all_locks: bool = typer.Option(False, "--all", help="Also remove other machines' locks "
                                                                     "(only when you know their sync is dead).")) -> None:
    """Remove leftover locks from a cloud folder: this machine's, or with --all everyone's."""
    from peersync.cloud.config import is_cloud
    from peersync.cloud.folder import unlock
    from peersync.errors import UsageError
    from peersync.workspace.lock import workspace_lock

    st = state(ctx)
    ws = st.workspace()
    peer = ws.peer(name)
    if not is_cloud(peer):
        raise UsageError(f"{name} is not a cloud peer")
    with workspace_lock(ws, 0, what="cloud unlock"):
        removed = asyncio.run(unlock(ws, peer, everyone=all_locks))
    st.emit(f"🔓 Removed {len(removed)} lock(s) from {name}" if removed else f"✅ {name} holds no lock to remove",
            {"removed": removed})


def register(app: typer.Typer) -> None:
    app.add_typer(cloud_app, name="cloud")
