"""A backup the heartbeat started on its schedule: run `peersync backup now`, record how it ended.

`python -m peersync.daemons.scheduled_backup WORKSPACE` runs in the background (the heartbeat never
waits for a backup).  Its outcome goes to `<state>/backup/scheduled.json`, which the heartbeat reads
to report a failed *scheduled* backup once — a `backup now` a person ran is not reported again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.workspace.storage import atomic_write_json

FILE = os.path.join("backup", "scheduled.json")


def last(state_dir) -> dict:
    """The last scheduled backup's outcome ({} when none ran): started, finished, ok, error."""
    try:
        with open(os.path.join(state_dir, FILE), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run(root: str) -> int:
    """Run the backup through the CLI (whatever engine it has) and record its outcome."""
    state_dir = os.path.join(root, STATE_DIR)
    started = time.time()
    proc = subprocess.run([sys.executable, "-P", "-m", "peersync", "-w", root, "--json", "backup", "now", "--scheduled"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    error = None
    if proc.returncode != 0:
        try:
            doc = json.loads(proc.stdout)
            error = (doc.get("error") or {}).get("message")
        except (ValueError, AttributeError):
            pass
        lines = [line.removeprefix("❌ ").strip() for line in proc.stderr.splitlines() if line.strip()]
        error = error or (lines[0] if lines else f"exit status {proc.returncode}")
    os.makedirs(os.path.join(state_dir, "backup"), mode=0o700, exist_ok=True)
    atomic_write_json(Path(state_dir, FILE),
                      {"started": started, "finished": time.time(), "ok": proc.returncode == 0,
                       "exit_code": proc.returncode, "error": error})
    return proc.returncode


if __name__ == "__main__":
    sys.exit(run(os.path.abspath(sys.argv[1])))
