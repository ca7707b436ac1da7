"""One heartbeat tick: when auto-sync is due, sync every peer that is not backing off; else return at once."""

from __future__ import annotations

# Lazy imports: a tick that is not due never gets here (daemons/due.py answers it); what a sync
# needs is imported only when one runs.
import os
import sys
import time
from dataclasses import dataclass, field

from peersync.daemons import digest, scheduled_backup
from peersync.workspace import auto
from peersync.workspace.lock import pid_alive

GRACE = 10.0  # seconds past the time budget after which the whole sync is abandoned
BACKUP_STALE = 6 * 3600  # a spawned backup older than this is not waited for any more
MAX_NAMES = 3


@dataclass
class Tick:
    """What one heartbeat did, for chat text (`lines`) and --json."""

    reason: str = "interval"
    due: bool = False
    busy: bool = False  # another sync held the lock: it does this tick's job
    reports: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # peers still backing off
    backup_started: bool = False
    lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"reason": self.reason, "due": self.due, "busy": self.busy, "skipped": self.skipped,
                "backup_started": self.backup_started, "reports": [r.to_json() for r in self.reports],
                "ok": all(r.ok for r in self.reports)}


# -- a full tick ----------------------------------------------------------------------------
def run_tick(ws, reason: str | None = None, *, now: float | None = None) -> Tick:
    """One heartbeat: start a due scheduled backup (in the background), then sync if due.

    Never waits for another sync's lock, and never runs longer than auto.timeout + GRACE."""
    now = time.time() if now is None else now
    cfg = auto.load_auto(ws)
    state = auto.read_state(ws.state)
    tick = Tick(reason=reason or "interval")
    before = dict(state)
    tick.lines += _backup(ws, state, now, tick)
    if auto.is_due(cfg, state.get("last_run"), reason, now):
        tick.due = True
        _sync(ws, cfg, state, now, tick)
        if tick.reports:
            from peersync.dashboard import refresh_after_sync

            failed = refresh_after_sync(ws)  # only when dashboard.refresh is on
            tick.lines += [failed] if failed else []
    elif state != before:
        auto.write_state(ws.state, state)
    return tick


def _sync(ws, cfg: auto.AutoConfig, state: dict, now: float, tick: Tick) -> None:
    import asyncio

    from peersync.errors import BusyError

    peers = ws.load_peers()
    known = {name: rec for name, rec in state["peers"].items() if name in peers}  # removed peers go
    ready, tick.skipped = auto.peers_to_try(sorted(peers), known, now)
    # Marked before syncing: a tick that crashes or hangs must not make every heartbeat retry at once.
    state.update(last_run=now, peers=known)
    auto.write_state(ws.state, state)
    if not ready:
        return
    try:
        tick.reports = asyncio.run(_bounded_sync(ws, ready, cfg.timeout))
    except BusyError:
        tick.busy = True  # another sync (watch, a user, another heartbeat) is doing the job
        return
    # A peer that was busy syncing with someone else is neither down nor done: no record, no word.
    results = {r.peer: r.error for r in tick.reports if not auto.peer_busy(r)}
    state["peers"], fresh = auto.record_results(known, results, time.time(), base=cfg.interval,
                                                cap=auto.MAX_BACKOFF)
    seen = set(state.get("problems_seen") or [])
    problems = {f"{r.peer}:{p.path}:{p.message}" for r in tick.reports for p in r.problems}
    state["problems_seen"] = sorted(problems)[:100]
    auto.write_state(ws.state, state)
    for report in tick.reports:
        if auto.peer_busy(report):
            continue
        retry = state["peers"].get(report.peer, {}).get("retry_at", now) - time.time()
        routine_now = cfg.summary == 0  # else files that simply moved go to the digest (daemons/digest.py)
        if report.ok and not routine_now:
            digest.count(state, report, now)
        tick.lines += report_lines(report, tell_failure=report.peer in fresh, retry_in=retry,
                                   new_problems=bool({k for k in problems - seen if k.startswith(report.peer + ":")}),
                                   routine=routine_now)
    tick.lines += digest.take(state, now, cfg.summary)
    tick.lines += arrived_needing_a_look(ws, tick.reports)
    auto.write_state(ws.state, state)


def arrived_needing_a_look(ws, reports) -> list[str]:
    """Files this tick brought in (pulled from a peer that had merged them with a third machine)
    that hold versions kept live: they need a look too.  Merges of this tick say so themselves."""
    told = {c.path for r in reports for c in r.conflicts if c.kept == "merged"}
    arrived = [p for r in reports for p in r.pulled + r.merged if p not in told]
    if not arrived:
        return []
    from peersync.replica.looks import looks_text, needing_a_look

    looks = needing_a_look(ws, ws.sync_config(), arrived)
    return [looks_text(looks)] if looks else []


