#!/usr/bin/env python3
"""Benchmark peersync against rsync -a and Unison over a loopback sshd; print a markdown table and write JSON.

Needs: OpenSSH server and client, rsync, unison 2.52 (Debian `unison`), GNU time (`time`, for peak
memory; skipped without it).  Not run in CI.  Example:

    python scripts/bench.py --sizes 10000 --reps 3 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lib import (  # noqa: E402
    TOOLS,
    Bench,
    BenchError,
    environment,
    loadavg,
    markdown,
    run_backup_bench,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated file counts (default 10000)")
    parser.add_argument("--files", type=int, default=None, help="one size (same as --sizes N)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per size (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where workspaces go (default: a temp dir, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, generated trees)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    parser.add_argument("--big-mb", type=float, default=50, help="size of the big file (default 50)")
    parser.add_argument("--append-mb", type=float, default=1, help="appended to the big file (default 1)")
    parser.add_argument("--changes", type=int, default=130, help="edits per side (default 130)")
    parser.add_argument("--no-verify", action="store_true", help="skip the convergence check after sync")
    parser.add_argument("--no-backup", action="store_true", help="skip scripts/bench_backup.py")
    args = parser.parse_args(argv)

    sizes = [int(s) for s in (args.sizes or str(args.files or 10000)).split(",") if s.strip()]
    tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    if not set(tools) <= set(TOOLS) or "peersync" not in tools:
        parser.error(f"--tools: peersync plus any of {', '.join(TOOLS[1:])}")
    for tool in set(tools) & {"rsync", "unison"}:
        if not shutil.which(tool):
            parser.error(f"{tool} is not installed")

    # As installed: peersync's bytecode compiled (pip does that; an editable install does not).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "peersync")],
                   stdout=subprocess.DEVNULL, check=False)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="peersync-bench-"))
    doc = {"env": environment(), "reps": args.reps, "load_start": loadavg(), "sizes": [], "tools": list(tools),
           "params": {"changes": args.changes, "big_mb": args.big_mb, "append_mb": args.append_mb}}
    started = time.monotonic()
    try:
        with Bench(workdir, tools=tools, echo=lambda m: print(m, file=sys.stderr, flush=True)) as bench:
            for files in sizes:
                print(f"⏱️ {files} files, {args.reps} repetitions, work dir {workdir}", file=sys.stderr, flush=True)
                result = bench.run_size(files, args.reps, verify=not args.no_verify,
                                        big_size=int(args.big_mb * (1 << 20)),
                                        big_append=int(args.append_mb * (1 << 20)), changes=args.changes)
                doc["sizes"].append(result.to_json())
            if not args.no_backup:
                doc["backup"] = run_backup_bench(workdir / "backup", sizes[0])
    except BenchError as err:
        print(f"❌ {err}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["load_end"] = loadavg()
    doc["seconds"] = round(time.monotonic() - started, 1)
    table = markdown(doc)
    print(table)
    print(f"Load average at start {doc['load_start']}, at end {doc['load_end']}; total {doc['seconds']} s.")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
