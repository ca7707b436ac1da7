"""Demo: two agent workspaces on this machine, synced over a real SSH server on 127.0.0.1.

Nothing to configure: the script starts its own sshd with throw-away keys, creates a
"laptop" and a "mac-mini" workspace, edits both (both agents add to MEMORY.md, both change the
same line of USER.md, both append to the daily note), and runs the real `peersync` commands a
user would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peersync.testing.pair import wire_pair  # noqa: E402
from peersync.testing.sshd import LoopbackSSHD  # noqa: E402
from peersync.testing.workspace_gen import generate, mutate  # noqa: E402


def run(ws: Path, *args: str) -> None:
    shown = " ".join(args)
    print(f"\n$ peersync -w {ws.name} {shown}", flush=True)
    # Each "machine" names itself in what a merge keeps (both run on this host here).
    env = {**os.environ, "PEERSYNC_MACHINE_NAME": ws.name}
    subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws), *args], check=False, env=env)


def write(path: Path, text: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to put the demo (default: a new temp dir)")
    parser.add_argument("--files", type=int, default=400, help="files per generated workspace")
    parser.add_argument("--keep", action="store_true", help="keep the demo dir afterwards")
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="peersync-demo-")).absolute()
    laptop, mini = base / "laptop", base / "mac-mini"
    print(f"🧪 peersync demo in {base}")
    try:
        with LoopbackSSHD(base / "sshd") as sshd:
            print(f"🔑 sshd on 127.0.0.1:{sshd.port} with keys made just now (known_hosts pinned)")
            # Two instances of the same agent: the mac-mini started as a copy of the laptop,
            # with its own identity and config, and both have been working since.
            generate(laptop, files=args.files, seed=1)
            shutil.copytree(laptop, mini, symlinks=True)
            write(mini / "IDENTITY.md", "# Identity\nI am the mac-mini instance.\n")
            mutate(laptop, seed=11, n=6)
            mutate(mini, seed=12, n=6)
            pair = wire_pair(laptop, mini, sshd, peer_name="mac-mini", back_name="laptop")
            for ws, name, other in ((pair.local, "mac-mini", mini), (pair.remote, "laptop", laptop)):
                peers = ws.load_peers()
                peers[name] = sshd.make_peer(name, path=other, command=f"env PEERSYNC_MACHINE_NAME={name} {pair.command}")
                ws.save_peers(peers)

            run(laptop, "peers", "list")
            run(laptop, "status")
            run(laptop, "sync", "mac-mini")  # first sync: no shared history yet, so a union

            memory = (laptop / "MEMORY.md").read_text()
            write(laptop / "MEMORY.md", memory.replace("## Preferences\n", "## Preferences\n- Prefers short answers\n"))
            write(mini / "MEMORY.md", memory.replace("## Preferences\n", "## Preferences\n- Wants sources linked\n"))
            user = (laptop / "USER.md").read_text()
            timezone = next(line for line in user.splitlines() if "Timezone" in line)
            write(laptop / "USER.md", user.replace(timezone, "- **Timezone:** Europe/Lisbon (moved in May)"))
            write(mini / "USER.md", user.replace(timezone, "- **Timezone:** America/New_York (travelling)"))
            note = "memory/2026-01-26.md"
            base_note = (laptop / note).read_text() if (laptop / note).exists() else "# 2026-01-26\n"
            write(laptop / note, base_note + "- 14:02 laptop: drafted the release notes\n")
            write(mini / note, base_note + "- 14:05 mac-mini: ran the nightly backup\n")
            write(laptop / "memory/streaming-buddy/preferences.json", '{"volume": 7, "genre": "jazz"}\n')
            (mini / "memory/notes").mkdir(parents=True, exist_ok=True)
            write(mini / "memory/notes/groceries.md", "- oat milk\n- coffee\n")

            run(laptop, "diff", "mac-mini")
            run(laptop, "sync", "mac-mini")
            run(laptop, "sync", "mac-mini")  # nothing left to do
            run(laptop, "conflicts", "list")
            merged = (laptop / "USER.md").read_text()
            start = merged.index("> ⚠️")
            print("\n👀 USER.md now (both edits live, both machines):\n" + merged[start:merged.index("\n\n", start)])
            run(laptop, "history", "--limit", "3")

            same = all((laptop / p).read_bytes() == (mini / p).read_bytes() for p in (note, "MEMORY.md", "USER.md"))
            print(f"\n🔀 {note}, MEMORY.md and USER.md are identical on both sides: {same}")
            print((laptop / note).read_text().rstrip().splitlines()[-2:])
            identity = (laptop / "IDENTITY.md").read_text() != (mini / "IDENTITY.md").read_text()
            print(f"🪪 IDENTITY.md stayed per-instance: {identity}")
            return 0 if same and identity else 1
    finally:
        if args.keep or args.dir:
            print(f"\n(demo files kept in {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
