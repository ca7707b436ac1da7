"""A tampered peer for tests: the real agent, but its scan also reports a hostile path.

Run as `python evil_agent.py agent --root ROOT`; the hostile path comes from $EVIL_PATH
(passed through the remote command line, since sshd does not forward the environment).
Other tampering, each chosen on the command line:
  --evil-id HEX        the instance id it claims (hex of the string) in hello and lock
  --huge OP:BYTES      its reply to OP carries BYTES of junk (a reply line that never ends soon)
"""

import sys

from peersync.core.types import Entry
from peersync.replica.handler import Handler
from peersync.transport.agent import serve


class EvilHandler(Handler):
    evil_path = "../../etc/passwd"
    evil_id = None
    huge: tuple[str, int] | None = None

    def op_scan(self, save_cache: bool = True, **kwargs) -> dict:
        result = super().op_scan(save_cache, **kwargs)
        if self.evil_path:
            result["entries"][self.evil_path] = Entry(5, 1, 0o644, "0" * 32).to_wire()
        return result

    def op_read(self, paths: list) -> dict:
        # A peer that would also hand over data for it, if ever asked.
        return {p: b"root\n" for p in paths}

    def op_hello(self, protocol=None) -> dict:
        result = super().op_hello() if protocol is None else super().op_hello(protocol)
        if self.evil_id is not None:
            result["instance_id"] = self.evil_id
        return result

    def op_lock(self, *args, **kwargs) -> dict:
        result = super().op_lock(*args, **kwargs)
        if self.evil_id is not None:
            result["instance_id"] = self.evil_id
        return result

    def call(self, op: str, args: dict):
        result = super().call(op, args)
        if self.huge is not None and op == self.huge[0] and isinstance(result, dict):
            result = {**result, "junk": "a" * self.huge[1]}
        return result


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


if __name__ == "__main__":
    args = sys.argv[1:]
    root = args[args.index("--root") + 1]
    handler = EvilHandler(root)
    # hex on the command line: a NUL byte cannot travel in an SSH exec request
    if option(args, "--evil") is not None:
        handler.evil_path = bytes.fromhex(option(args, "--evil")).decode()
    elif option(args, "--evil-id") is not None or option(args, "--huge") is not None:
        handler.evil_path = None  # only the other tampering
    if option(args, "--evil-id") is not None:
        handler.evil_id = bytes.fromhex(option(args, "--evil-id")).decode()
    if option(args, "--huge") is not None:
        op, size = option(args, "--huge").split(":")
        handler.huge = (op, int(size))
    sys.exit(serve(handler, sys.stdin.buffer, sys.stdout.buffer))
