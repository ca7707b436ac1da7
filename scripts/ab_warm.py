#!/usr/bin/env python3
"""Interleaved A/B of warm syncs between checkouts of peersync (e.g. before and after a change).

    python scripts/ab_warm.py --files 10000 --reps 21 ../old-checkout .
    python scripts/ab_warm.py --cold --files 10000 --reps 21 ../old-checkout .   # new connections

Each checkout needs its own `.venv` (`bash scripts/setup.sh` there).  For each one, a server
process under that checkout's Python compiles its bytecode (as pip does), generates the same
workspace (`peersync.testing.generate`, seed 1), wires it to a second one over its own loopback
sshd and syncs three times (the keeper is then warm).  Then the checkouts take turns, in
alternating order, for `--reps` no-op syncs and `--reps` rounds of `mutate(n=130)` on both sides
followed by a sync — each a `peersync sync` CLI process, timed from start to exit.  `--cold`: every
sync with `keep_connection: 0` (no keeper: a Python start, an SSH handshake and the agent's start
each time), the start-up a change to imports or to the cold path shows in.  Turns
interleave so that a noisy machine slows every checkout alike; whole bench runs one after the
other differ by more than the changes being measured.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def serve(files: int, cold: bool = False) -> None:
    """Runs under one checkout's Python: set up a warm pair (`cold`: one that never keeps its
    connection), then answer `noop` / `change N` / `quit`."""
    import peersync
    from peersync.testing import LoopbackSSHD, generate, mutate, wire_pair

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(peersync.__file__)],
                   check=True, capture_output=True)
    base = Path(tempfile.mkdtemp(prefix="peersync-ab-"))
    sshd = LoopbackSSHD(base / "sshd")
    sshd.start()
    try:
        local, remote = base / "L", base / "R"
        generate(local, files=files, seed=1)
        wire_pair(local, remote, sshd)
        cli = [sys.executable, "-m", "peersync", "-w", str(local), "sync"]
        env = {**os.environ, "PEERSYNC_KEEP_CONNECTION": "0"} if cold else None

        def run() -> float:
            started = time.perf_counter()
            proc = subprocess.run(cli, capture_output=True, stdin=subprocess.DEVNULL, env=env)
            took = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"sync failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
            return took

        for _ in range(3):
            run()
        print("ready", flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[0] == "noop":
                print(run(), flush=True)
            elif command[0] == "change":
                round_ = int(command[1])
                mutate(local, seed=100 + round_, n=130)
                mutate(remote, seed=200 + round_, n=130)
                print(run(), flush=True)
            else:
                break
    finally:
        subprocess.run(["pkill", "-f", str(base)], check=False)  # its keeper and agent
        sshd.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--block", type=int, default=1,
                        help="syncs in a row per checkout and turn (1: strictly alternating).  A sync's "
                             "flush of the file system also writes what the other checkout's last sync left "
                             "unflushed; blocks keep each checkout paying mostly for its own")
    parser.add_argument("--cold", action="store_true", help="every sync on a new connection (no keeper)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.files, args.cold)
        return
    trees = [c.resolve() for c in args.checkouts]
    procs = {}
    for tree in trees:
        python = tree / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"{tree} has no .venv: run `bash scripts/setup.sh` there first")
        procs[tree] = subprocess.Popen([str(python), str(Path(__file__).resolve()), "--serve", "--files", str(args.files),
                                        *(["--cold"] if args.cold else []), "."],
                                       cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for tree, proc in procs.items():
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{tree}: set-up failed")

    def ask(tree: Path, command: str) -> float:
        proc = procs[tree]
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return float(proc.stdout.readline())

    times = {tree: {"noop": [], "change": []} for tree in trees}
    for kind in ("noop", "change"):
        for turn in range(0, args.reps, args.block):
            for tree in trees if (turn // args.block) % 2 == 0 else trees[::-1]:
                for i in range(turn, min(turn + args.block, args.reps)):
                    times[tree][kind].append(ask(tree, "noop" if kind == "noop" else f"change {i}"))
    for tree, proc in procs.items():
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait()
    how = "new connection each sync" if args.cold else "warm keeper"
    print(f"{args.files} files, {how}, median of {args.reps} (interleaved, {args.block} in a row):")
    for tree in trees:
        print(f"  {str(tree):40s} no-op {statistics.median(times[tree]['noop']) * 1000:6.1f} ms   "
              f"2 x 130 changes {statistics.median(times[tree]['change']) * 1000:6.1f} ms")
    # A process that slows down as it syncs again and again (state or caches that grow) shows here.
    print("by thirds of the run (medians, ms):")
    for tree in trees:
        parts = {kind: [statistics.median(values[k * len(values) // 3:(k + 1) * len(values) // 3] or values) * 1000
                        for k in range(3)] for kind, values in times[tree].items()}
        print(f"  {str(tree):40s} no-op {' '.join(f'{v:6.1f}' for v in parts['noop'])}   "
              f"changes {' '.join(f'{v:6.1f}' for v in parts['change'])}")
    # Round i of every checkout syncs the same edits at nearly the same moment: compare them in pairs.
    # The interval is a bootstrap of the median ratio over rounds (90 %): a change whose interval
    # holds 0 % is not measurably slower or faster at this many repetitions.
    first = trees[0]
    if len(trees) > 1:
        print(f"against {first}, paired by round (median ratio, 90 % bootstrap interval):")
    for tree in trees[1:]:
        cells = []
        for kind, label in (("noop", "no-op"), ("change", "changes")):
            ratios = [b / a for a, b in zip(times[first][kind], times[tree][kind])]
            draw = random.Random(0)
            boots = sorted(statistics.median(draw.choices(ratios, k=len(ratios))) for _ in range(2000))
            cells.append(f"{label} {(statistics.median(ratios) - 1) * 100:+5.1f} % "
                         f"[{(boots[100] - 1) * 100:+5.1f}, {(boots[1899] - 1) * 100:+5.1f}]")
        print(f"  {str(tree):40s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
