"""CLI commands for backups: backup now|list|status|restore|prune|verify|migrate (restic through rclone)."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import contextlib
import sys
import time
from datetime import datetime
from typing import Iterator, Optional

import typer

from peersync.cli.app import AppState, state
from peersync.core.render import elapsed, names, plural

backup_app = typer.Typer(help="Encrypted, deduplicated backups of the workspace (restic, through rclone).",
                         no_args_is_help=True)

TARGET_HELP = "rclone target (remote:path, connection string or local dir); default: backup.target, else a local dir."
PHASES = {"upload": "Backing up", "migrate": "Migrating"}
FILE_PHASES = {"migrate"}  # counted in snapshots; the others in bytes


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
            if task.fields.get("unit") == "items":
                return Text(f"{done}/{total or '?'}")
            return Text(f"{filesize.decimal(done)}/{filesize.decimal(total) if total else '?'}")

    bars = Progress(TextColumn("{task.description}"), BarColumn(), Amount(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            unit = "items" if phase in FILE_PHASES else "bytes"
            tasks[phase] = bars.add_task(PHASES.get(phase, phase), total=total or None, unit=unit)
        bars.update(tasks[phase], completed=done, total=total or None)

    with bars:
        yield update


def _size(n: int | None) -> str:
    if n is None:
        return "? bytes"
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


def _notices(ws, lines: list[str], notices: list[str], *, consume: bool = True) -> None:
    """Say each notice; a generated passphrase's is said once, then marked as told."""
    from peersync.backup.config import passphrase_notice

    for notice in notices:
        lines.append(notice if notice.startswith("🔑") else f"ℹ️ {notice[0].upper()}{notice[1:]}")
    if consume and any(n.startswith("🔑") for n in notices):
        passphrase_notice(ws, consume=True)


@backup_app.command("now")
def backup_now(ctx: typer.Context,
               target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP),
               no_prune: bool = typer.Option(False, "--no-prune", help="Do not apply backup.keep afterwards."),
               scheduled: bool = typer.Option(False, "--scheduled", hidden=True,
                                              help="Started by the heartbeat: its output goes to a log, so "
                                                   "one-time notices are left for the heartbeat to tell.")) -> None:
    """Take a snapshot now (only what changed is stored)."""
    from peersync.backup import take_snapshot

    st = state(ctx)
    ws = st.workspace()
    with _progress(st) as progress:
        result = take_snapshot(ws, target=target, progress=progress, prune_after=not no_prune)
    snap = result.snapshot
    lines = [f"💾 Backed up {plural(result.files, 'file')} ({_size(result.total_bytes)}) as {snap.short_id} "
             f"→ {result.target['target']} in {elapsed(result.seconds)}",
             f"📤 {result.files_new} new, {result.files_changed} changed, {result.files_unmodified} unchanged; "
             f"{_size(result.bytes_added)} stored"]
    _notices(ws, lines, result.notices, consume=not scheduled)
    if result.problems:
        lines.append(f"⚠️ {plural(len(result.problems), 'file')} not backed up: "
                     + names([f"{p.path} ({p.message})" if p.path else p.message for p in result.problems], 3))
    if result.pruned and result.pruned.removed:
        lines.append(f"🧹 Pruned {plural(len(result.pruned.removed), 'old snapshot')}"
                     + (f", freed {result.pruned.freed}" if result.pruned.freed else ""))
    st.emit("\n".join(lines), result.to_json())


