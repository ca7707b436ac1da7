"""CLI commands for cloud backups: backup now|list|status|restore|prune|verify."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import contextlib
import sys
import time
from datetime import datetime, timezone
from typing import Iterator, Optional

import typer

from peersync.cli.app import AppState, state
from peersync.core.render import elapsed, names, plural

backup_app = typer.Typer(help="Encrypted, incremental backups of the workspace through rclone.",
                         no_args_is_help=True)

TARGET_HELP = "rclone target (remote:path, connection string or local dir); default: backup.target, else a local dir."
PHASES = {"hash": "Hashing", "upload": "Uploading", "download": "Downloading", "restore": "Restoring",
          "verify": "Verifying"}
FILE_PHASES = {"hash", "restore"}  # counted in files; the others in bytes


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")


@contextlib.contextmanager
def _progress(st: AppState) -> Iterator:
    """A progress callback drawing rich bars on stderr — only on a terminal, never with --json."""
    if st.json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        filesize,
    )
    from rich.text import Text

    class Amount(ProgressColumn):
        def render(self, task) -> Text:
            done, total = int(task.completed), int(task.total or 0)
            if task.fields.get("unit") == "files":
                return Text(f"{done}/{total or '?'} files")
            return Text(f"{filesize.decimal(done)}/{filesize.decimal(total) if total else '?'}")

    bars = Progress(TextColumn("{task.description}"), BarColumn(), Amount(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            unit = "files" if phase in FILE_PHASES else "bytes"
            tasks[phase] = bars.add_task(PHASES.get(phase, phase), total=total or None, unit=unit)
        bars.update(tasks[phase], completed=done, total=total or None)

    with bars:
        yield update


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} bytes"


def _when(text: str | None) -> str:
    if not text:
        return "never"
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M")


def _ago(text: str) -> str:
    seconds = time.time() - datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def _where(target: dict) -> str:
    return f"{target['target']}" + (" (encrypted)" if target.get("encrypted") else "")


@backup_app.command("now")
def backup_now(ctx: typer.Context,
               target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP),
               no_prune: bool = typer.Option(False, "--no-prune", help="Do not apply backup.keep afterwards.")) -> None:
    """Take a snapshot now (only new content is uploaded)."""
    from peersync.backup import take_snapshot

    st = state(ctx)
    ws = st.workspace()
    with _progress(st) as progress:
        result = take_snapshot(ws, target=target, progress=progress, prune_after=not no_prune)
    snap = result.snapshot
    lines = [f"💾 Backed up {plural(len(snap.files), 'file')} ({_size(snap.bytes)}) as {snap.id} "
             f"→ {_where(result.target)} in {elapsed(result.seconds)}",
             f"📤 Uploaded {plural(result.uploaded_objects, 'new object')} ({_size(result.uploaded_bytes)}); "
             f"{result.reused_objects} already stored"]
    if result.problems:
        lines.append(f"⚠️ {plural(len(result.problems), 'file')} not backed up: "
                     + names([f"{p.path} ({p.message})" for p in result.problems], 3))
    if result.pruned and result.pruned.removed:
        lines.append(f"🧹 Pruned {plural(len(result.pruned.removed), 'old snapshot')}, "
                     f"freed {_size(result.pruned.freed_bytes)}")
    st.emit("\n".join(lines), result.to_json())


@backup_app.command("list")
def backup_list(ctx: typer.Context, target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Snapshots at the target, oldest first."""
    from peersync.backup import list_snapshots

    st = state(ctx)
    doc = list_snapshots(st.workspace(), target=target)
    snaps = doc["snapshots"]
    lines = [f"💾 {plural(len(snaps), 'snapshot')} at {_where(doc)}"]
    shown = snaps if len(snaps) <= 30 else snaps[-30:]
    if len(snaps) > len(shown):
        lines.append(f"…{len(snaps) - len(shown)} older ones not shown (--json lists all)")
    for s in shown:
        other = "" if s["instance"] == doc["instance"] else f"  from {s['host']}"
        lines.append(f"• {s['id']}  {_when(s['time'])}  {plural(s['files'], 'file')}  {_size(s['bytes'])}{other}")
    for bad in doc["unreadable"]:
        lines.append(f"⚠️ {bad['id']}: {bad['error']}")
    st.emit("\n".join(lines), doc)


