#!/usr/bin/env python3
"""Write a realistic, deterministic OpenClaw workspace for benchmarks and demos (see peersync.testing.workspace_gen)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from peersync.testing.workspace_gen import MIN_FILES, generate, mutate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path, help="where to write the workspace (created; should be empty)")
    parser.add_argument("--files", type=int, default=3000, help="number of files (default 3000; 10000 ≈ 40 MB)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same tree (default 0)")
    parser.add_argument("--size-scale", type=float, default=1.0, help="multiply file sizes (default 1.0)")
    parser.add_argument("--mutate", type=int, metavar="N", default=0,
                        help="instead of generating, make N realistic edits to an existing workspace")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.mutate:
        if not args.dir.is_dir():
            parser.error(f"{args.dir} is not a directory")
        touched = mutate(args.dir, seed=args.seed, n=args.mutate)
        result = {"touched": touched}
        human = f"✏️ {len(touched)} files touched in {args.dir}"
    else:
        if args.files < MIN_FILES:
            parser.error(f"--files must be at least {MIN_FILES}")
        if args.dir.exists() and any(args.dir.iterdir()):
            parser.error(f"{args.dir} is not empty")
        stats = generate(args.dir, files=args.files, seed=args.seed, size_scale=args.size_scale)
        result = stats.as_dict()
        human = (f"🗂️ {stats.files} files, {stats.bytes / 1e6:.1f} MB in {args.dir} "
                 f"({stats.selected_files} files, {stats.selected_bytes / 1e6:.1f} MB in the synced selection)")
    result["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result, indent=2) if args.json else f"{human} — {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
