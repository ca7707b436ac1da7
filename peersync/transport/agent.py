"""The agent: a replica's operations (replica.handler) served on stdin/stdout, one request at a time.

Started over SSH as `peersync agent --root PATH` (or forced by authorized_keys as
`peersync agent --restrict ROOT`, see restrict.py).  It imports nothing heavy so it starts fast.
"""

from __future__ import annotations

import os
import sys

from peersync.core.paths import BadPath
from peersync.replica.handler import Handler, error_text
from peersync.transport import restrict
from peersync.transport.protocol import PROTOCOL, decode, encode, read_request


def serve(handler: Handler, stdin, stdout) -> int:
    """Answer requests until EOF or `bye`.  Any malformed request ends the session."""
    try:
        while True:
            try:
                frame = read_request(stdin)  # each part read only up to its limit (protocol.py)
                if frame is None:
                    return 0  # EOF, possibly mid-frame: the client is gone
                request = decode(*frame)
                op, args, rid = request["op"], request.get("args") or {}, request.get("id")
                if not isinstance(args, dict):
                    raise ValueError("args must be an object")
            except (ValueError, KeyError, TypeError) as err:  # TooLarge included
                stdout.write(encode({"ok": False, "error": f"bad request: {err}", "kind": "protocol"}))
                stdout.flush()
                return 2
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
            stdout.write(encode(response))
            stdout.flush()
    finally:
        handler.op_unstage()
        handler.release()


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
        return serve(Handler(root, restricted=True), sys.stdin.buffer, sys.stdout.buffer)
    root = os.path.expanduser(args.root)
    return serve(Handler(root), sys.stdin.buffer, sys.stdout.buffer)

