"""A sync's progress line on a terminal, on stderr only:
"⇅ 1,234/20,000 files · 12/80 MB · 4.1 MB/s · memory/2024 312/1,000" — the last part is the folder
being written now (its first two levels) and how far it is, as Syncthing shows each folder's.

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
from typing import Iterable, Iterator, TextIO

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
        self.folders: dict[str, list[int]] = {}  # folder_of(path) -> [files done, files total], all peers
        self.current: str | None = None  # the folder last written to
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._planned = threading.Event()  # a peer's copying began: redraw now, not at the next refresh
        self._shown = 0  # width of the line on screen
        self._thread = threading.Thread(target=self._run, name="peersync-progress", daemon=True)

    # -- fed by the pipeline ------------------------------------------------------------------
    def begin(self, peer: str) -> None:
        with self._lock:
            self.peers.setdefault(peer, [0, 0, 0, 0])

    def plan(self, peer: str, files: int, size: int, paths: Iterable[str] = ()) -> None:
        """`files` copies of `size` bytes in all to `peer`; `paths`: theirs, for the folder counts."""
        with self._lock:
            self.peers[peer] = [0, files, 0, size]
            for path in paths:
                self.folders.setdefault(folder_of(path), [0, 0])[1] += 1
            self.planned.add(peer)
            if self.moved_since is None:
                self.moved_since = self.clock()
        self._planned.set()

    def advance(self, peer: str, files: int, size: int, paths: Iterable[str] = ()) -> None:
        with self._lock:
            counts = self.peers.setdefault(peer, [0, 0, 0, 0])
            counts[0] += files
            counts[2] += size
            for path in paths:
                name = folder_of(path)
                folder = self.folders.get(name)
                if folder is not None:
                    folder[0] += 1
                    self.current = name

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
            folder = self._folder()
        now = self.clock()
        if total == 0:
            who = ", ".join(waiting) or "peers"
            return f"⇅ comparing with {who}… {now - self.started:.0f} s"
        rate = moved / max(now - since, 1e-3) if since is not None else 0.0
        line = f"⇅ {done:,}/{total:,} files · {_mb(moved)}/{_mb(size)} MB · {_mb(rate)} MB/s"
        return line if folder is None else f"{line} · {folder}"

    def _folder(self) -> str | None:
        """"memory/2024 312/1,000": the folder last written to, while more than one has files to
        copy (else the totals say it all); once it is complete, one still under way; before the
        first write, the first one planned."""
        if len(self.folders) < 2:
            return None
        name = self.current if self.current is not None else next(iter(self.folders))
        if self.folders[name][0] >= self.folders[name][1]:
            name = next((f for f, (d, t) in self.folders.items() if 0 < d < t), name)
        done, total = self.folders[name]
        return f"{name} {min(done, total):,}/{total:,}"

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        while not self._stop.is_set():
            self._draw(self.line())
            self._planned.wait(REFRESH)  # a short copy phase is shown too, however brief
            self._planned.clear()

    def _draw(self, text: str) -> None:
        try:  # one line: a wrapped one would not be drawn over (0 columns: a size nobody set)
            columns = os.get_terminal_size(self.out.fileno()).columns
        except (OSError, AttributeError, ValueError):
            columns = 0
        if columns:
            text = text[:max(20, columns - 1)]
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


def folder_of(path: str) -> str:
    """The folder a file counts under: its first two levels ("memory/2024"), "." at the top."""
    parts = path.split("/", 2)
    return "/".join(parts[:-1]) if len(parts) > 1 else "."


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
