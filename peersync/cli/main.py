"""The command line's entry point: every command registered on the app, errors turned into one or
two readable lines and an exit code.  Commands parse, call one function, render; no policy here."""

from __future__ import annotations

import json
import sys

from peersync.cli import auto, backup, cloud, conflicts, dashboard, discover, sync
from peersync.cli.app import app
from peersync.errors import PeersyncError

__all__ = ["app", "run"]


# Each area's commands, registered explicitly (one responsibility per module).
for _area in (sync, conflicts, backup, discover, auto, cloud, dashboard):
    _area.register(app)


def run() -> None:
    """Console entry point: turn PeersyncError into one or two readable lines and an exit code."""
    debug = "--debug" in sys.argv
    try:
        app()  # standalone: usage errors exit 2 with click's message
    except PeersyncError as err:
        if debug:
            raise
        if "--json" in sys.argv:
            print(json.dumps({"ok": False, "error": err.message, "hint": err.hint}))
        print(f"❌ {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if debug:
            raise
        print(f"❌ unexpected error: {err.__class__.__name__}: {err}\nRun again with --debug for details.",
              file=sys.stderr)
        sys.exit(1)
