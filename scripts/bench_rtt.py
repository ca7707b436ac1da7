#!/usr/bin/env python3
"""How many network round trips a sync waits for: the same sync to the same peer, once directly
over loopback and once through a relay that delays every byte (peersync.testing.delay), as a
tailnet between two homes does.  The difference divided by the round trip is the number of round
trips the sync waited for, one after the other — what a user on a 20–50 ms tailnet pays on every
sync, which a loopback benchmark cannot show.  Three syncs: a no-op; a few changes (two notes
edited on each side, each side's copied to the other); and notes made and deleted (on each side
one new, and one file it has had since the first sync deleted: paths only one side holds, with
deletion records — such a file's version predates version vectors, so both sides record it).

    python scripts/bench_rtt.py --files 2000 --one-way-ms 10 --reps 7
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--one-way-ms", type=float, default=10.0, help="delay each way (the round trip is twice this)")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    from peersync.testing import LoopbackSSHD, generate, wire_pair
    from peersync.testing.delay import DelayProxy
    from peersync.workspace.workspace import Workspace

    base = Path(tempfile.mkdtemp(prefix="peersync-rtt-"))
    rtt = 2 * args.one_way_ms / 1000
    with LoopbackSSHD(base / "sshd") as sshd, DelayProxy(sshd.port, args.one_way_ms / 1000) as proxy:
        local, remote = base / "L", base / "R"
        generate(local, files=args.files, seed=1)
        wire_pair(local, remote, sshd)
        ws = Workspace(local)
        peers = ws.load_peers()
        known = base / "known_hosts_far"
        known.write_text(sshd.known_hosts.read_text().replace(f"]:{sshd.port} ", f"]:{proxy.port} "))
        peers["far"] = dataclasses.replace(peers["remote"], name="far", port=proxy.port, known_hosts=str(known))
        ws.save_peers(peers)

        edits = iter(range(1 << 30))

        def edit() -> None:
            """Two notes edited on each side (each copied to the other by the next sync)."""
            n = next(edits)
            for side, root in (("here", local), ("there", remote)):
                for k in range(2):
                    (root / "memory" / f"rtt-{side}-{k}.md").write_text(f"{side} {k}: edit {n}\n")

        made = iter(range(1 << 30))
        old = sorted(p.relative_to(local) for p in (local / "memory").rglob("*.md") if p.is_file())
        olds = {"here": iter(old[0::2]), "there": iter(old[1::2])}  # (each side its own)

        def churn() -> None:
            """On each side a note made, and a file from the first sync deleted (else the note
            made last time)."""
            n = next(made)
            for side, root in (("here", local), ("there", remote)):
                (root / "memory" / f"rtt-new-{side}-{n}.md").write_text(f"{side}: made {n}\n")
                gone = next(olds[side], None)
                (root / gone if gone else root / "memory" / f"rtt-new-{side}-{n - 1}.md").unlink(missing_ok=True)

        kinds = {"no-op": None, "4 changes": edit, "2 made, 2 deleted": churn}

        def sync(peer: str, keep: str | None, kind: str = "no-op") -> float:
            if kinds[kind] is not None:
                kinds[kind]()
            env = dict(os.environ)
            if keep is not None:
                env["PEERSYNC_KEEP_CONNECTION"] = keep
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(local), "sync", peer],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=300)
            took = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"sync with {peer} failed ({proc.returncode}): {proc.stderr[-500:]}")
            return took

        for peer in ("remote", "far"):  # the initial sync, then warm keepers for both
            for _ in range(3):
                sync(peer, None)
        times: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.reps):
            for mode, keep in (("warm", None), ("new connection", "0")):
                for kind in kinds:
                    for peer in ("remote", "far"):
                        times.setdefault((mode, kind, peer), []).append(sync(peer, keep, kind))
    shutil.rmtree(base, ignore_errors=True)
    print(f"{args.files} files, median of {args.reps}; relay: {args.one_way_ms:g} ms each way "
          f"(round trip {rtt * 1000:g} ms)")
    for mode in ("warm", "new connection"):
        for kind in kinds:
            near, far = (statistics.median(times[(mode, kind, p)]) for p in ("remote", "far"))
            what = f"{mode}, {kind}"
            print(f"  {what:26} loopback {near * 1000:7.1f} ms   relayed {far * 1000:7.1f} ms   "
                  f"= {(far - near) / rtt:4.1f} round trips waited")


if __name__ == "__main__":
    main()
