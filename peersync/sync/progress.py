"""A sync's progress line on a terminal: "⇅ 1,234/20,000 files · 12/80 MB · 4.1 MB/s", on stderr only.

Shown only when stderr is a terminal, never with --json, and only for a sync that has run for a
moment (DELAY): quick syncs, chat relays and scripts see nothing extra.  The line is drawn over
itself and erased at the end, so the report that follows reads as without it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterator, TextIO

DELAY = 1.0  # seconds a sync runs before its progress appears ($PEERSYNC_PROGRESS_DELAY)
REFRESH = 0.25


class Progress:
    """Counts from the pipeline (begin, plan, advance — called from its event loop) and a thread
    that redraws one line on `out`."""

    def __init__(self, out: TextIO, *, delay: float = DELAY, clock=time.monotonic):
        self.out, self.delay, self.clock = out, delay, clock
        self.started = clock()
        self.peers: dict[str, list[int]] = {}  # name -> [files done, files total, bytes done, bytes total]
        self.planned: set[str] = set()
        self.moved_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._planned = threading.Event()  # a peer's copying began: redraw now, not at the next refresh
        self._shown = 0  # width of the line on screen
        self._thread = threading.Thread(target=self._run, name="peersync-progress", daemon=True)

    # -- fed by the pipeline ------------------------------------------------------------------
    def begin(self, peer: str) -> None:
        with self._lock:
            self.peers.setdefault(peer, [0, 0, 0, 0])

    def plan(self, peer: str, files: int, size: int) -> None:
        with self._lock:
            self.peers[peer] = [0, files, 0, size]
            self.planned.add(peer)
            if self.moved_since is None:
                self.moved_since = self.clock()
        self._planned.set()

    def advance(self, peer: str, files: int, size: int) -> None:
        with self._lock:
            counts = self.peers.setdefault(peer, [0, 0, 0, 0])
            counts[0] += files
            counts[2] += size

    # -- drawing ------------------------------------------------------------------------------
    def line(self) -> str:
        """The text of the progress line now."""
        with self._lock:
            done = sum(min(c[0], c[1]) for c in self.peers.values())
            total = sum(c[1] for c in self.peers.values())
            moved = sum(min(c[2], c[3]) for c in self.peers.values())
            size = sum(c[3] for c in self.peers.values())
            waiting = [p for p in self.peers if p not in self.planned]
            since = self.moved_since
        now = self.clock()
        if total == 0:
            who = ", ".join(waiting) or "peers"
            return f"⇅ comparing with {who}… {now - self.started:.0f} s"
        rate = moved / max(now - since, 1e-3) if since is not None else 0.0
        return f"⇅ {done:,}/{total:,} files · {_mb(moved)}/{_mb(size)} MB · {_mb(rate)} MB/s"

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        while not self._stop.is_set():
            self._draw(self.line())
            self._planned.wait(REFRESH)  # a short copy phase is shown too, however brief
            self._planned.clear()

    def _draw(self, text: str) -> None:
        pad = max(0, self._shown - len(text))
        self.out.write("\r" + text + " " * pad)
        self.out.flush()
        self._shown = len(text)

    def start(self) -> "Progress":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._planned.set()
        self._thread.join()
        if self._shown:
            self.out.write("\r" + " " * self._shown + "\r")  # erased: the report follows on a clean line
            self.out.flush()


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


@contextlib.contextmanager
def terminal_progress(*, enabled: bool = True, out: TextIO | None = None) -> Iterator[Progress | None]:
    """A Progress drawing on stderr while the block runs — or None (no line at all) when stderr is
    not a terminal or `enabled` is false (--json)."""
    out = out or sys.stderr
    if not enabled or not out.isatty():
        yield None
        return
    try:
        delay = float(os.environ.get("PEERSYNC_PROGRESS_DELAY", DELAY))
    except ValueError:
        delay = DELAY
    progress = Progress(out, delay=delay).start()
    try:
        yield progress
    finally:
        progress.stop()
