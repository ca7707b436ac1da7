"""What the heartbeat tells the chat about routine syncs: nothing at once, a digest at most every auto.summary.

The heartbeat runs every few minutes and the agent relays whatever it prints; a line per peer per
sync that moved a file is chat spam.  Conflicts, per-file problems and a peer that stops answering
are still told at once (daemons/heartbeat.py); files that simply moved are counted here, in the
heartbeat's state (auto-state.json, key "digest"), and summed up in one line when
`auto.summary` seconds have passed since the digest began (0: every sync is told as before;
None, `never`: never).
"""

from __future__ import annotations

from datetime import datetime

KEYS = ("pushed", "pulled", "merged", "deleted")


def count(state: dict, report, now: float) -> None:
    """Add one successful sync's moved files to the digest."""
    digest = state.get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("since"), (int, float)):
        digest = {"since": now, "syncs": 0, "peers": [], **{k: 0 for k in KEYS}}
    moved = {"pushed": len(report.pushed), "pulled": len(report.pulled), "merged": len(report.merged),
             "deleted": len(report.deleted_local) + len(report.deleted_remote)}
    if not any(moved.values()):
        state["digest"] = digest
        return
    digest["syncs"] = int(digest.get("syncs", 0)) + 1
    digest["peers"] = sorted(set(digest.get("peers") or []) | {report.peer})
    for key, n in moved.items():
        digest[key] = int(digest.get(key, 0)) + n
    state["digest"] = digest


def take(state: dict, now: float, every: int | None) -> list[str]:
    """The digest line when it is due (and a new digest begins), else nothing."""
    digest = state.get("digest")
    if every is None or not isinstance(digest, dict) or not isinstance(digest.get("since"), (int, float)):
        return []
    if now - digest["since"] < every:
        return []
    state.pop("digest")
    if not digest.get("syncs"):
        return []
    counts = [f"{icon} {digest.get(key, 0)} {key}" for icon, key in
              (("📤", "pushed"), ("📥", "pulled"), ("🔀", "merged"), ("🗑️", "deleted")) if digest.get(key)]
    since = datetime.fromtimestamp(digest["since"]).strftime("%a %H:%M")
    syncs = digest["syncs"]
    return [f"🔄 Auto-sync since {since}: {syncs} sync{'s' if syncs != 1 else ''} with "
            f"{', '.join(digest.get('peers') or [])} — {', '.join(counts)}"]
