"""Keep a peer's connection warm between syncs: one SSH connection and one remote agent, reused.

A sync first asks the peer's keeper — a small background process, one per workspace and peer —
over a private unix socket.  When there is none it connects the usual way and, once done,
starts one, which stays `sync.keep_connection` seconds (default 600; 0 turns keepers off) after
its last use.  A warm sync skips the SSH handshake, the remote login shell, the agent's start-up
and the asyncssh import: this is what OpenSSH's ControlPersist and Mutagen's daemon do.

The keeper relays protocol messages (frames, protocol.py) unchanged, one client at a time (a second one is told "busy"
and connects directly).  When a client leaves — done, failed or killed — the keeper asks the
agent to `reset` (drop staging, release the peer's lock) before it serves anyone else.  A keeper
whose connection, workspace or socket goes away exits; so does one idle for its whole time.
Safety does not depend on it: every sync still takes both locks and verifies every install.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import threading
import time
from pathlib import Path

from peersync.core.paths import valid_instance_id
from peersync.core.render import reports_text
from peersync.core.types import Mode, Policy
from peersync.errors import PeersyncError
from peersync.replica import watched
from peersync.replica.handler import Handler
from peersync.sync.pipeline import warm_local
from peersync.sync.runner import sync_peers
from peersync.transport.keeper import DEFAULT_KEEP, STREAM_LIMIT, settings, socket_path
from peersync.transport.protocol import (LARGE_LINE, MAX_BLOB, SMALL_LINE, blob_limit, decode, encode,
                                         line_limit, op_of)
from peersync.transport.replica import KEPT, Replica, agent_caps
from peersync.transport.ssh import Session, open_session, read_frame, read_line, timed_hello
from peersync.workspace.workspace import Peer, Workspace

TICK = 2.0
BUSY_WAIT = 2.0  # a client finding the keeper in use waits this long, then connects directly
MAX_AGE = 3600.0  # a keeper never outlives this: a key revoked on the peer takes effect within it
WARM_WAIT = 60.0  # seconds the warm-up waits for a sync of this workspace to end (then it goes ahead)


# -- the keeper process ---------------------------------------------------------------------------
class Keeper:
    def __init__(self, ws: Workspace, peer: Peer, root: str, idle: float, path: Path):
        self.ws, self.peer, self.root, self.idle, self.path = ws, peer, root, idle, path
        self.session = None
        self.serving = asyncio.Lock()
        self.last_used = time.monotonic()
        self.done = asyncio.Event()
        self.inode = None
        self.started = time.monotonic()
        self._hello: asyncio.Future | None = None  # _run's timed hello, for the run it starts
        self._last: tuple[dict, float, float] | None = None  # the last timed hello's (hello, offset, rtt)
        self._lent: LentSession | None = None  # the session lent to the run in progress (_lend)
        self._warming: asyncio.Future | None = None  # _warm, started once connected
        self._connected_at = self.last_used

    async def run(self) -> int:
        self.session = await open_session(self.ws, self.peer, timeout=15.0, root=self.root)
        self._connected_at = self.last_used
        # Before the socket's name exists: a SIGTERM from then on (stop, a test, a shutdown) ends
        # us through `finally`, which removes the socket.  (Installed after it, a signal in between
        # -- the server's start yields to _warm's first step -- killed us and left the name behind.)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            asyncio.get_running_loop().add_signal_handler(signum, self.done.set)
        self._warming = asyncio.ensure_future(self._warm())  # (runs on its own; best effort)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a dead keeper's socket (we hold the keeper lock)
        server = await asyncio.start_unix_server(self.client, str(self.path), limit=STREAM_LIMIT)
        os.chmod(self.path, 0o600)
        self.inode = self.path.stat().st_ino
        watchdog = asyncio.create_task(self.watch())
        try:
            await self.done.wait()
        finally:
            watchdog.cancel()
            self._warming.cancel()
            server.close()
            self._remove_socket()
            with contextlib.suppress(asyncio.TimeoutError):  # a sync still running ends first
                await asyncio.wait_for(self.serving.acquire(), 120)
            await self.session.close()
        return 0

    async def _warm(self) -> None:
        """Right after connecting, while nobody waits: both sides read what a sync reads first and
        set their watches up (Handler.warm), so that the first sync through this keeper is as fast
        as its later ones, not a full listing of both trees.  Best effort (an agent from before
        `warm` does not know it).  The peer's part holds `serving`: its selection must not change
        under a run."""
        try:
            # Not alongside a sync this workspace runs (the one that started us, say): it would wait
            # for the same CPU.  (lock.info exists while a sync holds the workspace: workspace/lock.py)
            deadline = time.monotonic() + WARM_WAIT
            while (self.ws.state / "lock.info").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            if self.serving.locked() or self.last_used != self._connected_at:
                return  # a run came first: it warmed up both sides itself
            cfg = self.ws.sync_config()
            remote_id = self.session.hello.get("instance_id")
            remote_id = remote_id if valid_instance_id(remote_id) else None
            # (The peer's copy of our ancestor has the same bytes: the digest names both.  Parsed here
            # once: warm_local finds it in ancestor_doc's cache, not read again.)
            try:
                found = await asyncio.to_thread(Handler(self.ws.root).ancestor_doc, remote_id) if remote_id else None
            except OSError:
                found = None
            digest = found[0] if found is not None else None
            threading.Thread(target=warm_local, args=(self.ws, cfg.selection, remote_id), name="peersync-warm",
                             daemon=True).start()
            async with self.serving:  # (the peer's part answers at once: it runs in its own thread there)
                await self.session.request("selection", selection=cfg.selection.to_wire())
                await self.session.request("warm", peer_id=self.ws.instance_id, digest=digest)
        except Exception:  # noqa: BLE001 - a sync that comes does it all itself, as before
            pass

    def _remove_socket(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()

    async def watch(self) -> None:
        """Exit when idle too long (or older than MAX_AGE), or when the workspace, the socket, the
        connection or the peer's entry in peers.json is gone or changed."""
        while not self.done.is_set():
            await asyncio.sleep(TICK)
            if self.serving.locked():
                continue
            try:
                gone = not self.ws.root.is_dir() or self.path.stat().st_ino != self.inode
            except OSError:
                gone = True
            now = time.monotonic()
            idle = now - self.last_used > self.idle or now - self.started > MAX_AGE
            # The peer removed or changed (also while we were starting, before `stop` could reach us).
            gone = gone or not self._entry_unchanged()
            if gone or idle or self.session.process.stdout.at_eof():
                self.done.set()

    async def client(self, reader, writer) -> None:
        try:
            first = await asyncio.wait_for(read_frame(reader, LARGE_LINE, MAX_BLOB), 30)
        except (OSError, ValueError, asyncio.TimeoutError):
            first = (b"", None)
        if not first[0].endswith(b"\n"):  # a liveness probe (spawn), or a client gone already
            writer.close()
            return
        request = _small_request(*first)
        if request is not None and request.get("op") == "stop":  # our peer was removed or changed
            self.done.set()
            with contextlib.suppress(OSError, ConnectionError):
                writer.write(encode({"id": request.get("id"), "ok": True, "result": {}}))
                await writer.drain()
            writer.close()
            return
        try:
            # The previous client may have just left (its reset is a round trip): wait a little.
            await asyncio.wait_for(self.serving.acquire(), BUSY_WAIT)
        except asyncio.TimeoutError:
            await self._refuse(first[0], writer, "the connection is in use by another sync")
            return
        try:
            if not self.done.is_set() and not self._entry_unchanged():
                self.done.set()  # the peer was removed or changed: this connection is not its any more
            if self.done.is_set():
                await self._refuse(first[0], writer, "the keeper is closing")
                return
            if request is not None and request.get("op") == "run":
                try:
                    await self._run(request, writer)
                finally:
                    writer.close()
                    self.last_used = time.monotonic()
                return
            try:
                await self._relay(first, reader, writer)
            finally:
                writer.close()
                self.last_used = time.monotonic()
                await self._reset()
        finally:
            self.serving.release()

    def _entry_unchanged(self) -> bool:
        """Whether peers.json still holds the entry this keeper's connection was made for."""
        try:
            return settings(self.ws.peer(self.peer.name)) == settings(self.peer)
        except Exception:  # removed, or peers.json unreadable: not ours to serve any more
            return False

    async def _run(self, request: dict, writer) -> None:
        """Run a whole sync here (quick.py's fast path) with our own connection, and send back
        the reports.  A failure before the sync could start answers not-ok: the client then
        runs it itself and shows the error its own way."""
        args = request.get("args") or {}
        # A timed hello (the clock offset, and whether the connection still answers) goes first and
        # the run's lock and selection right behind it, not a round trip later: the agent answers in
        # order, so the offset is timed as before, and a connection that died while idle fails the
        # hello before anything reached the peer — the client then connects anew instead of failing.
        hello = self._hello = asyncio.ensure_future(timed_hello(self.session))
        await asyncio.sleep(0)  # (its request is written before any of the run's)
        run = asyncio.ensure_future(sync_peers(
            self.ws, [self.peer.name], mode=Mode(args.get("mode", "sync")), dry_run=bool(args.get("dry_run")),
            force=bool(args.get("force")), policy=Policy(args["policy"]) if args.get("policy") else None,
            session_for=self._lend))
        try:
            self._last = await asyncio.wait_for(asyncio.shield(hello), 10)
        except Exception:
            run.cancel()
            await asyncio.gather(run, hello, return_exceptions=True)
            self.done.set()
            with contextlib.suppress(OSError, ConnectionError):
                writer.write(encode({"id": request.get("id"), "ok": False, "error": "connection lost"}))
                await writer.drain()
            return
        try:
            try:
                reports = await run
                # The text too: rendering it here spares the client the imports (~20 ms a sync).
                reply = {"id": request.get("id"), "ok": True, "reports": [r.to_json() for r in reports],
                         "exits": [r.error_exit for r in reports], "text": reports_text(reports)}
            except (PeersyncError, ValueError, KeyError, TypeError) as err:
                reply = {"id": request.get("id"), "ok": False, "error": str(err)}
            if any(r.get("error_kind") in ("connect", "protocol") for r in reply.get("reports", ())):
                self.done.set()  # our connection is broken: leave, the next sync connects anew
            with contextlib.suppress(OSError, ConnectionError):
                writer.write(encode(reply))
                await writer.drain()
        finally:
            # The peer's housekeeping, then the agent's reset (unstaged, its lock released), once the
            # client has its report: round trips the client does not wait for.  The next client
            # waits for them (`serving`).
            lent, self._lent = self._lent, None
            for request in lent.later if lent is not None else ():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(request(), 60)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.request("reset"), 60)

    async def _lend(self, peer: Peer):
        """Our session, for one sync run in this process: its hello is the one _run sent before the
        run's first request (the run settles it: LentSession.settle), and closing it only resets
        the agent."""
        timed, self._hello = self._hello, None
        timed = timed or asyncio.ensure_future(timed_hello(self.session))
        last = self._last or (self.session.hello, self.session.offset, self.session.rtt)
        self._lent = LentSession(self.session, timed, last)
        return self._lent

    async def _relay(self, frame: tuple[bytes, bytes | None], reader, writer) -> None:
        agent_in, agent_out = self.session.process.stdin, self.session.process.stdout
        while frame[0].endswith(b"\n"):  # else the client left (or was killed)
            if _is_bye(*frame):
                return  # the agent stays; the client just goes
            agent_in.write(_frame_bytes(*frame))
            op = op_of(frame[0])  # the reply's limits are its request's (protocol.py)
            try:
                reply = await read_frame(agent_out, line_limit(op, reply=True), blob_limit(op, reply=True))
            except ValueError:  # malformed or too large: the stream is lost, the client sees EOF
                reply = (b"", None)
            if not reply[0].endswith(b"\n"):  # the agent or the connection died: the client sees EOF
                self.done.set()
                return
            try:
                writer.write(_frame_bytes(*reply))
                await writer.drain()
            except (OSError, ConnectionError):
                pass  # the client left mid-request; we still read its reply, so the stream is in step
            try:
                frame = await read_frame(reader, LARGE_LINE, MAX_BLOB)
            except (OSError, ValueError):
                return

    async def _reset(self) -> None:
        if self.done.is_set():
            return
        try:
            self.session.process.stdin.write(encode({"id": "reset", "op": "reset", "args": {}}))
            reply = decode(await asyncio.wait_for(read_line(self.session.process.stdout, SMALL_LINE), 60))
            if not reply.get("ok"):
                self.done.set()
        except Exception:
            self.done.set()

    async def _refuse(self, line: bytes, writer, why: str) -> None:
        with contextlib.suppress(Exception):
            writer.write(encode({"id": decode(line).get("id"), "ok": False, "error": why, "kind": "busy"}))
            await writer.drain()
        writer.close()


