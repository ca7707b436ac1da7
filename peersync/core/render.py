"""Chat-style text for reports: short enough to paste into a conversation (DESIGN 1.2)."""

from __future__ import annotations

from peersync.core.types import Conflict, Report

MAX_NAMES = 5


def names(paths: list[str], limit: int = MAX_NAMES) -> str:
    shown = ", ".join(paths[:limit])
    rest = len(paths) - limit
    return f"{shown} …and {rest} more" if rest > 0 else shown


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def elapsed(seconds: float) -> str:
    """A run's duration for chat: "40 ms" below a second (never "0.0 s"), "2.3 s", "4 min 5 s"."""
    if seconds < 1:
        return milliseconds(seconds * 1000)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def milliseconds(ms: float) -> str:
    """A round trip: "12 ms", "0.4 ms" (a loopback answers faster than a millisecond; never "0 ms")."""
    if ms >= 10:
        return f"{ms:.0f} ms"
    if ms >= 0.95:
        return f"{ms:.1f}".rstrip("0").rstrip(".") + " ms"
    return "<1 ms" if ms < 0.05 else f"{ms:.1f} ms"


def report_text(report: Report) -> str:
    who = f"{report.peer} ({report.host})"
    if report.error:
        return f"❌ {report.peer}: {report.error}"
    lines = []
    verb = {"sync": "Synced with", "push": "Pushed to", "pull": "Pulled from"}[report.mode.value]
    if report.dry_run:
        lines.append(f"🔍 Dry run with {who} — nothing was changed")
        would = "Would "
    else:
        lines.append(f"🔄 {verb} {who} in {elapsed(report.seconds)}")
        would = ""
    if report.pushed:
        lines.append(f"📤 {would}{'push' if would else 'Pushed'} {len(report.pushed)}: {names(report.pushed)}")
    if report.pulled:
        lines.append(f"📥 {would}{'pull' if would else 'Pulled'} {len(report.pulled)}: {names(report.pulled)}")
    if report.merged:
        lines.append(f"🔀 {would}{'merge' if would else 'Merged'} {plural(len(report.merged), 'file')}: "
                     f"{names(report.merged)}")
    if report.deleted_local:
        lines.append(f"🗑️ {would}{'delete' if would else 'Deleted'} {len(report.deleted_local)} here "
                     f"(to the trash): {names(report.deleted_local)}")
    if report.deleted_remote:
        lines.append(f"🗑️ {would}{'delete' if would else 'Deleted'} {len(report.deleted_remote)} on {report.peer} "
                     f"(to the trash): {names(report.deleted_remote)}")
    if report.conflicts:
        lines.append(f"⚠️ {plural(len(report.conflicts), 'conflict')}: "
                     + "; ".join(conflict_text(c, report) for c in report.conflicts[:MAX_NAMES])
                     + (f" …and {len(report.conflicts) - MAX_NAMES} more" if len(report.conflicts) > MAX_NAMES else ""))
    if report.problems:
        shown = "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in report.problems[:3])
        more = f" …and {len(report.problems) - 3} more" if len(report.problems) > 3 else ""
        lines.append(f"⚠️ {plural(len(report.problems), 'file')} left for the next sync: {shown}{more}")
    if len(lines) == 1 and not report.dry_run:
        lines[0] = f"✅ Already in sync with {who}"
    elif len(lines) == 1:
        lines.append("✅ Nothing to do")
    lines += [f"♻️ {note[:1].upper()}{note[1:]}" for note in report.notes]
    return "\n".join(lines)


def conflict_text(c: Conflict, report: Report) -> str:
    if c.kept == "merged":
        return merged_text(c)
    if c.kept == "both":
        if c.saved_as:
            return f"{c.path} — kept both; {report.peer}'s version saved as conflict {c.saved_as}"
        return f"{c.path} — {c.reason or 'skipped'}, left as is on both sides"
    winner = "yours" if c.kept == "local" else f"{report.peer}'s"
    why = " (newer)" if c.reason == "conflict-newest" else ""
    if report.dry_run:
        return f"{c.path} — would keep {winner}{why}, the other saved as a conflict"
    if c.saved_here:  # a cloud folder's losing version is kept on this machine
        return f"{c.path} — kept {winner}{why}; {report.peer}'s version saved here as conflict {c.saved_as}"
    if c.side == "local":
        return f"{c.path} — kept {winner}{why}; yours saved as conflict {c.saved_as}"
    return f"{c.path} — kept {winner}{why}; {report.peer}'s saved there as conflict {c.saved_as}"


def merged_text(c: Conflict) -> str:
    """A merge that needs a look: versions kept live in the file, or JSON keys the policy decided."""
    saved = f"; the versions before the merge are saved here as {c.saved_as}" if c.saved_as else ""
    if c.keys:
        return f"{c.path} — {c.reason or 'merged by key'}{saved}"
    passages = plural(c.passages or 1, "passage")
    return f"{c.path} — merged, needs a look: both versions of {passages} kept live in the file (marked ⚠️ peersync){saved}"


def reports_text(reports: list[Report]) -> str:
    return "\n".join(report_text(r) for r in reports)


def history_line(entry: dict) -> str:
    """One past sync (a history.json entry) on one line: what moved, what went to the trash."""
    deleted = len(entry.get("deleted_local") or []) + len(entry.get("deleted_remote") or [])
    counts = [f"{label} {n}" for n, label in
              ((len(entry.get("pushed") or []), "📤"), (len(entry.get("pulled") or []), "📥"),
               (len(entry.get("merged") or []), "🔀"), (deleted, "🗑️"), (len(entry.get("conflicts") or []), "⚠️"))
              if n]
    if entry.get("ok"):
        detail = " ".join(counts) or "no changes"
        if deleted:
            where = [f"{len(entry.get('deleted_local') or [])} here"] if entry.get("deleted_local") else []
            where += [f"{len(entry.get('deleted_remote') or [])} there"] if entry.get("deleted_remote") else []
            detail += f" (deleted to the trash: {', '.join(where)})"
    else:
        detail = (entry.get("error") or "failed").splitlines()[0][:120]
    dry = " (dry run)" if entry.get("dry_run") else ""
    return (f"{'✅' if entry.get('ok') else '❌'} {entry.get('time', '?')} {entry.get('mode', 'sync')} "
            f"{entry.get('peer', '?')}{dry} {detail}")
