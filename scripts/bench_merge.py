"""Time the three-way merge of a large Markdown memory file (core/textmerge.py), in memory.

    python scripts/bench_merge.py [--sections 3500] [--repeat 3]

Builds a file of SECTIONS headings with 40 bullets each (3500: about 10 MB), edits it on two
"machines" (an overlapping edit, edits far apart, appends), and reports the median time of a
merge with the base, of one without (a first sync: the union), and the peak memory of the process.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peersync.core.textmerge import Version, merge_text  # noqa: E402


def memory_file(sections: int) -> bytes:
    rng = random.Random(18)
    parts = []
    for s in range(sections):
        parts.append(f"## Section {s}\n\n")
        parts += [f"- item {s}.{i} " + "word " * rng.randint(2, 20) + "\n" for i in range(40)]
        parts.append("\nA paragraph that wraps\nover two lines.\n\n")
    return "".join(parts).encode()


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=3500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = memory_file(args.sections)
    last = f"## Section {args.sections - 1}\n".encode()
    x = Version(base.replace(b"- item 10.5 ", b"- item 10.5 on x ").replace(last, last + b"- new on x\n"), "x", 1)
    y = Version(base.replace(b"- item 10.5 ", b"- item 10.5 on y ").replace(b"- item 500.1 ", b"- item 500.1 on y ")
                + b"- tail y\n", "y", 2)
    with_base = median_seconds(lambda: merge_text(base, x, y), args.repeat)
    without = median_seconds(lambda: merge_text(None, x, y), args.repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"file {len(base) / 1e6:.1f} MB: three-way merge {with_base:.2f} s, without a base {without:.2f} s "
          f"(median of {args.repeat}); peak memory {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