class LentSession(Replica):
    """The keeper's own Session, lent to one sync run: same requests, but close() neither ends the
    agent nor waits: the keeper resets it (unstage, release its lock) once the report is sent.
    Its hello, clock offset and round trip are the last run's until settle() gives this run's."""

    @property
    def caps(self):
        return agent_caps(KEPT, self.hello)

    def __init__(self, session: Session, timed: asyncio.Future, last: tuple[dict, float, float]):
        self._session, self.peer, self._timed = session, session.peer, timed
        # (What the run reads before it settles — the agent's root, machine, capabilities — is the
        # same agent's answer: only the time moves; the lock's reply names the instance id anew.)
        self.hello, self.offset, self.rtt = last
        self.later: list = []  # requests made once the client has its report (after_report)

    async def settle(self) -> None:
        """This run's own hello, sent before its first request (so answered before it): the clock
        offset as measured now."""
        self.hello, self.offset, self.rtt = await self._timed

    def after_report(self, request) -> None:
        """Make `request()` (the peer's housekeeping) after the report is sent, before the agent's
        reset: still under the peer's lock, but a round trip the client does not wait for."""
        self.later.append(request)

    async def request(self, op: str, **args):
        return await self._session.request(op, **args)

    async def close(self) -> None:
        """Nothing yet: the keeper resets the agent after it has sent the report (Keeper._run)."""