async def _bounded_sync(ws, names: list[str], timeout: float) -> list:
    import asyncio

    from peersync.core.types import Mode, Report
    from peersync.sync.runner import sync_peers

    job = sync_peers(ws, names, lock_timeout=0, time_budget=timeout, connect_timeout=min(15.0, timeout))
    try:
        return await asyncio.wait_for(job, timeout + GRACE)
    except asyncio.TimeoutError:  # the per-peer budget should have fired first; this is the backstop
        peers = ws.load_peers()
        return [Report(peer=n, host=peers[n].host if n in peers else "?", mode=Mode.SYNC,
                       error=f"gave up after {timeout + GRACE:g} s", error_exit=1) for n in names]


def report_lines(report, *, tell_failure: bool, retry_in: float, new_problems: bool,
                 routine: bool = True) -> list[str]:
    """At most two chat lines for one peer; nothing when there is nothing worth saying.
    `routine`: also a line for files that simply moved (else the digest sums them up)."""
    from peersync.core.render import conflict_text, names, plural

    if report.error:
        if not tell_failure:
            return []  # already said when this peer started failing; quiet while it stays down
        why = report.error.splitlines()[0]
        return [f"⚠️ Auto-sync with {report.peer} failed: {why} — will retry in {duration(retry_in)}"]
    lines = []
    if report.changed and routine:
        deleted = report.deleted_local + report.deleted_remote
        counts = [f"{icon} {len(paths)} {word}" for icon, paths, word in
                  (("📤", report.pushed, "pushed"), ("📥", report.pulled, "pulled"),
                   ("🔀", report.merged, "merged"), ("🗑️", deleted, "deleted"))
                  if paths]
        touched = list(dict.fromkeys(report.pushed + report.pulled + report.merged + deleted))
        head = f"🔄 Auto-synced with {report.peer}: {', '.join(counts) or 'no files moved'}"
        lines.append(head + (f" — {names(touched, MAX_NAMES)}" if touched else ""))
    if report.conflicts:
        shown = "; ".join(conflict_text(c, report) for c in report.conflicts[:2])
        more = f" …and {len(report.conflicts) - 2} more" if len(report.conflicts) > 2 else ""
        lines.append(f"⚠️ {plural(len(report.conflicts), 'conflict')}: {shown}{more}")
    elif report.problems and (report.changed or new_problems):
        shown = names([f"{p.path}: {p.message}" if p.path else p.message for p in report.problems], 2)
        lines.append(f"⚠️ {plural(len(report.problems), 'file')} left for the next sync with {report.peer}: {shown}")
    return lines


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# -- scheduled backup -----------------------------------------------------------------------
def _backup(ws, state: dict, now: float, tick: Tick) -> list[str]:
    """Start `peersync backup now` in the background when backup.interval says it is due, and
    tell once about a scheduled backup that failed.  A backup can take minutes; the heartbeat
    must not, so it never waits for one."""
    raw = ws.raw_config().get("backup")
    if not isinstance(raw, dict) or not raw.get("interval"):
        return []
    try:
        from peersync import backup
        from peersync.backup.config import passphrase_notice
    except ModuleNotFoundError as err:
        if err.name == "peersync.backup":
            return []  # built without cloud backups
        raise
    lines = []
    notice = passphrase_notice(ws)  # a scheduled backup generated the passphrase: say so once
    if notice:
        lines.append(notice)
    # Only a backup the heartbeat started is reported as a scheduled one: a manual `backup now`
    # that failed was seen by whoever ran it (daemons/scheduled_backup.py records each outcome).
    last = scheduled_backup.last(ws.state)
    finished = last.get("finished")
    if last.get("ok") is False and finished and finished != state.get("backup_reported"):
        state["backup_reported"] = finished
        lines.append(f"⚠️ Scheduled backup failed: {(last.get('error') or 'unknown error').splitlines()[0]}"
                     " — details: peersync backup status")
    pid, started = state.get("backup_pid"), state.get("backup_started") or 0
    if isinstance(pid, int) and now - started < BACKUP_STALE and _alive(pid):
        return lines  # the previous one is still running
    if backup.backup_due(ws, now):
        state["backup_pid"], state["backup_started"] = _spawn_backup(ws), now
        tick.backup_started = True
    return lines


def start_due_backup(ws, now: float | None = None) -> list[str]:
    """For `watch`: the heartbeat's scheduled-backup step on its own (same due rule, same
    bookkeeping of the running backup).  Returns the lines to tell the user."""
    now = time.time() if now is None else now
    state = auto.read_state(ws.state)
    before = dict(state)
    lines = _backup(ws, state, now, Tick())
    if state != before:
        auto.write_state(ws.state, state)
    return lines


def _spawn_backup(ws) -> int:
    import subprocess

    from peersync.workspace.storage import ensure_private_dir

    log_path = ensure_private_dir(ws.state / "backup") / "scheduled.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "peersync.daemons.scheduled_backup", str(ws.root)],
                                stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    return proc.pid


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    # Our own child that already exited is a zombie until reaped: reap it, and it is not alive.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
