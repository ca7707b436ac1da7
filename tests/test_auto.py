"""Auto-sync settings: the pure scheduling rules, and `auto on|off|status` editing config.yaml in place."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from peersync.cli.main import app
from peersync.errors import ConfigError, PeersyncError
from peersync.workspace import auto
from peersync.workspace.auto import (
    AutoConfig,
    backoff_seconds,
    edit_section,
    is_due,
    parse_auto,
    peers_to_try,
    record_results,
)
from peersync.workspace.workspace import Workspace

ON = AutoConfig(enabled=True, interval=300)
HOOKS = AutoConfig(enabled=False, on_session_start=True)


@pytest.mark.parametrize("cfg, last_run, reason, now, due", [
    (AutoConfig(), None, None, 1000, False),                 # off: never due
    (ON, None, None, 1000, True),                            # on, never ran
    (ON, 900, None, 1000, False),                            # ran 100 s ago
    (ON, 700, None, 1000, True),                             # exactly one interval ago
    (ON, 703, None, 1000, True),                             # a cron tick a hair early is on time
    (ON, 706, None, 1000, False),                            # …but not one that is well early
    (ON, 5000, None, 1000, True),                            # last run in the future: clock set back
    (HOOKS, 999, "session-start", 1000, True),               # hook on: forced, even though auto is off
    (HOOKS, None, "session-end", 1000, False),               # that hook is off, and so is auto
    (ON, 900, "session-end", 1000, False),                   # hook off: an ordinary tick
    (ON, 900, "interval", 1000, False),
], ids=["off", "never-ran", "recent", "interval-passed", "slightly-early", "too-early", "clock-back", "hook-forces", "hook-off",
        "hook-off-auto-on", "explicit-interval"])
def test_is_due(cfg, last_run, reason, now, due):
    assert is_due(cfg, last_run, reason, now) is due


@pytest.mark.parametrize("failures, expected", [(0, 0), (1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3600), (60, 3600)])
def test_backoff_doubles_and_is_capped(failures, expected):
    assert backoff_seconds(failures, 300, auto.MAX_BACKOFF) == expected


def test_backoff_cap_is_never_below_the_base():
    assert backoff_seconds(3, 7200, 3600) == 7200


def test_peers_to_try_and_record_results():
    state = {"a": {"failures": 2, "retry_at": 2000}, "b": {"failures": 1, "retry_at": 900}}
    assert peers_to_try(["a", "b", "c"], state, 1000) == (["b", "c"], ["a"])
    new, fresh = record_results(state, {"b": None, "c": "refused\nhint"}, 1000, base=300, cap=3600)
    assert "b" not in new  # success clears the record
    assert new["c"] == {"failures": 1, "retry_at": 1300, "since": 1000, "error": "refused"}
    assert new["a"] == state["a"]  # not tried this time: unchanged
    assert fresh == ["c"]
    again, fresh = record_results(new, {"c": "refused"}, 1300, base=300, cap=3600)
    assert again["c"]["failures"] == 2 and again["c"]["retry_at"] == 1900 and again["c"]["since"] == 1000
    assert fresh == []  # still down: not news


@pytest.mark.parametrize("kind, busy", [(None, False), ("busy", True), ("connect", False), ("timeout", False)])
def test_peer_busy(kind, busy):
    from peersync.core.types import Mode, Report

    report = Report(peer="p", host="h", mode=Mode.SYNC, error=None if kind is None else "…", error_kind=kind)
    assert auto.peer_busy(report) is busy


@pytest.mark.parametrize("raw, expected", [
    (None, AutoConfig()),
    ({"enabled": True}, AutoConfig(enabled=True)),
    ({"interval": 10, "timeout": 1}, AutoConfig(interval=auto.MIN_INTERVAL, timeout=auto.MIN_TIMEOUT)),
    ({"interval": 900.0, "on_session_end": True}, AutoConfig(interval=900, on_session_end=True)),
])
def test_parse_auto(raw, expected):
    assert parse_auto(raw) == expected


@pytest.mark.parametrize("raw", [{"enabled": "yes"}, {"interval": "5m"}, {"interval": True}, ["enabled"]])
def test_parse_auto_refuses_bad_values(raw):
    with pytest.raises(ConfigError):
        parse_auto(raw)


CONFIG = """\
# my settings
sync:
  policy: local   # I trust this machine
  exclude: ["*.tmp", "drafts/"]

# automation
auto:
  enabled: false    # flip me
  # interval: 300
  timeout: 30

# Backups are configured by hand.
backup:
  keep: {last: 3}
