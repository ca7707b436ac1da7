"""What a sync command does once its command line is read, and how any command's failure is
shown: shared by the Typer commands (cli/sync.py, cli/main.py) and by quick.py, which runs a sync
without loading the CLI stack (click and typer: ~30 ms of every cold start)."""

from __future__ import annotations

# Lazy imports: the engine loads only when a sync runs (quick.py imports this module first).
import sys

from peersync.cli.jsonout import document, dumps, error_doc, sync_doc
from peersync.errors import PeersyncError, UsageError

DEBUG_HINT = "Run again with --debug for details."


def sync_and_print(workspace, command: str, json_out: bool, peers: list[str] | None, mode: str,
                   dry_run: bool, force: bool, policy: str | None) -> int:
    """Run `command` (sync, push, pull, diff) with `peers` (None: all) in the workspace that
    `workspace()` resolves, print its reports (text, or one JSON document), and give the exit status."""
    from peersync.core.render import reports_text
    from peersync.core.types import Mode, Policy
    from peersync.sync.progress import terminal_progress
    from peersync.sync.runner import run_sync

    try:
        chosen = Policy(policy) if policy else None
    except ValueError:
        raise UsageError(f"unknown policy {policy!r}", "Use one of: newest, local, remote, skip, manual.") from None
    ws = workspace()
    with terminal_progress(enabled=not json_out) as progress:
        reports = run_sync(ws, peers or None, mode=Mode(mode), dry_run=dry_run, force=force, policy=chosen,
                           progress=progress)
    doc, code = sync_doc(command, [r.to_json() for r in reports], [r.error_exit or 1 for r in reports], ws.root)
    print(dumps(doc) if json_out else reports_text(reports), flush=True)
    return code


def show_failure(err: BaseException, *, json_out: bool, command: str, root) -> int:
    """One or two lines on stderr saying what went wrong (and, under --json, the document with
    `ok: false` on stdout); the exit status.  KeyboardInterrupt: "Interrupted.", 130."""
    if isinstance(err, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return 130
    if isinstance(err, PeersyncError):
        kind, message, hint, code, text = err.kind, err.message, err.hint, err.exit_code, f"❌ {err}"
    else:
        message = f"unexpected error: {err.__class__.__name__}: {err}"
        kind, hint, code, text = "internal", DEBUG_HINT, 1, f"❌ {message}\n{DEBUG_HINT}"
    if json_out:
        print(dumps(document(command, None, workspace=root, error=error_doc(kind, message, hint, code))))
    print(text, file=sys.stderr)
    return code
