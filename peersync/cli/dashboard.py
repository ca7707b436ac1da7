"""CLI command for the dashboard: write the static page, or serve it live on 127.0.0.1."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
from typing import Optional

import typer

from peersync.cli.app import state
from peersync.errors import UsageError


def dashboard(ctx: typer.Context,
              out: Optional[str] = typer.Option(None, "--out", help="Write the page here (a relative path is taken "
                                                "from the workspace; default: dashboard.out, else "
                                                "memory/clawdbot-sync/dashboard.html)."),
              open_page: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
              serve: bool = typer.Option(False, "--serve", help="Serve the page live on 127.0.0.1 (restore / drop buttons)."),
              port: int = typer.Option(0, "--port", min=0, max=65535, help="Port for --serve (default: a free one)."),
              no_probe: bool = typer.Option(False, "--no-probe", help="Do not contact the peers; show them as last seen.")) -> None:
    """A page of peers, syncs, conflicts, trash, backups and auto-sync (static file, or live with --serve)."""
    st = state(ctx)
    ws = st.workspace()
    if serve:
        if out:
            raise UsageError("--out and --serve exclude each other", "The served page is not written to a file.")
        from peersync.dashboard.server import serve as run_server

        def say(text: str) -> None:
            if st.json:
                st.event({"event": "message", "message": text})
            else:
                print(text, flush=True)

        raise typer.Exit(run_server(ws, port=port, open_browser=open_page, out=say))
    if port:
        raise UsageError("--port needs --serve")
    from peersync.dashboard import SEED_OUT, write_dashboard

    written = write_dashboard(ws, out, probe=not no_probe)
    doc = written.doc
    uri = written.path.resolve().as_uri()
    lines = [f"📊 Dashboard written: {uri}",
             f"   {len(doc['peers'].get('items', []))} peers, {doc['history'].get('total', 0)} syncs, "
             f"{len(doc['conflicts'].get('items', []))} conflicts, {len(doc['backups'].get('snapshots') or [])} snapshots"]
    if written.synced:
        rel = written.path.relative_to(ws.root).as_posix() if written.path.is_relative_to(ws.root) else SEED_OUT
        lines.append(f"⚠️ This file is synced to your peers, so conflict contents were left out and each machine "
                     f"overwrites the others' page; add \"{rel}\" to sync.exclude to keep it on this machine.")
    notices = [f"{name}: {doc[name]['notice']}" for name in ("history", "conflicts", "peers", "records", "backups", "auto")
               if isinstance(doc.get(name), dict) and doc[name].get("notice")]
    lines += [f"⚠️ {text}" for text in notices]
    st.emit("\n".join(lines), {"path": str(written.path), "uri": uri, "synced": written.synced, "notices": notices})
    if open_page:
        import webbrowser

        webbrowser.open(uri)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
