"""The one shape of every `--json` document (docs/output.schema.json): the envelope, times, errors.

Every document is one JSON object with `ok` (true exactly when the exit status is 0), `error`
(null, or {kind, message, hint, exit_code}), `command` ("peers add") and `workspace` (the path used,
or null), then the command's own fields.  Keys are snake_case; every time is an RFC 3339 string in
UTC ("2026-01-26T10:00:00Z").  Stored formats (history.json, peers.json) keep their own shapes:
this module only shapes what the CLI prints.

Light on purpose (json only; datetime where a time is shaped): the CLI's fast path (cli/quick.py)
prints with it.
"""

from __future__ import annotations

import json

# Keys whose values are moments in time (epoch seconds or ISO 8601 strings in, RFC 3339 UTC out).
TIME_KEYS = {"time", "last_run", "last_attempt", "last_success", "last_seen", "next_due", "recorded", "expires",
             "mtime", "since", "started", "finished"}
TIME_SUFFIXES = ("_at", "_time", "_until")


def is_time_key(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(TIME_SUFFIXES)


def utc(value) -> str | None:
    """A moment as RFC 3339 UTC with a Z; epoch seconds, ISO 8601 with or without an offset (then
    local time), or None.  Anything else is returned unchanged (the schema test then fails)."""
    if value is None or isinstance(value, bool):
        return value
    from datetime import datetime, timezone  # lazy: a warm sync's text output needs no times

    try:
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, timezone.utc)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            moment = (moment if moment.tzinfo else moment.astimezone()).astimezone(timezone.utc)
        else:
            return value
    except (ValueError, OverflowError, OSError):
        return value
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def normalise(value, key: str | None = None):
    """Times to RFC 3339 UTC, recursively (by key name: see TIME_KEYS)."""
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v, key) for v in value]
    if key is not None and is_time_key(key) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return utc(value)
    return value


def error_doc(kind: str, message: str, hint: str | None = None, exit_code: int = 1) -> dict:
    return {"kind": kind, "message": message, "hint": hint, "exit_code": exit_code}


def document(command: str, body: dict | None = None, *, workspace=None, error: dict | None = None) -> dict:
    """The envelope around a command's fields.  `ok` is false when there is an error (or the
    body says so)."""
    body = dict(body or {})
    ok = body.pop("ok", True) and error is None
    body.pop("error", None)
    if not ok and error is None:  # a command that reports its failure only as ok: false (exit 1)
        error = error_doc("failed", f"{command or 'the command'} did not complete; see the other fields", None, 1)
    doc = {"ok": bool(ok), "error": error, "command": command,
           "workspace": str(workspace) if workspace is not None else None, **body}
    return normalise(doc)


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str)


def report_doc(report: dict) -> dict:
    """A sync report (core.types.Report.to_json, also history's entries) in the CLI's names:
    `clock_offset_s` as in `status` (seconds), `error` as {kind, message, …} or null."""
    out = dict(report)
    if "clock_offset" in out:
        offset = out.pop("clock_offset")
        out["clock_offset_s"] = round(offset, 3) if isinstance(offset, (int, float)) else offset
    message = out.get("error")
    if isinstance(message, str):
        out["error"] = error_doc(out.pop("error_kind", None) or "error", message, None, out.get("exit_code") or 1)
    else:
        out.pop("error_kind", None)
    out.pop("exit_code", None)
    return out


def sync_doc(command: str, reports: list, exits: list[int], workspace) -> tuple[dict, int]:
    """The document and exit status of sync/push/pull/diff, from Report.to_json() dicts and their
    exit codes: the whole run's error is the first failed report's."""
    docs = [report_doc({**r, "exit_code": e}) for r, e in zip(reports, exits)]
    code = sync_status(reports, exits)
    failed = [d["error"] for d in docs if d.get("error")]
    error = None
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        error = error_doc(first["kind"], first["message"] + more, None, code)
    return document(command, {"reports": docs}, workspace=workspace, error=error), code


def sync_status(reports: list, exits: list[int]) -> int:
    """The exit status of sync/push/pull/diff, from Report.to_json() dicts and their exit codes."""
    return exit_status([e if not r["ok"] else 0 for r, e in zip(reports, exits)])


def exit_status(codes: list[int]) -> int:
    """One exit status for several results: bad input (2) over failures (1) over a peer that could
    not be reached (3); 0 only when everything worked."""
    failed = [c or 1 for c in codes if c != 0]
    for code in (2, 1, 3):
        if code in failed:
            return code
    return max(failed, default=0)
