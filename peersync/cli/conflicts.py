"""CLI commands to review quarantined versions: conflicts list|show|diff|restore|drop."""

from __future__ import annotations

import sys

import typer

from peersync.cli.app import state
from peersync.errors import UsageError

conflicts_app = typer.Typer(help="Review versions that lost a conflict (kept in conflicts/).",
                            invoke_without_command=True)


def _store(ctx: typer.Context):
    from peersync.replica.store import Store

    ws = state(ctx).workspace()
    return ws, Store(ws.root, ws.sync_config().selection)


@conflicts_app.callback()
def conflicts_main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        conflicts_list(ctx)


@conflicts_app.command("list")
def conflicts_list(ctx: typer.Context) -> None:
    """Quarantined versions, newest first; and the files that need a look (versions a merge kept live)."""
    from peersync.replica.looks import looks_text, needing_a_look

    ws, store = _store(ctx)
    looks = needing_a_look(ws, ws.sync_config())
    items = list(reversed(store.conflicts()))
    lines = [f"• {i['id']} {i['path']} ({i.get('size', 0)} bytes, {i.get('time', '?')}) — "
             f"{i.get('reason', 'conflict')}" + (f", from {i['peer']}" if i.get("peer") else "")
             + (" — the file needs a look" if i.get("path") in looks else "") for i in items]
    if len(lines) > 20:
        lines = lines[:20] + [f"…and {len(lines) - 20} more (peersync --json conflicts list shows all)"]
    text = "\n".join(filter(None, [looks_text(looks), *lines]))
    state(ctx).emit(text or "✅ No conflicts.", {"conflicts": items, "needs_look": looks})


def _get(store, cid: str) -> dict:
    from peersync.replica.store import Refused

    try:
        return store.find_conflict(cid)
    except Refused:
        raise UsageError(f"no conflict {cid!r}", "See the ids with: peersync conflicts list") from None


@conflicts_app.command("show")
def conflicts_show(ctx: typer.Context, cid: str) -> None:
    """Print a quarantined version."""
    _, store = _store(ctx)
    item = _get(store, cid)
    data = (store.conflicts_dir / cid / item["path"]).read_bytes()
    if state(ctx).json:
        state(ctx).emit("", {**item, "content": data.decode("utf-8", "replace")})
    else:
        print(f"# {cid} {item['path']} — {item.get('reason', 'conflict')}", file=sys.stderr)
        sys.stdout.write(data.decode("utf-8", "replace"))


@conflicts_app.command("diff")
def conflicts_diff(ctx: typer.Context, cid: str) -> None:
    """Show how a quarantined version differs from the live file (a unified diff)."""
    import difflib

    ws, store = _store(ctx)
    item = _get(store, cid)
    kept = (store.conflicts_dir / cid / item["path"]).read_bytes()
    try:
        live = (ws.root / item["path"]).read_bytes()
    except FileNotFoundError:
        live = None
    try:
        old, new = kept.decode("utf-8"), (live or b"").decode("utf-8")
    except UnicodeDecodeError:
        same = "the same as" if kept == live else "different from"
        state(ctx).emit(f"{item['path']}: not text — the kept version ({len(kept)} bytes) is {same} the live one"
                        + ("" if live is not None else " (no live file)"), {**item, "diff": None})
        return
    where = f"{cid} {item['path']} (kept {item.get('time', '?')}: {item.get('reason', 'conflict')})"
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), where,
                                        f"{item['path']} (live)" if live is not None else f"{item['path']} (no live file)"))
    diff = "".join(line if line.endswith("\n") else line + "\n" for line in diff.splitlines(keepends=True))
    if state(ctx).json:
        state(ctx).emit("", {**item, "diff": diff})
    else:
        sys.stdout.write(diff or f"{item['path']}: the kept version {cid} is the same as the live file\n")


@conflicts_app.command("restore")
def conflicts_restore(ctx: typer.Context, cid: str,
                      merge: bool = typer.Option(False, "--merge", help="Merge the kept version into the live "
                                                 "file instead of replacing it.")) -> None:
    """Put a quarantined version back; the current one is quarantined in its place.  With --merge,
    what the live file lacks of the kept version is merged back into it."""
    from peersync.core.mergefile import merge_back
    from peersync.replica.store import Refused
    from peersync.workspace.lock import workspace_lock

    ws, store = _store(ctx)
    path = _get(store, cid)["path"]
    combine = (lambda kept, live: merge_back(path, kept, live)) if merge else None
    with workspace_lock(ws, 30, what="conflicts restore"):
        try:
            item = store.restore_conflict(cid, merge=combine)
        except Refused as err:
            raise UsageError(str(err), "Restore it without --merge (the live version is then kept as a conflict).") from None
    swapped = f"; the replaced version is saved as {item['replaced_saved_as']}" if item.get("replaced_saved_as") else ""
    verb = "Merged" if merge else "Restored"
    state(ctx).emit(f"♻️ {verb} {item['path']} from {cid}{swapped}", item)


@conflicts_app.command("drop")
def conflicts_drop(ctx: typer.Context, cid: str) -> None:
    """Delete a quarantined version for good."""
    from peersync.workspace.lock import workspace_lock

    ws, store = _store(ctx)
    _get(store, cid)
    with workspace_lock(ws, 30, what="conflicts drop"):
        item = store.drop_conflict(cid)
    state(ctx).emit(f"🗑️ Dropped {cid} ({item['path']})", item)


def register(app: typer.Typer) -> None:
    app.add_typer(conflicts_app, name="conflicts")