@backup_app.command("status")
def backup_status(ctx: typer.Context, target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Target, snapshots, stored size, last run and next due time."""
    from peersync.backup import status

    st = state(ctx)
    doc = status(st.workspace(), target=target)
    if not doc["initialized"]:
        lines = [f"💾 No backups yet at {doc['target']} — run `peersync backup now`"]
    else:
        latest = doc["latest"]
        lines = [f"💾 {plural(doc['snapshots'], 'snapshot')} at {_where(doc)}, "
                 f"{_size(doc['stored']['bytes'])} in {plural(doc['stored']['objects'], 'object')}",
                 f"🕒 Latest: {latest['id']} ({_when(latest['time'])}, {_ago(latest['time'])})"
                 if latest else "🕒 No snapshot yet"]
    run = doc["last_run"]
    if run.get("last_attempt"):
        state_text = "ok" if run.get("last_ok") else f"failed: {run.get('error')}"
        lines.append(f"📋 Last run {_when(run['last_attempt'])}: {state_text}")
    if doc["interval"]:
        lines.append(f"⏰ Every {doc['interval']} s; next due {'now' if doc['due'] else _when(doc['next_due'])}")
    else:
        lines.append("⏰ Not scheduled (set backup.interval to back up from the heartbeat)")
    if doc.get("keep"):
        lines.append(f"🧹 Retention: {doc['keep']}")
    for lk in doc.get("locks", []):
        lines.append(f"🔒 {lk['kind']} {lk.get('id') or ''} on {lk.get('host') or '?'}"
                     + (" (stale)" if lk.get("stale") else " (running)"))
    st.emit("\n".join(lines), doc)


@backup_app.command("restore")
def backup_restore(ctx: typer.Context,
                   snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Snapshot id (or a unique prefix)."),
                   at: Optional[str] = typer.Option(None, "--at", help="Newest snapshot at or before this time (ISO 8601)."),
                   to: Optional[str] = typer.Option(None, "--to", help="Empty directory to restore into."),
                   in_place: bool = typer.Option(False, "--in-place", help="Restore over the live workspace "
                                                 "(replaced files are kept in the state dir)."),
                   target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Restore a snapshot (default: the latest, into <workspace>.restore-<id>), verifying every file."""
    from peersync.backup import restore
    from peersync.errors import UsageError

    if snapshot and at:
        raise UsageError("--snapshot and --at exclude each other")
    st = state(ctx)
    with _progress(st) as progress:
        result = restore(st.workspace(), target=target, snapshot=snapshot, at=at, to=to, in_place=in_place,
                         progress=progress)
    snap = result.snapshot
    where = "the live workspace" if result.in_place else str(result.dest)
    lines = [f"♻️ Restored {plural(len(result.restored), 'file')} ({_size(result.bytes)}) of {snap.id} "
             f"({_when(iso_of(snap.time))}) to {where} in {elapsed(result.seconds)}"]
    if result.unchanged:
        lines.append(f"✅ {plural(len(result.unchanged), 'file')} already identical, left alone")
    if result.saved_to:
        lines.append(f"📦 Replaced live versions saved in {result.saved_to}")
    if result.skipped:
        lines.append(f"⏭️ {plural(len(result.skipped), 'state/OpenClaw file')} not restored in place "
                     "(restore with --to to get them)")
    diff = result.diff
    if diff:
        parts = []
        if diff["changed"]:
            parts.append(f"{len(diff['changed'])} changed since ({names(diff['changed'], 3)})")
        if diff["only_in_snapshot"]:
            parts.append(f"{len(diff['only_in_snapshot'])} gone from the workspace ({names(diff['only_in_snapshot'], 3)})")
        if diff["only_live"]:
            parts.append(f"{len(diff['only_live'])} new in the workspace ({names(diff['only_live'], 3)})")
        lines.append("🔍 Compared with the live workspace" + (" before restoring" if result.in_place else "") + ": "
                     + ("; ".join(parts) if parts else "identical"))
    if result.refused:
        lines.append(f"❌ {plural(len(result.refused), 'file')} refused (failed verification): "
                     + names([f"{p.path} — {p.message}" for p in result.refused], 3))
        lines.append("Run `peersync backup verify` for the full list; the other files were restored.")
    st.emit("\n".join(lines), result.to_json())
    if result.refused:
        raise typer.Exit(1)


def iso_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@backup_app.command("verify")
def backup_verify(ctx: typer.Context,
                  snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Only this snapshot (default: all)."),
                  target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Download and check every object the snapshots need."""
    from peersync.backup import verify

    st = state(ctx)
    with _progress(st) as progress:
        result = verify(st.workspace(), target=target, snapshot=snapshot, progress=progress)
    scope = f"snapshot {snapshot}" if snapshot else plural(len(result.snapshots), "snapshot")
    if result.ok:
        text = (f"✅ Verified {scope} at {_where(result.target)}: {plural(result.objects, 'object')} "
                f"({_size(result.bytes)}) intact")
    else:
        lines = [f"❌ {scope} at {_where(result.target)}: {plural(len(result.bad), 'bad object')} "
                 f"of {result.objects}"]
        for sha, problem in list(result.bad.items())[:5]:
            paths = sorted({a["path"] for a in result.affected if a["sha256"] == sha})
            lines.append(f"• {sha[:12]}… {problem}: {names(paths, 3)}")
        if len(result.bad) > 5:
            lines.append(f"…and {len(result.bad) - 5} more (--json lists all)")
        for sid, why in result.unreadable.items():
            lines.append(f"• snapshot {sid}: {why}")
        text = "\n".join(lines)
    st.emit(text, result.to_json())
    if not result.ok:
        raise typer.Exit(1)


@backup_app.command("prune")
def backup_prune(ctx: typer.Context,
                 dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
                 target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Apply backup.keep (restic's forget rules), then delete objects no snapshot needs."""
    from peersync.backup import prune

    st = state(ctx)
    result = prune(st.workspace(), target=target, dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    lines = [f"🧹 {verb} {plural(len(result.removed), 'snapshot')}, kept {len(result.kept)} ({result.policy})"]
    if result.removed:
        lines.append("🗑️ " + names(result.removed, 5))
    if result.objects_held:
        lines.append(f"⏸️ Objects not collected: {result.objects_held}")
    elif result.deleted_objects or not dry_run:
        lines.append(f"📦 {'Would delete' if dry_run else 'Deleted'} {plural(result.deleted_objects, 'unreferenced object')}"
                     f" ({_size(result.freed_bytes)})")
    st.emit("\n".join(lines), result.to_json())