def _frame_bytes(line: bytes, blob: bytes | None) -> bytes:
    """A message as it travels (protocol.py): forwarded exactly as received."""
    return line if blob is None else b"".join([b"+%d\n" % len(blob), line, blob])


def _small_request(line: bytes, blob: bytes | None = None) -> dict | None:
    """A short first line decoded (a relayed request can be megabytes: those are not looked at)."""
    if len(line) > 4096 or blob is not None:
        return None
    try:
        return decode(line)
    except ValueError:
        return None


def _is_bye(line: bytes, blob: bytes | None = None) -> bool:
    request = _small_request(line, blob) if b'"bye"' in line else None
    return request is not None and request.get("op") == "bye"


def main(argv: list[str]) -> int:
    """`peersync keeper --workspace W --peer NAME --root R --idle S` (started by spawn())."""
    parser = argparse.ArgumentParser(prog="peersync keeper", description="keeps one peer's connection warm")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--idle", type=float, default=DEFAULT_KEEP)
    args = parser.parse_args(argv)
    watched.LONG_LIVED = True  # this process syncs again and again: its scans are watch-fed from the first
    ws = Workspace(args.workspace)
    try:
        peer = ws.peer(args.peer)
    except Exception:
        return 2
    path = socket_path(ws, peer, args.root)
    if path is None or args.idle <= 0:
        return 0
    # One keeper per socket: whoever holds this lock owns the socket name.
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    try:
        return asyncio.run(Keeper(ws, peer, args.root, args.idle, path).run())
    except Exception:
        return 1
    finally:
        with contextlib.suppress(OSError):
            os.unlink(str(path) + ".lock")  # a keeper racing this one and losing the name exits by itself
        os.close(fd)
