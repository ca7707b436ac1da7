#!/usr/bin/env python3
"""Benchmark `peersync backup` against plain restic (through the same rclone) on the same data, local and S3.

The data is issue 20's: a generated 10,000-file workspace with a 50 MB JSONL session log.  For
each tool and target, from the same starting tree: a first backup; ten backups, each after a
100 KB append to the log; a restore of the latest snapshot; a verify of everything.  S3 is a real
`rclone serve s3` on loopback behind a proxy that counts requests and bytes.  Both tools encrypt
(restic always does).  Prints medians over --trials runs, and peersync ÷ restic ratios.

What an append costs depends on the repository's chunker polynomial (restic draws one at random
per repository; the part of the log after its last chunk boundary is stored again), and that
varies far more between repositories than anything peersync adds.  So within a trial both
tools' repositories are made with the same, freshly drawn polynomial (`init --copy-chunker-params`
from an empty repository per trial): the ratios then compare the tools, and the trials sample
the chunking.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

LOG = "memory/sessions/main.jsonl"
KEY, SECRET = "BENCHKEY", "bench-secret-0123456789"
PASSPHRASE = "benchmark passphrase"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_base(base: Path, files: int, log_mb: int) -> None:
    from peersync.backup.selection import BackupSelection, plan
    from peersync.testing import generate, session_log
    from peersync.workspace.workspace import Workspace

    generate(base, files=files, seed=0)
    ws = Workspace(base)
    have = plan(base, BackupSelection(ws.sync_config().selection)).files
    for n in range(max(0, files - have)):  # the generator leaves some files out of the selection
        path = base / "memory" / "notes" / f"extra-{n:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Note {n}\n- something to remember\n")
    session_log(base, LOG, log_mb * 1_000_000)


class Tool:
    """One way to back up: `peersync backup` (its CLI) or plain restic given the same paths."""

    def __init__(self, name: str, ws: Path, remote: str, env: dict, rclone: str, scratch: Path):
        self.name, self.ws, self.remote, self.env, self.rclone, self.scratch = name, ws, remote, env, rclone, scratch

    def _restic(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["restic", "-r", f"rclone:{self.remote}", "-o", f"rclone.program={self.rclone}", *args],
                              cwd=cwd, env={**self.env, "RESTIC_PASSWORD": PASSPHRASE}, capture_output=True, check=True)

    def _peersync(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "peersync", "-w", str(self.ws), "backup", *args,
                               "--target", self.remote], env={**self.env, "PEERSYNC_BACKUP_PASSPHRASE": PASSPHRASE},
                              capture_output=True, check=True)

    def backup(self) -> None:
        if self.name == "peersync":
            self._peersync("now")
            return
        from peersync.backup.selection import BackupSelection, plan
        from peersync.workspace.workspace import Workspace

        listing = self.scratch / "restic-files"
        if not listing.exists():  # the paths peersync hands restic; plain restic then finds its parent itself
            targets = plan(self.ws, BackupSelection(Workspace(self.ws).sync_config().selection)).targets
            listing.write_bytes(b"".join(t.encode() + b"\0" for t in targets))
        self._restic("backup", "--files-from-raw", str(listing), cwd=self.ws)

    def init(self, chunker: Path) -> None:
        """The repository, with the trial's chunker polynomial (peersync opens it as its own)."""
        subprocess.run(["restic", "-r", f"rclone:{self.remote}", "-o", f"rclone.program={self.rclone}", "init",
                        "--from-repo", str(chunker), "--copy-chunker-params"], check=True, capture_output=True,
                       env={**self.env, "RESTIC_PASSWORD": PASSPHRASE, "RESTIC_FROM_PASSWORD": PASSPHRASE})

    def restore(self, into: Path) -> None:
        if self.name == "peersync":
            self._peersync("restore", "--to", str(into))
        else:
            self._restic("restore", "latest", "--target", str(into), "--verify")

    def verify(self) -> None:
        if self.name == "peersync":
            self._peersync("verify")
        else:
            self._restic("check", "--read-data")


def run_one(tool_name: str, target: str, base: Path, work: Path, rclone: str, s3, appends: int,
            chunker: Path) -> dict:
    """One tool, one target, from a fresh copy of the base tree, into a repository with the
    chunker polynomial of the (empty) repository `chunker`."""
    from peersync.testing import CountingProxy, session_log

    run = work / f"{tool_name}-{target}"
    ws = run / "ws"
    shutil.copytree(base, ws, symlinks=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(run / "cache"), "XDG_DATA_HOME": str(run / "data"),
           "RCLONE_CONFIG": "/dev/null"}
    proxy = None
    if target == "s3":
        proxy = CountingProxy(s3.port).start()
        env.update(s3.env("bench", proxy.port))
        name = f"{work.name}-{run.name}"  # a new prefix per trial: rclone serve s3 may still list a removed one
        remote = f"bench:bucket/{name}"
        stored = s3.root / "bucket" / name
    else:
        remote = str(run / "repo")
        stored = run / "repo"
    tool = Tool(tool_name, ws, remote, env, rclone, run)
    tool.init(chunker)
    out: dict = {}

    def measured(what: str, action) -> None:
        if proxy:
            proxy.reset()
        started = time.monotonic()
        action()
        out[what] = {"seconds": round(time.monotonic() - started, 3)}
        if proxy:
            out[what].update(proxy.snapshot())

    measured("first", tool.backup)
    out["first"]["stored"] = du(stored)
    before, appended, uploads = du(stored), 0, []
    if proxy:
        proxy.reset()
    started = time.monotonic()
    for n in range(appends):
        appended += session_log(ws, LOG, 100_000, seed=n + 1)
        tool.backup()
    out["appends"] = {"seconds": round(time.monotonic() - started, 3), "appended": appended,
                      "stored_growth": du(stored) - before}
    if proxy:
        out["appends"].update(proxy.snapshot())
    out["stored_total"] = du(stored)
    measured("restore", lambda: tool.restore(run / "restored"))
    measured("verify", tool.verify)
    if proxy:
        proxy.stop()
    shutil.rmtree(run, ignore_errors=True)
    if target == "s3":
        shutil.rmtree(stored, ignore_errors=True)
    return out


