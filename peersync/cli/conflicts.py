"""CLI commands to review quarantined versions: conflicts list|show|diff|restore|drop."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import sys

import typer

from peersync.cli.app import state
from peersync.replica import conflicts

conflicts_app = typer.Typer(help="Review versions that lost a conflict (kept in conflicts/).",
                            invoke_without_command=True)


@conflicts_app.callback()
def conflicts_main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        state(ctx).command = "conflicts list"
        conflicts_list(ctx)


CID = typer.Argument(..., help="The conflict's id, as `conflicts list` shows it (c-7f3a).")


@conflicts_app.command("list")
def conflicts_list(ctx: typer.Context) -> None:
    """Quarantined versions, newest first; and the files that need a look (versions a merge kept live)."""
    from peersync.replica.looks import looks_text, needing_a_look  # lazy: scans the workspace's memory files

    st = state(ctx)
    st.command = "conflicts list"
    ws = st.workspace()
    looks = needing_a_look(ws, ws.sync_config())
    items = conflicts.listed(ws)
    lines = [f"• {i['id']} {i['path']} ({i.get('size', 0)} bytes, {i.get('time', '?')}) — "
             f"{i.get('reason', 'conflict')}" + (f", from {i['peer']}" if i.get("peer") else "")
             + (" — the file needs a look" if i.get("path") in looks else "") for i in items]
    if len(lines) > 20:
        lines = lines[:20] + [f"…and {len(lines) - 20} more (peersync --json conflicts list shows all)"]
    text = "\n".join(filter(None, [looks_text(looks), *lines]))
    st.emit(text or "✅ No conflicts.", {"conflicts": items, "needs_look": looks})


@conflicts_app.command("show")
def conflicts_show(ctx: typer.Context, cid: str = CID) -> None:
    """Print a quarantined version."""
    item, data = conflicts.content(state(ctx).workspace(), cid)
    if state(ctx).json:
        state(ctx).emit("", {**item, "content": data.decode("utf-8", "replace")})
    else:
        print(f"# {cid} {item['path']} — {item.get('reason', 'conflict')}", file=sys.stderr)
        sys.stdout.write(data.decode("utf-8", "replace"))


@conflicts_app.command("diff")
def conflicts_diff(ctx: typer.Context, cid: str = CID) -> None:
    """Show how a quarantined version differs from the live file (a unified diff)."""
    item, diff = conflicts.diff(state(ctx).workspace(), cid)
    if diff is None:
        state(ctx).emit(item["note"], {**item, "diff": None})
    elif state(ctx).json:
        state(ctx).emit("", {**item, "diff": diff})
    else:
        sys.stdout.write(diff or f"{item['path']}: the kept version {cid} is the same as the live file\n")


@conflicts_app.command("restore")
def conflicts_restore(ctx: typer.Context, cid: str = CID,
                      merge: bool = typer.Option(False, "--merge", help="Merge the kept version into the live "
                                                 "file instead of replacing it.")) -> None:
    """Put a quarantined version back; the current one is quarantined in its place.  With --merge,
    what the live file lacks of the kept version is merged back into it."""
    item = conflicts.restore(state(ctx).workspace(), cid, merge=merge)
    swapped = f"; the replaced version is saved as {item['replaced_saved_as']}" if item.get("replaced_saved_as") else ""
    verb = "Merged" if merge else "Restored"
    state(ctx).emit(f"♻️ {verb} {item['path']} from {cid}{swapped}", item)


@conflicts_app.command("drop")
def conflicts_drop(ctx: typer.Context, cid: str = CID) -> None:
    """Delete a quarantined version for good."""
    item = conflicts.drop(state(ctx).workspace(), cid)
    state(ctx).emit(f"🗑️ Dropped {cid} ({item['path']})", item)


def register(app: typer.Typer) -> None:
    app.add_typer(conflicts_app, name="conflicts")
