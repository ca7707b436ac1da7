"""The watch daemon: sync after local changes (debounced) and every interval; one per workspace."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from peersync.core.paths import STATE_DIR, in_state_dir
from peersync.core.render import report_text
from peersync.daemons.heartbeat import start_due_backup
from peersync.errors import BusyError, PeersyncError
from peersync.replica import watched
from peersync.sync.runner import run_sync
from peersync.workspace import auto
from peersync.workspace.workspace import Workspace

DEFAULT_DEBOUNCE = 2.0
MAX_DELAY_FACTOR = 10  # under a steady stream of writes, sync at least every 10 debounces
SYNC_BUDGET = 900.0  # one round never runs longer (a peer that stops answering mid-sync)
BUSY_RETRY_MAX = 60.0  # after a busy round, retry within 4 s, 8 s, 16 s… (random): see busy_pause()
BACKOFF_BASE = 30.0  # a peer that failed is retried after 30 s, 60 s, … up to the interval
POLL = 0.5  # the loop wakes at least this often to notice a stop request
LOCK_FILE = "watch.lock"
NO_PEERS = ("⚠️ This workspace has no peers, so there is nothing to sync with: each machine syncs only with the "
            "peers it lists. Add one with `peersync peers add NAME HOST --path P` (README: Topology).")
# Reads (opened / closed-without-write) are left out: a sync's own scan would otherwise wake us.
EVENTS = [FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
          FileAttribEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


@contextlib.contextmanager
def watch_lock(ws: Workspace):
    """One watch daemon per workspace: an flock on state/watch.lock, separate from the sync
    lock (which the daemon takes only while it syncs).  The kernel drops it if we die."""
    ws.ensure_state()
    path = ws.state / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise BusyError(f"peersync watch is already running for this workspace"
                        f"{f' (pid {holder})' if holder.isdigit() else ''}",
                        "One daemon per workspace is enough; stop the other one first.") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class ChangeFeed(FileSystemEventHandler):
    """Turns watchdog events into "the selection changed at time t" (called from observer threads)."""

    def __init__(self, root: Path, selection, clock: Callable[[], float] = time.monotonic):
        self.root = str(root)
        self.selection = selection
        self.clock = clock
        self._lock = threading.Lock()
        self.first: float | None = None  # first change not yet synced
        self.last: float | None = None  # latest change not yet synced
        self.rescan = False  # events were lost: the next sync must not wait for more

    def relevant(self, path: str, is_dir: bool) -> bool:
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        if rel == "." or rel.startswith("../") or in_state_dir(rel):
            return False  # our own state (history, ancestors, locks) changes on every sync
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(".peersync-") and name.endswith(".tmp"):
            return False  # an atomic write in progress; its rename is the event that counts
        if is_dir:
            return (self.selection.under_root(rel) and not self.selection.excludes_dir(rel)) or \
                any(r.startswith(rel + "/") for r in self.selection.roots)
        return self.selection.contains(rel)

    def on_any_event(self, event) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(p and self.relevant(os.fsdecode(p), event.is_directory) for p in paths):
            self.mark()

    def mark(self, rescan: bool = False) -> None:
        now = self.clock()
        with self._lock:
            self.first = self.first if self.first is not None else now
            self.last = now
            self.rescan = self.rescan or rescan

    def take(self) -> tuple[float | None, float | None, bool]:
        """Return (first, last, rescan) and start a new batch: events from now on belong to the next sync."""
        with self._lock:
            out = (self.first, self.last, self.rescan)
            self.first = self.last = None
            self.rescan = False
            return out

    def peek(self) -> tuple[float | None, float | None, bool]:
        with self._lock:
            return self.first, self.last, self.rescan


class _LostEvents(logging.Handler):
    """watchdog reports a kernel queue overflow (and failed re-watches) only through logging."""

    def __init__(self, feed: ChangeFeed):
        super().__init__(logging.WARNING)
        self.feed = feed

    def emit(self, record: logging.LogRecord) -> None:
        self.feed.mark(rescan=True)


class Watcher:
    """The daemon's loop.  Syncs run in the calling (main) thread; stop() may be called from a
    signal handler and takes effect after the current sync."""

    def __init__(self, ws: Workspace, *, debounce: float = DEFAULT_DEBOUNCE, interval: float | None = None,
                 out: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.ws = ws
        self.debounce = debounce
        self.interval = interval if interval is not None else auto.load_auto(ws).interval
        self.out = out
        self.clock = clock
        self.stopping = False  # a plain flag: safe to set from a signal handler
        self.syncs = 0
        self.feed = ChangeFeed(ws.root, ws.sync_config().selection, clock)
        self.observer = Observer()
        self.watches: dict[tuple[str, bool], object] = {}  # (directory, recursive) -> watchdog watch
        self.backoff: dict[str, dict] = {}  # peer -> {"failures", "retry_at"} (monotonic clock)
        self.busy_streak = 0

    def stop(self, *_args) -> None:
        self.stopping = True

    # -- watches ----------------------------------------------------------------------------
    def ensure_watches(self) -> None:
        """Watch what the selection covers, and repair watches whose directory was deleted and
        created again.  Called before every sync, so roots that appear later get watched too."""
        alive = {id(e.watch) for e in self.observer.emitters if e.is_alive()} if self.observer.is_alive() else None
        wanted = self.wanted()
        for key, watch in list(self.watches.items()):
            if key not in wanted.items() or (alive is not None and id(watch) not in alive):
                with contextlib.suppress(KeyError, OSError):
                    self.observer.unschedule(watch)
                del self.watches[key]
                if key in wanted.items():
                    self.feed.mark(rescan=True)  # its events since it died are lost
        for path, recursive in wanted.items():
            if (path, recursive) not in self.watches:
                try:
                    self.watches[(path, recursive)] = self.observer.schedule(
                        self.feed, path, recursive=recursive, event_filter=EVENTS)
                except OSError as err:  # e.g. the inotify watch limit: periodic syncs still run
                    self.say(f"⚠️ cannot watch {path}: {err.strerror or err}; relying on the periodic sync")

    def wanted(self) -> dict[str, bool]:
        """{directory: recursive?}.  The root itself is watched alone (top-level files such as
        MEMORY.md, and roots created later); root directories recursively — except that the
        state dir, which churns on every sync, is carved out: its ancestors are watched alone
        and their other subdirectories recursively."""
        wanted = {str(self.ws.root): False}

        def add(rel: str) -> None:
            full = self.ws.root / rel
            if not (STATE_DIR + "/").startswith(rel + "/"):
                wanted[str(full)] = True
                return
            wanted.setdefault(str(full), False)
            with contextlib.suppress(OSError), os.scandir(full) as entries:
                for entry in entries:
                    child = f"{rel}/{entry.name}"
                    if entry.is_dir(follow_symlinks=False) and not in_state_dir(child):
                        add(child)

        for root in self.feed.selection.roots:
            full = self.ws.root / root
            if full.is_dir() and not full.is_symlink():
                add(root)
            elif "/" in root and full.parent.is_dir():
                wanted.setdefault(str(full.parent), False)
        return wanted

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> int:
        lost = _LostEvents(self.feed)
        logging.getLogger("watchdog").addHandler(lost)
        self.ensure_watches()
        self.observer.start()
        peers = len(self.ws.load_peers())
        self.say(f"👀 Watching {self.ws.root} ({peers} peer{'s' if peers != 1 else ''}): sync {self.debounce:g} s "
                 f"after a change, and every {self.interval:g} s")
        if not peers:
            self.say(NO_PEERS)
        next_full = self.clock()  # catch up at once on what changed while no daemon ran
        try:
            while not self.stopping:
                now = self.clock()
                first, last, rescan = self.feed.peek()
                settled = last is not None and (now - last >= self.debounce
                                                or now - first >= self.debounce * MAX_DELAY_FACTOR)
                if settled or rescan or now >= next_full:
                    next_full = self.clock() + self.round()
                    continue
                wake = next_full
                if last is not None:
                    wake = min(wake, last + self.debounce, first + self.debounce * MAX_DELAY_FACTOR)
                time.sleep(min(max(wake - now, 0.01), POLL))
        finally:
            logging.getLogger("watchdog").removeHandler(lost)
            self.observer.stop()
            self.observer.join(timeout=10)
        self.say(f"👋 Stopped watching {self.ws.root} after {self.syncs} sync{'s' if self.syncs != 1 else ''}")
        return 0

    def round(self) -> float:
        """One sync with every peer that is not backing off.  Returns the seconds until the next
        full round: the interval, or sooner when a peer's backoff ends or the workspace was busy."""

        self.ensure_watches()
        self.feed.take()  # events from here on (our own writes included) start the next batch
        try:
            for line in start_due_backup(self.ws):  # backup.interval: in the background, never waited for
                self.say(line)
        except PeersyncError as err:
            self.say(f"❌ {str(err).splitlines()[0]}")
        try:
            self.feed.selection = self.ws.sync_config().selection  # config.yaml may have changed
            peers = sorted(self.ws.load_peers())
        except PeersyncError as err:
            self.say(f"❌ {str(err).splitlines()[0]}")
            return self.interval
        self.backoff = {p: b for p, b in self.backoff.items() if p in peers}  # removed peers go
        ready = [p for p in peers if self.backoff.get(p, {}).get("retry_at", 0) <= self.clock()]
        if not ready:
            return self._until_retry()
        try:
            reports = run_sync(self.ws, ready, lock_timeout=0, time_budget=SYNC_BUDGET)
        except BusyError:
            return self.busy_pause()  # someone else is syncing this workspace
        except PeersyncError as err:
            self.say(f"❌ {str(err).splitlines()[0]}")
            return self.interval
        self.syncs += 1
        from peersync.dashboard import (
            refresh_after_sync,  # lazy: off by default, and the page's code is large
        )

        failed = refresh_after_sync(self.ws)  # only when dashboard.refresh is on
        if failed:
            self.say(failed)
        busy = False
        for report in reports:
            if report.ok:
                self.backoff.pop(report.peer, None)
                if report.changed or report.problems:
                    self.say(report_text(report))
            elif auto.peer_busy(report):
                busy = True  # the peer is syncing with someone else: it is not down
            else:
                failures = self.backoff.get(report.peer, {}).get("failures", 0) + 1
                wait = auto.backoff_seconds(failures, BACKOFF_BASE, self.interval)
                self.backoff[report.peer] = {"failures": failures, "retry_at": self.clock() + wait}
                if failures == 1:
                    self.say(f"{report_text(report)}\n(retrying in {wait:.0f} s, then less often while it stays down)")
        if busy:
            return self.busy_pause()
        self.busy_streak = 0
        return self._until_retry()

    def busy_pause(self) -> float:
        """Seconds to wait after a busy round: random, and growing while it stays busy.

        Two daemons that start syncing with each other at the same moment each hold their own
        lock while waiting for the other's, and both give up together; pausing at random (not
        after the debounce) keeps them from colliding again in lockstep."""
        self.busy_streak += 1
        return random.uniform(0.5, min(BUSY_RETRY_MAX, 2.0 ** (self.busy_streak + 1)))

    def _until_retry(self) -> float:
        now = self.clock()
        return min([self.interval, *(b["retry_at"] - now for b in self.backoff.values() if b["retry_at"] > now)])

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.out("\n".join(f"{stamp} {line}" for line in text.splitlines()))


def run_watch(ws: Workspace, *, debounce: float = DEFAULT_DEBOUNCE, interval: float | None = None,
              out: Callable[[str], None] = print) -> int:
    """The `watch` command: hold the watch lock, stop cleanly on SIGINT/SIGTERM."""
    with watch_lock(ws):
        watched.LONG_LIVED = True  # this process scans the workspace again and again
        watcher = Watcher(ws, debounce=debounce, interval=interval, out=out)

        def on_signal(signum, _frame):
            watcher.stop()
            # A second signal ends the process at once (the sync in progress is safe to cut:
            # every file is installed atomically and the ancestor is saved last).
            signal.signal(signum, signal.SIG_DFL)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return watcher.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