def bench(workdir: Path, *, files: int = 10_000, log_mb: int = 50, trials: int = 3, appends: int = 10,
          targets: tuple[str, ...] = ("local", "s3")) -> dict:
    from peersync.testing import S3Server

    rclone = str(Path(sys.executable).parent / "rclone")
    if not Path(rclone).exists():
        rclone = shutil.which("rclone") or "rclone"
    base = workdir / "base"
    make_base(base, files, log_mb)
    s3 = None
    if "s3" in targets:
        (workdir / "s3" / "bucket").mkdir(parents=True)
        s3 = S3Server(rclone, workdir / "s3", KEY, SECRET).start()
    runs: dict = {}
    try:
        for trial in range(trials):
            chunker = workdir / f"chunker-{trial}"  # this trial's polynomial, for every repository in it
            subprocess.run(["restic", "-r", str(chunker), "init"], check=True, capture_output=True,
                           env={**os.environ, "RESTIC_PASSWORD": PASSPHRASE})
            for target in targets:
                for tool in ("peersync", "restic"):  # interleaved: machine noise hits both alike
                    runs.setdefault(f"{tool}/{target}", []).append(
                        run_one(tool, target, base, workdir / f"trial-{trial}", rclone, s3, appends, chunker))
    finally:
        if s3:
            s3.stop()
    version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split()[1]
    return {"files": files, "log_mb": log_mb, "appends": appends, "trials": trials, "restic": version,
            "runs": runs}


def bench_backup(workdir: Path | str, files: int = 10_000) -> dict:
    """For scripts/bench.py: one trial on a local target, the log scaled to the workspace."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return bench(Path(tempfile.mkdtemp(dir=workdir)), files=files, log_mb=max(1, min(50, files // 200)), trials=1,
                 targets=("local",))


def median(runs: list[dict], *path: str) -> float | None:
    values = []
    for r in runs:
        for key in path:
            r = r.get(key) if isinstance(r, dict) else None
        if isinstance(r, (int, float)):
            values.append(r)
    return statistics.median(values) if values else None


ROWS = [  # label, target, path, unit
    ("first backup: wall", None, ("first", "seconds"), "s"),
    ("first backup: requests", "s3", ("first", "requests"), ""),
    ("first backup: MB stored", None, ("first", "stored"), "MB"),
    ("10 × 100 KB appends: MB uploaded", "s3", ("appends", "bytes_up"), "MB"),
    ("10 × 100 KB appends: MB stored", None, ("appends", "stored_growth"), "MB"),
    ("10 × 100 KB appends: wall", None, ("appends", "seconds"), "s"),
    ("stored after all snapshots", None, ("stored_total",), "MB"),
    ("restore latest: wall", None, ("restore", "seconds"), "s"),
    ("restore latest: requests", "s3", ("restore", "requests"), ""),
    ("verify all: wall", None, ("verify", "seconds"), "s"),
]


def table(result: dict) -> str:
    lines = [f"{result['files']:,} files + a {result['log_mb']} MB JSONL log; medians of {result['trials']}; "
             f"restic {result['restic']}",
             f"{'':44} {'peersync':>10} {'restic':>10} {'ratio':>7}"]
    targets = sorted({k.split("/")[1] for k in result["runs"]})
    for target in targets:
        lines.append(f"-- {target}")
        for label, only, path, unit in ROWS:
            if only and only != target:
                continue
            ours, theirs = (median(result["runs"].get(f"{t}/{target}", []), *path) for t in ("peersync", "restic"))
            if ours is None or theirs is None:
                continue
            scale = 1e6 if unit == "MB" else 1
            ratio = f"{ours / theirs:.2f}×" if theirs else "–"
            fmt = (lambda v: f"{v / scale:.2f} {unit}".strip()) if unit != "" else (lambda v: f"{v:.0f}")
            lines.append(f"{label:44} {fmt(ours):>10} {fmt(theirs):>10} {ratio:>7}")
        for tool in ("peersync", "restic"):  # trial by trial: each trial has its own chunker polynomial
            grew = [r["appends"]["stored_growth"] / r["appends"]["appended"]
                    for r in result["runs"].get(f"{tool}/{target}", []) if r["appends"]["appended"]]
            if grew:
                lines.append(f"{f'   stored per appended byte ({tool}, each trial)':44} "
                             + ", ".join(f"{g:.2f}×" for g in grew))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", nargs="?", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--log-mb", type=int, default=50)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--appends", type=int, default=10)
    parser.add_argument("--target", choices=("local", "s3", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    targets = ("local", "s3") if args.target == "both" else (args.target,)
    with tempfile.TemporaryDirectory(prefix="peersync-bench-backup-") as scratch:
        workdir = Path(tempfile.mkdtemp(dir=args.workdir)) if args.workdir else Path(scratch)
        result = bench(workdir, files=args.files, log_mb=args.log_mb, trials=args.trials, appends=args.appends,
                       targets=targets)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
