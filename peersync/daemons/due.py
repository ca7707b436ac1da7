"""The heartbeat's not-due check: `peersync heartbeat` answers here, before the CLI or the sync
engine is imported, when there is nothing to do (daemons/heartbeat.py runs a tick that is due).

Light at import on purpose: the agent runs a heartbeat every few minutes, and a tick with nothing
to do must cost next to nothing — this imports only the workspace's locator, `auto` and PyYAML.
"""

from __future__ import annotations

import os
import time

from peersync.errors import ConfigError, PeersyncError
from peersync.workspace import auto
from peersync.workspace.locate import check, locate


def fast_main(argv: list[str]) -> int | None:
    """Handle `[-w WS] heartbeat [--reason R]` when there is nothing to do: exit status 0, no
    output, no network.  None means "not sure": the full CLI then runs the tick (or reports
    whatever is wrong with the arguments or the config)."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    option, reason = parsed
    try:
        root = str(check(locate(option)))  # the same workspace the full CLI would use (workspace/locate.py)
    except PeersyncError:
        return None  # the full CLI says why it refuses it
    raw = auto.raw_config_fast(root)
    if raw is None:
        return None
    try:
        cfg = auto.parse_auto(raw.get("auto"))
    except ConfigError:
        return None
    if cfg.enabled:
        renew_old_job(root, option)
    backup = raw.get("backup")
    if isinstance(backup, dict) and backup.get("interval") and _backup_needs_tick(root, backup["interval"]):
        return None  # a scheduled backup is due (or the setting is odd): the full path handles it
    state = auto.read_state(auto.state_dir(root))
    if auto.is_due(cfg, state.get("last_run"), reason, time.time()):
        return None
    return 0


RENEWED = "cron-job.renewed"  # in the state dir: when renew_old_job last re-registered the job
RENEW_EVERY = 86400.0  # seconds: at most once a day


def renew_old_job(root: str, option: str | None) -> bool:
    """Started by the OpenClaw cron job a peersync from before -P registered — `python -m peersync
    -w W heartbeat` in the workspace, which imports a `peersync/` folder there before the installed
    one: have the job registered again (`auto on`, by its declaration key: the same job, this
    peersync's heartbeat_argv) in the background, at most once a day.  True when it started."""
    import sys  # lazy: a builtin module

    if sys.flags.safe_path or option is None or list(sys.orig_argv[1:]) != ["-m", "peersync", "-w", option, "heartbeat"]:
        return False
    marker = os.path.join(auto.state_dir(root), RENEWED)
    try:
        if time.time() - os.stat(marker).st_mtime < RENEW_EVERY:
            return False
    except OSError:
        pass
    try:
        with open(marker, "a"):
            pass
        os.utime(marker)
    except OSError:
        return False  # no state dir to mark: not ours to fix from here
    import subprocess  # lazy: only on this once-a-day path

    subprocess.Popen([sys.executable, "-P", "-m", "peersync", "-w", root, "auto", "on"], cwd="/",
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
    return True


def _backup_needs_tick(root: str, interval) -> bool:
    """A scheduled backup is due by peersync.backup.schedule's rule (the one place it is
    defined; that module imports only the standard library), or the last one failed or made a
    passphrase and the user has not been told, or the setting is odd: the full path decides."""
    from peersync.backup import schedule  # lazy: start-up (only where a backup interval is set)

    if isinstance(interval, bool) or not isinstance(interval, int):
        return True
    state = auto.state_dir(root)
    runs = schedule.read_runs(state)
    if runs.get("last_ok") is False or os.path.exists(os.path.join(state, "backup", "passphrase.notice")):
        return True
    return schedule.is_due(interval, runs, time.time())


def _parse(argv: list[str]) -> tuple[str | None, str | None] | None:
    option = reason = None
    command = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not command and arg in ("-w", "--workspace") and i + 1 < len(argv):
            option, i = argv[i + 1], i + 2
        elif not command and arg.startswith("--workspace="):
            option, i = arg.split("=", 1)[1], i + 1
        elif not command and arg == "heartbeat":
            command, i = True, i + 1
        elif command and arg == "--reason" and i + 1 < len(argv):
            reason, i = argv[i + 1], i + 2
        elif command and arg.startswith("--reason="):
            reason, i = arg.split("=", 1)[1], i + 1
        else:
            return None  # --json, --debug, --help, anything else: the full CLI handles it
    if not command or (reason is not None and reason not in auto.REASONS):
        return None
    return option, reason
