#!/usr/bin/env python3
"""A/B benchmark of the initial sync only: several peersync checkouts and rsync -a, interleaved.

Each variant is a checkout directory whose `peersync` package runs both the client and the remote
agent (through PYTHONPATH), so two versions of the code are compared in the same run, under the
same disk and load.  Every run starts from an identical copy of one generated tree and an empty
peer, after an untimed sync(2).  Example:

    python scripts/bench_initial.py --files 10000 --reps 5 --variant base=/tmp/base --variant new=.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import copy_tree, rsync_filters, selection_digest  # noqa: E402

from peersync.testing import LoopbackSSHD, generate, wire_pair  # noqa: E402


def run_peersync(checkout: Path, local: Path, remote: Path, sshd, log: Path) -> float:
    env_prefix = f"env PYTHONPATH={shlex.quote(str(checkout))}"
    wire_pair(local, remote, sshd, command=f"{env_prefix} {shlex.quote(sys.executable)} -m peersync")
    env = dict(os.environ, PYTHONPATH=str(checkout), PEERSYNC_KEEP_CONNECTION="0")
    os.sync()
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(local), "sync"], env=env, cwd="/",  # not a checkout's: it would shadow PYTHONPATH
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"peersync ({checkout}) failed, see {log}:\n{log.read_text()[-1500:]}")
    return seconds


def run_rsync(local: Path, remote: Path, sshd, log: Path) -> float:
    os.sync()
    with open(log, "wb") as out:
        started = time.perf_counter()
        subprocess.run(["rsync", "-a", "--delete", *rsync_filters(), "-e", sshd.rsh(), f"{local}/",
                        f"{sshd.target}:{remote}/"], stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=True)
        return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CHECKOUT")
    parser.add_argument("--no-rsync", action="store_true")
    parser.add_argument("--verify", action="store_true", help="compare both sides after each peersync run")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait (untimed) between a run's set-up and the run itself")
    args = parser.parse_args(argv)
    variants = [(v.split("=", 1)[0], Path(v.split("=", 1)[1]).resolve()) for v in args.variant] \
        or [("peersync", Path(__file__).resolve().parent.parent)]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="peersync-binit-"))
    names = [n for n, _ in variants] + ([] if args.no_rsync else ["rsync"])
    times: dict[str, list[float]] = {n: [] for n in names}
    with LoopbackSSHD(work / "sshd") as sshd:
        pristine = work / "gen"
        if not pristine.exists():
            generate(pristine, files=args.files, seed=1)
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no variant always first
            for name in order:
                base = work / f"run-{name}"
                shutil.rmtree(base, ignore_errors=True)
                base.mkdir()
                copy_tree(pristine, base / "local")
                (base / "remote").mkdir()
                os.sync()
                time.sleep(args.settle)
                log = work / f"{name}-{rep}.log"
                if name == "rsync":
                    seconds = run_rsync(base / "local", base / "remote", sshd, log)
                else:
                    checkout = dict(variants)[name]
                    seconds = run_peersync(checkout, base / "local", base / "remote", sshd, log)
                    if args.verify and selection_digest(base / "local") != selection_digest(base / "remote"):
                        raise SystemExit(f"{name}: replicas differ after the initial sync")
                times[name].append(seconds)
                print(f"rep {rep + 1} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
                shutil.rmtree(base, ignore_errors=True)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    ref = statistics.median(times["rsync"]) if "rsync" in times else None
    print("| variant | median s | runs | / rsync |\n|---|---:|---|---:|")
    for name in names:
        med = statistics.median(times[name])
        print(f"| {name} | {med:.2f} | {' '.join(f'{t:.2f}' for t in times[name])} | "
              f"{med / ref if ref else float('nan'):.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
