"""CLI commands for the trash (files that syncs deleted here): trash list|restore|empty."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import time
from datetime import datetime
from typing import List, Optional

import typer

from peersync.cli.app import state

trash_app = typer.Typer(help="Files that syncs deleted here: list them, put them back, or empty the trash.",
                        invoke_without_command=True)


@trash_app.callback()
def trash_main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        trash_list(ctx)


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M") if epoch else "?"


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1000 else f"{n / 1000:.1f} KB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


@trash_app.command("list")
def trash_list(ctx: typer.Context) -> None:
    """Files in the trash, newest first, with the sync that deleted them and how long they are kept."""
    from peersync.replica import trash

    st = state(ctx)
    st.command = "trash list"
    items = trash.listed(st.workspace())
    lines = [f"• {i['path']} — deleted {_when(i['deleted_at'])}"
             + (f" by a {i['sync']['mode']} with {i['sync']['peer']}" if i.get("sync") else "")
             + f", {_size(i['size'])}; kept until {_when(i['kept_until'])}  [{i['batch']}]" for i in items]
    if len(lines) > 30:
        lines = lines[:30] + [f"…and {len(lines) - 30} more (peersync trash list --json shows all)"]
    head = f"🗑️ {len(items)} file{'s' if len(items) != 1 else ''} in the trash — put one back with: " \
           "peersync trash restore PATH"
    st.emit("\n".join([head, *lines]) if items else "✅ The trash is empty.", {"items": items})


@trash_app.command("restore")
def trash_restore(ctx: typer.Context,
                  paths: Optional[List[str]] = typer.Argument(None, help="Workspace-relative paths, as `trash list` "
                                                                         "shows them."),
                  batch: Optional[str] = typer.Option(None, "--batch", help="Take the versions from this batch "
                                                      "(default: each path's newest); alone: the whole batch.")) -> None:
    """Put trashed files back as a new edit (the current time), so every peer gets them again on the next sync."""
    from peersync.errors import UsageError
    from peersync.replica import trash

    st = state(ctx)
    if not paths and not batch:
        raise UsageError("say what to restore: PATH… or --batch ID", "See the trash with: peersync trash list")
    done = trash.restore(st.workspace(), list(paths or []), batch=batch)
    lines = [f"♻️ Restored {d['path']}" + (f"; the file that was there is saved as conflict {d['replaced_saved_as']}"
                                           if d["replaced_saved_as"] else "") for d in done]
    lines.append("🔄 The next sync brings it back on your peers too.")
    st.emit("\n".join(lines), {"restored": done})


@trash_app.command("empty")
def trash_empty(ctx: typer.Context,
                older_than: Optional[float] = typer.Option(None, "--older-than", min=0, metavar="DAYS",
                                                           help="Only batches older than this many days."),
                batch: Optional[str] = typer.Option(None, "--batch", help="Only this batch."),
                yes: bool = typer.Option(False, "--yes", help="Really delete (without it: only say what would go).")) -> None:
    """Delete trashed files for good (they are purged after sync.trash_days anyway)."""
    from peersync.replica import trash

    st = state(ctx)
    result = trash.empty(st.workspace(), batch=batch, older_than_days=older_than, now=time.time(), dry_run=not yes)
    if not result["files"]:
        human = "✅ Nothing to delete."
    elif yes:
        human = f"🧹 Deleted {result['files']} file(s) ({_size(result['bytes'])}) from the trash for good."
    else:
        human = (f"🧹 Would delete {result['files']} file(s) ({_size(result['bytes'])}) for good; "
                 "run again with --yes to do it.")
    st.emit(human, result)


def register(app: typer.Typer) -> None:
    app.add_typer(trash_app, name="trash")
