"""CLI commands for automation and setup: auto, heartbeat, watch, init."""

from __future__ import annotations

# Lazy imports: a command imports the machinery it runs in its body, so that `peersync --help`
# and every other command start without it.
import time
from typing import Optional

import typer

from peersync.cli.app import state
from peersync.cli.jsonout import report_doc
from peersync.errors import UsageError
from peersync.workspace import auto


def auto_cmd(ctx: typer.Context,
             action: Optional[str] = typer.Argument(None, help="on, off or status (default: status)."),
             summary: Optional[str] = typer.Option(None, "--summary", metavar="SECONDS|never",
                                                   help="How often the heartbeat sums up routine syncs (default "
                                                        "86400: once a day; 0: tell each sync; never)."),
             interval: Optional[int] = typer.Option(None, "--interval", help=f"Seconds between heartbeat syncs (minimum {auto.MIN_INTERVAL})."),
             timeout: Optional[int] = typer.Option(None, "--timeout", help="Seconds one heartbeat sync may take."),
             session_start: Optional[bool] = typer.Option(None, "--session-start/--no-session-start", help="Also sync when an agent session starts."),
             session_end: Optional[bool] = typer.Option(None, "--session-end/--no-session-end", help="Also sync when an agent session ends.")) -> None:
    """Heartbeat auto-sync: on, off, or status."""
    st = state(ctx)
    ws = st.workspace()
    if action not in (None, "on", "off", "status"):
        raise UsageError(f"unknown action {action!r}", "Use: peersync auto on|off|status [--interval SECONDS]")
    if interval is not None and interval < auto.MIN_INTERVAL:
        raise UsageError(f"--interval must be at least {auto.MIN_INTERVAL} seconds")
    if timeout is not None and timeout < auto.MIN_TIMEOUT:
        raise UsageError(f"--timeout must be at least {auto.MIN_TIMEOUT} seconds")
    if summary is not None:
        changes_summary = auto.parse_summary(summary, "--summary")
        changes_summary = "never" if changes_summary is None else changes_summary
    changes = {key: value for key, value in (("interval", interval), ("timeout", timeout),
                                             ("on_session_start", session_start), ("on_session_end", session_end))
               if value is not None}
    if summary is not None:
        changes["summary"] = changes_summary
    if action in ("on", "off"):
        changes["enabled"] = action == "on"
    from peersync.workspace import openclaw

    cfg, sched = auto.switch(ws, **changes) if changes else (auto.load_auto(ws), None)
    sched = sched or openclaw.inspect_auto(ws)
    state_doc = auto.read_state(ws.state)
    backoff = [{"peer": name, "failures": rec.get("failures"), "retry_at": rec.get("retry_at"),
                "since": rec.get("since"), "error": rec.get("error")}
               for name, rec in sorted((state_doc.get("peers") or {}).items()) if isinstance(rec, dict)]
    st.emit(status_text(ws, cfg, state_doc, changed="enabled" in changes, sched=sched),
            {"auto": cfg.to_yaml_dict(), "last_run": state_doc.get("last_run"),
             "backoff": backoff, "config": str(ws.config_file), "schedule": sched.to_json()})


def status_text(ws, cfg: auto.AutoConfig, state_doc: dict, *, changed: bool, sched=None) -> str:
    from peersync.daemons.heartbeat import duration
    from peersync.workspace import openclaw

    now = time.time()
    hooks = [name for name, on in (("session start", cfg.on_session_start), ("session end", cfg.on_session_end)) if on]
    hook_text = f"; also on {' and '.join(hooks)}" if hooks else ""
    if not cfg.enabled:
        lines = [f"⏸️ Auto-sync is off{hook_text}" + ("" if changed else " — turn it on with: peersync auto on")]
    else:
        lines = [f"{'✅ Auto-sync on' if changed else '🔄 Auto-sync is on'}: every {duration(cfg.interval)} "
                 f"(each sync gives up after {duration(cfg.timeout)}){hook_text}"]
        last = state_doc.get("last_run")
        if isinstance(last, (int, float)):
            left = last + cfg.interval - now
            lines.append(f"🕒 Last heartbeat sync {duration(now - last)} ago; "
                         + (f"next in {duration(left)}" if left > 0 else "due at the next heartbeat"))
        if not ws.load_peers():
            lines.append("💡 No peers yet: peersync peers add NAME HOST --user U --path P (or peersync discover --add)")
    if sched is not None:
        lines += openclaw.schedule_lines(sched, cfg.enabled)
    for name, rec in sorted((state_doc.get("peers") or {}).items()):
        retry = rec.get("retry_at", now) - now
        if retry > 0:
            lines.append(f"⏳ {name} failed {rec.get('failures', 1)}× ({rec.get('error', 'unknown error')}); "
                         f"next try in {duration(retry)}")
    return "\n".join(lines)


def heartbeat(ctx: typer.Context,
              reason: Optional[str] = typer.Option(None, "--reason", help="session-start or session-end: a session hook (forces a sync when the config enables that hook).")) -> None:
    """One heartbeat tick: sync if auto-sync is on and due; silent when there is nothing to say."""
    from peersync.daemons.heartbeat import run_tick

    if reason is not None and reason not in auto.REASONS:
        raise UsageError(f"unknown reason {reason!r}", f"Use one of: {', '.join(auto.REASONS)}.")
    st = state(ctx)
    tick = run_tick(st.workspace(), reason)
    doc = tick.to_json()
    doc.pop("ok", None)  # a tick that ran is done (exit 0) even when a peer failed: each report says so
    doc["reports"] = [report_doc(r) for r in doc["reports"]]
    st.emit("\n".join(tick.lines), doc)


def watch(ctx: typer.Context,
          debounce: float = typer.Option(2.0, "--debounce", min=0.1, help="Seconds of quiet after a change before syncing."),
          interval: Optional[float] = typer.Option(None, "--interval", min=1.0, help="Seconds between full syncs (default: auto.interval, 300).")) -> None:
    """Foreground daemon: sync on local changes (debounced) and every interval, until SIGINT/SIGTERM."""
    from peersync.daemons.watch import run_watch

    st = state(ctx)

    def out(text: str) -> None:
        if st.json:
            st.event({"event": "message", "time": time.time(), "message": text})
        else:
            print(text, flush=True)

    raise typer.Exit(run_watch(st.workspace(), debounce=debounce, interval=interval, out=out))


def init(ctx: typer.Context,
         heartbeat_line: bool = typer.Option(False, "--heartbeat", help="Add the heartbeat line to HEARTBEAT.md.")) -> None:
    """Prepare this workspace: state dir, commented config.yaml, HEARTBEAT.md line, tool check."""
    from peersync.workspace.init import init_text, init_workspace

    st = state(ctx)
    ws = st.workspace()
    result = init_workspace(ws, heartbeat=heartbeat_line)
    st.emit(init_text(result, source=ws.source), result.to_json())
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("auto")(auto_cmd)
    for fn in (heartbeat, watch, init):
        app.command(fn.__name__)(fn)
