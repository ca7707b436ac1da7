"""A raw protocol client for attack tests: speaks frames to an agent as a hostile client would."""

from __future__ import annotations

import subprocess
from pathlib import Path

from peersync.transport.protocol import blob_size, decode, encode


class AgentWire:
    """One agent process (over `ssh`, or run locally), spoken to request by request.

    Unlike peersync's own client it sends whatever it is given: operations and arguments the
    real client never would, paths that escape, retention values of its choosing."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._next = 0

    @classmethod
    def over_ssh(cls, sshd, identity: Path | str, command: str = "peersync agent --root /") -> "AgentWire":
        """An agent reached with `identity`; a restricted key's forced command replaces `command`."""
        return cls(sshd.ssh_command(command, identity=identity))

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def reply(self) -> dict | None:
        """The next reply, or None at EOF."""
        line = self.proc.stdout.readline()
        if not line.endswith(b"\n"):
            return None
        size = blob_size(line)
        if size is None:
            return decode(line)
        line = self.proc.stdout.readline()
        return decode(line, self.proc.stdout.read(size))

    def call(self, op: str, **args) -> dict | None:
        """The whole reply to one request ({"ok": …, "result" | "error": …}); None at EOF."""
        self._next += 1
        try:
            self.send_raw(encode({"id": self._next, "op": op, "args": args}))
        except (BrokenPipeError, ConnectionResetError):
            return None
        return self.reply()

    def result(self, op: str, **args):
        """The result of a request that must succeed."""
        reply = self.call(op, **args)
        if reply is None or not reply.get("ok"):
            raise AssertionError(f"{op} failed: {reply!r} {self.stderr_text()}")
        return reply.get("result")

    def stderr_text(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> int:
        for stream in (self.proc.stdin,):
            try:
                stream.close()
            except OSError:
                pass
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()

    def __enter__(self) -> "AgentWire":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.close()
