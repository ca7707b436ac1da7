"""A tampered peer for tests: the real agent, but its scan also reports a hostile path.

Run as `python evil_agent.py agent --root ROOT`; the hostile path comes from $EVIL_PATH
(passed through the remote command line, since sshd does not forward the environment).
"""

import sys

from peersync.core.types import Entry
from peersync.replica.handler import Handler
from peersync.transport.agent import serve


class EvilHandler(Handler):
    evil_path = "../../etc/passwd"

    def op_scan(self, save_cache: bool = True, **kwargs) -> dict:
        result = super().op_scan(save_cache, **kwargs)
        result["entries"][self.evil_path] = Entry(5, 1, 0o644, "0" * 32).to_wire()
        return result

    def op_read(self, paths: list) -> dict:
        # A peer that would also hand over data for it, if ever asked.
        return {p: b"root\n" for p in paths}


if __name__ == "__main__":
    args = sys.argv[1:]
    # hex on the command line: a NUL byte cannot travel in an SSH exec request
    evil = bytes.fromhex(args[args.index("--evil") + 1]).decode() if "--evil" in args else EvilHandler.evil_path
    root = args[args.index("--root") + 1]
    handler = EvilHandler(root)
    handler.evil_path = evil
    sys.exit(serve(handler, sys.stdin.buffer, sys.stdout.buffer))
