"""Peak memory of a process and everything it starts, for tests and benchmarks: run a command
under `python -m peersync.testing.rss REPORT CMD...`; at its end the peak RSS (kB) is appended
to REPORT as one line.

A child's peak RSS counts the memory of the process it was spawned from (Linux keeps the high
mark across exec), so the measured command is started by this small launcher rather than by
pytest or a benchmark driver, whose own peak would be counted.  wait4's usage covers the child
and the descendants it waited for (an agent started through a shell).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def peak_mb(report: Path) -> float:
    """The largest peak recorded in `report` (one line per measured run), in MB; 0 if none."""
    if not report.exists():
        return 0.0
    return max((int(line) for line in report.read_text().split() if line.strip()), default=0) / 1024


def main(argv: list[str]) -> int:
    report, command = argv[0], argv[1:]
    child = subprocess.Popen(command)
    # The measured process decides when it ends; its launcher outlives it to write the report
    # (an SSH session that closes hangs up on both).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _, status, usage = os.wait4(child.pid, 0)
    with open(report, "a") as f:
        f.write(f"{usage.ru_maxrss}\n")
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
