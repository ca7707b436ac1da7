"""The agent: a replica's operations (replica.handler) served on stdin/stdout, one request at a time
(the next one read while this one is handled).

Started over SSH as `peersync agent --root PATH` (or forced by authorized_keys as
`peersync agent --restrict ROOT`, see restrict.py).  It imports nothing heavy so it starts fast.
"""

from __future__ import annotations

import collections
import os
import sys
import threading

from peersync.core.paths import BadPath
from peersync.replica.handler import Handler, error_text
from peersync.transport import restrict
from peersync.transport.pipes import read_stream, widen
from peersync.transport.protocol import PROTOCOL, decode, encode, read_request


def serve(handler: Handler, stdin, stdout) -> int:
    """Answer requests until EOF or `bye`.  Any malformed request ends the session.

    The next request is read (and decoded) by a thread of its own while this one is handled: the
    client pipelines large installs, whose bytes otherwise wait in SSH's flow-control window until
    we ask for them — a first sync of 100k files spent a quarter of its install time waiting so.
    Requests are still handled one at a time, in order; one frame at most is read ahead."""
    frames = _Reader(stdin)
    try:
        while True:
            kind, value = frames.next()
            if kind == "eof":
                return 0  # EOF, possibly mid-frame: the client is gone
            if kind == "bad":
                stdout.write(encode({"ok": False, "error": f"bad request: {value}", "kind": "protocol"}))
                stdout.flush()
                return 2
            op, args, rid = value
            if op == "bye":
                stdout.write(encode({"id": rid, "ok": True, "result": {}}))
                stdout.flush()
                return 0
            try:
                result = handler.call(op, args)
                if op == "hello":
                    result = {**result, "protocol": PROTOCOL}
                response = {"id": rid, "ok": True, "result": result}
            except BadPath as err:
                response = {"id": rid, "ok": False, "error": str(err), "kind": "path"}
            except Exception as err:  # reported to the client, which turns it into a clear error
                kind = "busy" if err.__class__.__name__ == "BusyError" else "error"
                # A PeersyncError's message without its hint: the client adds its own hint.
                message = error_text(err) if isinstance(err, OSError) else getattr(err, "message", None) or str(err)
                response = {"id": rid, "ok": False, "error": message, "kind": kind}
            del value, args  # (a large request's bytes: not held while the next one is read)
            stdout.write(encode(response))
            stdout.flush()
    finally:
        handler.op_unstage()
        handler.release()


class _Reader:
    """Requests from `stream`, read one ahead by a thread: `next()` gives ("request", (op, args,
    id)), then ("eof", None) or ("bad", error) as the last.  The thread reads a frame only once the
    one before it is taken up, and stops after the last (or a `bye`)."""

    def __init__(self, stream):
        self._stream = stream
        self._ready: collections.deque = collections.deque()
        self._count = threading.Semaphore(0)  # frames in _ready
        self._slot = threading.Semaphore(1)  # frames read ahead, not yet taken up
        threading.Thread(target=self._run, name="peersync-agent-reader", daemon=True).start()

    def next(self) -> tuple[str, object]:
        self._count.acquire()
        kind, value = self._ready.popleft()
        self._slot.release()
        if kind == "raise":
            raise value
        return kind, value

    def _run(self) -> None:
        while True:
            self._slot.acquire()
            try:
                item = self._frame()
            except BaseException as err:  # (stdin unreadable: raised in the serving thread)
                item = ("raise", err)
            self._ready.append(item)
            self._count.release()
            if item[0] != "request" or item[1][0] == "bye":
                return

    def _frame(self) -> tuple[str, object]:
        try:
            frame = read_request(self._stream)  # each part read only up to its limit (protocol.py)
            if frame is None:
                return "eof", None
            request = decode(*frame)
            op, args, rid = request["op"], request.get("args") or {}, request.get("id")
            if not isinstance(args, dict):
                raise ValueError("args must be an object")
            return "request", (op, args, rid)
        except (ValueError, KeyError, TypeError) as err:  # TooLarge included
            return "bad", err


def main(argv: list[str]) -> int:
    import argparse  # lazy: the agent starts on every cold sync; only a bad command line needs it

    parser = argparse.ArgumentParser(prog="peersync agent", description="peersync's remote side (speaks on stdin/stdout)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--root", help="workspace root")
    group.add_argument("--restrict", metavar="ROOT",
                       help="forced-command mode for authorized_keys: only this agent, on ROOT")
    args = parser.parse_args(argv)
    if args.restrict:
        root = os.path.realpath(os.path.expanduser(args.restrict))
        refused = restrict.route(root)  # returns only when the request is for the agent itself
        if refused is not None:
            return refused
        handler = Handler(root, restricted=True)
    else:
        handler = Handler(os.path.expanduser(args.root))
    # Megabyte requests come in while the handler works: wide pipes and a reader that takes a whole
    # pipe per read(2) (transport/pipes.py).  Nothing has read stdin yet.
    widen(sys.stdin.fileno(), sys.stdout.fileno())
    return serve(handler, read_stream(sys.stdin.fileno()), sys.stdout.buffer)