custom_key: [1, 2]
"""


def test_edit_section_changes_only_the_keys_and_keeps_comments():
    text = edit_section(CONFIG, "auto", {"enabled": True, "interval": 600})
    assert yaml.safe_load(text) == {**yaml.safe_load(CONFIG),
                                    "auto": {"enabled": True, "timeout": 30, "interval": 600}}
    assert "  enabled: true    # flip me\n" in text
    assert "  # interval: 300\n  timeout: 30\n  interval: 600\n" in text
    assert text.replace("  enabled: true    # flip me\n", "").replace("  interval: 600\n", "") == \
        CONFIG.replace("  enabled: false    # flip me\n", "")
    assert text.index("interval: 600") < text.index("# Backups are configured by hand.")


def test_edit_section_appends_a_missing_section():
    text = edit_section("sync:\n  skills: true\n", "auto", {"enabled": True})
    assert text == "sync:\n  skills: true\n\nauto:\n  enabled: true\n"


def test_edit_section_declines_flow_style():
    assert edit_section("auto: {enabled: false}\n", "auto", {"enabled": True}) is None


# -- the command, on a wired pair of workspaces -----------------------------------------------
runner = CliRunner()


def run(ws: Workspace, *args):
    """Like the console entry point: a PeersyncError becomes its exit code (cli.run does that)."""
    result = runner.invoke(app, ["-w", str(ws.root), *args])
    if isinstance(result.exception, PeersyncError):
        return result.exception.exit_code, str(result.exception)
    return result.exit_code, result.output


def test_auto_on_off_status_round_trip_preserves_the_rest(workspace_pair):
    ws = workspace_pair.local
    ws.ensure_state()
    ws.config_file.write_text(CONFIG)
    code, out = run(ws, "auto", "on", "--interval", "600")
    assert code == 0, out
    assert out.startswith("✅ Auto-sync on: every 10 min (each sync gives up after 30 s)")
    data = yaml.safe_load(ws.config_file.read_text())
    assert data["auto"] == {"enabled": True, "timeout": 30, "interval": 600}
    assert {k: v for k, v in data.items() if k != "auto"} == \
        {k: v for k, v in yaml.safe_load(CONFIG).items() if k != "auto"}
    assert "# I trust this machine" in ws.config_file.read_text()
    assert ws.sync_config().policy.value == "local"
    assert oct(ws.config_file.stat().st_mode & 0o777) == "0o600"

    code, out = run(ws, "auto", "status")
    assert code == 0 and out.startswith("🔄 Auto-sync is on: every 10 min")
    assert "Nothing runs auto-sync on this machine yet: OpenClaw's CLI is not on PATH" in out

    code, out = run(ws, "--json", "auto")
    doc = json.loads(out)
    assert doc["auto"]["enabled"] is True and doc["auto"]["interval"] == 600

    code, out = run(ws, "auto", "--session-start")
    assert yaml.safe_load(ws.config_file.read_text())["auto"]["on_session_start"] is True
    assert "also on session start" in out

    code, out = run(ws, "auto", "off")
    assert code == 0 and out.startswith("⏸️ Auto-sync is off")
    final = ws.config_file.read_text()
    assert yaml.safe_load(final)["auto"] == {"enabled": False, "timeout": 30, "interval": 600,
                                             "on_session_start": True}
    assert final.count("enabled:") == 1 and "# flip me" in final


@pytest.mark.parametrize("args", [["auto", "on", "--interval", "59"], ["auto", "sometimes"],
                                  ["auto", "on", "--timeout", "1"]])
def test_auto_refuses_bad_usage_and_leaves_the_file(workspace_pair, args):
    ws = workspace_pair.local
    ws.ensure_state()
    ws.config_file.write_text(CONFIG)
    code, _ = run(ws, *args)
    assert code == 2
    assert ws.config_file.read_text() == CONFIG


def test_auto_on_a_fresh_workspace_and_a_malformed_config(workspace_pair):
    ws = workspace_pair.local
    code, _ = run(ws, "auto", "on")
    assert code == 0
    assert yaml.safe_load(ws.config_file.read_text()) == {"auto": {"enabled": True}}
    ws.config_file.write_text("auto: [unclosed\n")
    code, _ = run(ws, "auto", "off")
    assert code == 2
    assert ws.config_file.read_text() == "auto: [unclosed\n"


def test_auto_on_carries_a_clawdbot_config_json_over(workspace_pair):
    ws = workspace_pair.local
    ws.ensure_state()
    (ws.state / "config.json").write_text(json.dumps({"syncSkills": True, "conflictResolution": "newest-wins",
                                                      "autoSync": False, "syncInterval": 900}))
    code, out = run(ws, "auto", "on")
    assert code == 0, out
    data = yaml.safe_load(ws.config_file.read_text())
    assert data["sync"] == {"skills": True, "policy": "newest"}
    assert data["auto"] == {"enabled": True, "interval": 900}
    assert "skills" in ws.sync_config().selection.roots
