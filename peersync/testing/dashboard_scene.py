"""A lived-in workspace for the dashboard's tests and screenshots: real syncs over a wired pair
(conflicts, deletions, merged logs, a peer that is down), a cloud folder, and real backups."""

from __future__ import annotations

# Lazy imports: a scene pulls in the sync engine and backups only when it is built (the
# screenshot script imports this module before it needs either).
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from peersync.testing.pair import WorkspacePair
from peersync.workspace.workspace import Peer

DOWN_PEER = "raspberry-pi"  # configured, never reachable (a closed loopback port)


@dataclass
class Scene:
    pair: WorkspacePair
    conflict_ids: list[str] = field(default_factory=list)  # kept on the local side
    snapshots: list[str] = field(default_factory=list)
    trashed: list[str] = field(default_factory=list)  # deleted here by a sync (in the local trash)


def _write(root: Path, rel: str, text: str, age: float | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if age is not None:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))


def _sync(ws, names=None) -> list:
    from peersync.sync.runner import run_sync

    return run_sync(ws, names)  # records history, as every sync does on the side that starts it


def build(pair: WorkspacePair, backup_dir: Path, cloud_dir: Path | None = None) -> Scene:
    """Fill `pair` with a history worth looking at; backups go to the local folder `backup_dir`."""
    from peersync import backup
    from peersync.peers.manage import add_cloud_peer

    L, R = pair.local, pair.remote
    scene = Scene(pair)
    peer = pair.peer_name
    # The page's conflict views need conflicts: with memory files merging three-way (the default),
    # the edits below would merge; this scene turns merging off (merges have their own tests).
    L.config_file.write_text("sync:\n  merge: []\n")
    _write(L.root, "MEMORY.md", "# Memory\n\n- Prefers short answers\n- Timezone: Europe/Berlin\n- Working on: peersync\n")
    _write(L.root, "USER.md", "# User\n\nName: Sam\nLikes: jazz, hiking\n")
    _write(L.root, "memory/2026-01-26.md", "# 2026-01-26\n\n09:00 started the day\n")
    _write(L.root, "memory/streaming-buddy/preferences.json", '{"volume": 40, "genre": "jazz"}\n')
    _write(L.root, "memory/notes/old-plan.md", "An old plan that is no longer needed.\n")
    _write(L.root, "memory/notes/scratch.md", "scratch pad\n")
    for i in range(6):
        _write(L.root, f"memory/2026-01-{18 + i:02d}.md", f"# 2026-01-{18 + i:02d}\n\nnotes of the day {i}\n")
    _sync(L, [peer])

    # Both sides edit MEMORY.md and USER.md: the remote's edits are newer and win; ours are kept aside.
    _write(L.root, "MEMORY.md", "# Memory\n\n- Prefers short answers\n- Timezone: Europe/Berlin\n"
                                "- Working on: peersync dashboard\n- Drinks tea, not coffee\n", age=300)
    _write(R.root, "MEMORY.md", "# Memory\n\n- Prefers detailed answers\n- Timezone: Europe/Berlin\n"
                                "- Working on: peersync\n- Learning Rust\n", age=30)
    _write(L.root, "USER.md", "# User\n\nName: Sam\nLikes: jazz, hiking, chess\n", age=200)
    _write(R.root, "USER.md", "# User\n\nName: Samantha\nLikes: jazz, hiking\n", age=20)
    # Appends on both sides to today's note merge; deletions on both sides go to the trashes.
    _write(L.root, "memory/2026-01-26.md", "# 2026-01-26\n\n09:00 started the day\n10:30 reviewed backups\n")
    _write(R.root, "memory/2026-01-26.md", "# 2026-01-26\n\n09:00 started the day\n11:15 call with the team\n")
    (L.root / "memory/notes/old-plan.md").unlink()
    (R.root / "memory/notes/scratch.md").unlink()
    _write(R.root, "memory/streaming-buddy/preferences.json", '{"volume": 55, "genre": "jazz"}\n')
    reports = _sync(L, [peer])
    scene.conflict_ids = [c.saved_as for c in reports[0].conflicts if c.saved_as]
    scene.trashed = list(reports[0].deleted_local)

    for i in range(3):  # a few ordinary syncs in both directions
        _write(R.root, f"memory/2026-01-2{7 + i}.md", f"# 2026-01-2{7 + i}\n\nfrom the mac mini {i}\n")
        _write(L.root, f"memory/ideas/idea-{i}.md", f"idea {i}\n")
        _sync(L, [peer])

    # A peer that is down: its sync fails (recorded in history) and it shows as unreachable.
    peers = L.load_peers()
    ours = peers[peer]
    peers[DOWN_PEER] = Peer(name=DOWN_PEER, host="127.0.0.1", user=ours.user, path="/srv/agent/clawd",
                            port=_closed_port(), identity=ours.identity, known_hosts=ours.known_hosts,
                            command=ours.command)
    L.save_peers(peers)
    _sync(L, [DOWN_PEER])
    if cloud_dir is not None:
        add_cloud_peer(L, "nas", str(cloud_dir), mode="mirror", test=False)
        _sync(L, ["nas"])

    # Backups: three snapshots a day apart (keep the last 2 → the oldest expires), then a verify.
    (L.state / "config.yaml").write_text(
        f"sync:\n  merge: []\nbackup:\n  target: {backup_dir}\n  interval: 3600\n  keep: {{last: 2}}\n"
        "auto:\n  enabled: true\n  interval: 300\n")
    start = datetime.now(timezone.utc) - timedelta(days=2)
    for day in range(3):
        _write(L.root, f"memory/backup-day-{day}.md", f"day {day}\n" * (200 * (day + 1)))
        result = backup.take_snapshot(L, now=start + timedelta(days=day), prune_after=False)
        scene.snapshots.append(result.snapshot.id)
    backup.verify(L)
    return scene


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there