@backup_app.command("list")
def backup_list(ctx: typer.Context, target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Snapshots at the target (every instance's), oldest first."""
    from peersync.backup import list_snapshots

    st = state(ctx)
    doc = list_snapshots(st.workspace(), target=target)
    snaps = doc["snapshots"]
    lines = [f"💾 {plural(len(snaps), 'snapshot')} at {doc['target']} (encrypted)"]
    shown = snaps if len(snaps) <= 30 else snaps[-30:]
    if len(snaps) > len(shown):
        lines.append(f"…{len(snaps) - len(shown)} older ones not shown (--json lists all)")
    for s in shown:
        other = "" if s["instance"] == doc["instance"] else f"  from {s['host']} (instance {str(s['instance'])[:8]})"
        size = f"  {plural(s['files'], 'file')}  {_size(s['bytes'])}" if s.get("files") is not None else ""
        lines.append(f"• {s['id']}  {_when(s['time'])}{size}{other}")
    for bad in doc["unreadable"]:
        lines.append(f"⚠️ {bad['id']} refused: {bad['error']} (damaged, or not written with this repository's key)")
    if doc.get("legacy"):
        lines.append(f"📦 {doc['legacy']['hint']}")
    st.emit("\n".join(lines), doc)


@backup_app.command("status")
def backup_status(ctx: typer.Context, target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Target, snapshots, stored size, passphrase, last run and verify, next due time."""
    from peersync.backup import status

    st = state(ctx)
    ws = st.workspace()
    doc = status(ws, target=target)
    restic = doc["restic"]
    lines = []
    if not restic["ok"]:
        lines.append(f"❌ restic: {restic['fix']}")
    if not doc["initialized"]:
        lines.append(f"💾 No restic backups yet at {doc['target']}" + ("" if doc.get("legacy") else " — run `peersync backup now`"))
    else:
        latest = doc["latest"]
        size = (doc.get("repository") or {}).get("bytes")
        lines.append(f"💾 {plural(len(doc['snapshots']), 'snapshot')} at {doc['target']} (encrypted, "
                     f"{_size(size)} stored, restic {restic['version']})")
        lines.append(f"🕒 Latest: {latest['id']} ({_when(latest['time'])}, {_ago(latest['time'])})"
                     if latest else "🕒 No snapshot yet")
    pw = doc["passphrase"]
    if pw["source"] == "file":
        lines.append(f"🔑 Passphrase: generated, in {pw['where']} — keep a copy elsewhere")
    elif pw["source"]:
        lines.append(f"🔑 Passphrase: from {pw['where']}")
    else:
        lines.append(f"🔑 Passphrase: {pw['note']}")
    run = doc["last_run"]
    if run.get("last_attempt"):
        state_text = "ok" if run.get("last_ok") else f"failed: {run.get('error')}"
        lines.append(f"📋 Last run {_when(run['last_attempt'])}: {state_text}")
    verified = doc.get("last_verify")
    if verified:
        when = datetime.fromtimestamp(verified["checked_at"]).strftime("%Y-%m-%d %H:%M")
        lines.append(f"🔍 Last verify {when}: " + ("intact" if verified["ok"] else
                                                   f"{verified['bad_packs']} damaged pack(s), "
                                                   f"{verified['affected_files']} file(s) affected"))
    if doc["interval"]:
        lines.append(f"⏰ Every {doc['interval']} s; next due {'now' if doc['due'] else _when(doc['next_due'])}")
    else:
        lines.append("⏰ Not scheduled (set backup.interval to back up from the heartbeat)")
    if doc.get("keep"):
        kept = sum(1 for d in doc["retention"] if d["keep"])
        lines.append(f"🧹 Retention: {doc['keep']}" + (f" ({kept} of {len(doc['retention'])} kept)"
                                                       if doc["retention"] else ""))
    for bad in doc["unreadable"]:
        lines.append(f"⚠️ Snapshot {bad['id']} refused: {bad['error']}")
    if doc.get("legacy"):
        lines.append(f"📦 {doc['legacy']['hint']}")
    st.emit("\n".join(lines), doc)
    if not restic["ok"]:
        raise typer.Exit(1)


@backup_app.command("restore")
def backup_restore(ctx: typer.Context,
                   snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Snapshot id (or a unique prefix)."),
                   at: Optional[str] = typer.Option(None, "--at", help="Newest snapshot at or before this time (ISO 8601)."),
                   host: Optional[str] = typer.Option(None, "--host", help="Latest snapshot of this host (a new machine "
                                                      "restoring another's backups)."),
                   to: Optional[str] = typer.Option(None, "--to", help="Empty directory to restore into."),
                   in_place: bool = typer.Option(False, "--in-place", help="Restore over the live workspace "
                                                 "(replaced files are kept in conflicts/)."),
                   target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Restore a snapshot (default: the latest, into <workspace>.restore-<id>), verified."""
    from peersync.backup import restore
    from peersync.errors import UsageError

    if snapshot and (at or host):
        raise UsageError("--snapshot excludes --at and --host")
    st = state(ctx)
    with _progress(st) as progress:
        result = restore(st.workspace(), target=target, snapshot=snapshot, at=at, to=to, in_place=in_place,
                         host=host, progress=progress)
    snap = result.snapshot
    where = "the live workspace" if result.in_place else str(result.dest)
    lines = [f"♻️ Restored {plural(len(result.restored), 'file')} ({_size(result.bytes)}) of {snap.short_id} "
             f"({_when(snap.summary()['time'])}, {snap.host}) to {where} in {elapsed(result.seconds)}"]
    if result.unchanged:
        lines.append(f"✅ {plural(len(result.unchanged), 'file')} already identical, left alone")
    if result.conflicts:
        lines.append(f"📦 {plural(len(result.conflicts), 'replaced version')} kept in conflicts: "
                     + names([f"{c['path']} ({c['conflict']})" for c in result.conflicts], 3)
                     + " — `peersync conflicts list`")
    if result.skipped:
        lines.append(f"⏭️ {plural(len(result.skipped), 'state/OpenClaw file')} not restored in place "
                     "(restore with --to to get them)")
    if result.not_restored:
        lines.append(f"🚫 {plural(len(result.not_restored), 'entry', 'entries')} of the snapshot not restored: "
                     + names([f"{p.path} ({p.message})" for p in result.not_restored], 3))
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
        lines.append(f"❌ {plural(len(result.refused), 'file')} refused: "
                     + names([f"{p.path} — {p.message}" for p in result.refused], 3))
        lines.append("Run `peersync backup verify` to see what is damaged; the other files were restored.")
    st.emit("\n".join(lines), result.to_json())
    if result.refused:
        raise typer.Exit(1)


@backup_app.command("verify")
def backup_verify(ctx: typer.Context,
                  snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Report only this snapshot's files."),
                  target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Download, decrypt and check every byte of the repository; name the files a damage touches."""
    from peersync.backup import verify

    st = state(ctx)
    with _progress(st) as progress:
        result = verify(st.workspace(), target=target, snapshot=snapshot, progress=progress)
    scope = f"snapshot {snapshot}" if snapshot else plural(len(result.snapshots), "snapshot")
    if result.ok:
        text = f"✅ Verified {scope} at {result.target['target']}: every pack read and authenticated, intact"
    else:
        damaged = [a for a in result.affected if a["damaged"]]
        lines = [f"❌ {scope} at {result.target['target']}: {plural(len(result.bad_packs), 'damaged pack')}, "
                 f"{plural(len(damaged), 'file')} damaged"
                 + (f" ({len(result.affected) - len(damaged)} more in those packs still intact)"
                    if len(result.affected) > len(damaged) else "")]
        for a in damaged[:5]:
            lines.append(f"• {a['snapshot']} {a['path']}: {a['problem']}")
        if len(damaged) > 5:
            lines.append(f"…and {len(damaged) - 5} more (--json lists all)")
        if not damaged:
            lines += [f"• {e}" for e in result.errors[:5]]
        text = "\n".join(lines)
    st.emit(text, result.to_json())
    if not result.ok:
        raise typer.Exit(1)


@backup_app.command("prune")
def backup_prune(ctx: typer.Context,
                 dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed."),
                 target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Apply backup.keep (restic's forget rules), then let restic prune what no snapshot needs."""
    from peersync.backup import prune

    st = state(ctx)
    ws = st.workspace()
    result = prune(ws, target=target, dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    lines = [f"🧹 {verb} {plural(len(result.removed), 'snapshot')}, kept {len(result.kept)} ({result.policy})"]
    if result.removed:
        lines.append("🗑️ " + names(result.removed, 5))
    if result.freed:
        lines.append(f"📦 Freed {result.freed}")
    _notices(ws, lines, result.notices)
    st.emit("\n".join(lines), result.to_json())


@backup_app.command("migrate")
def backup_migrate(ctx: typer.Context,
                   trust_unencrypted: bool = typer.Option(False, "--trust-unencrypted",
                                                          help="Migrate old unencrypted snapshots (nothing proves "
                                                               "who wrote them)."),
                   target: Optional[str] = typer.Option(None, "--target", help=TARGET_HELP)) -> None:
    """Copy old-format peersync snapshots into the restic repository (once; safe to re-run)."""
    from peersync.backup import migrate

    st = state(ctx)
    ws = st.workspace()
    with _progress(st) as progress:
        result = migrate(ws, target=target, trust_unencrypted=trust_unencrypted, progress=progress)
    lines = [f"📦 Migrated {plural(len(result.migrated), 'old snapshot')} into restic at {result.target}"
             + (f"; {len(result.already)} already there" if result.already else "")]
    if result.problems:
        lines.append(f"⚠️ {plural(len(result.problems), 'file')} left out: "
                     + names([f"{p.path} ({p.message})" for p in result.problems], 3))
    for sid, why in result.unreadable.items():
        lines.append(f"❌ {sid}: {why}")
    lines.append("The old data stays where it was; delete it yourself once `peersync backup list` shows them all.")
    st.emit("\n".join(lines), result.to_json())
    if not result.ok:
        raise typer.Exit(1)
