"""The local workspace as a replica: the same operations as a remote agent, called in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peersync.replica.handler import Handler
from peersync.transport.replica import LOCAL, Replica


class LocalSession(Replica):
    """The local workspace, spoken to through the same operations as a remote agent."""

    caps = LOCAL

    def __init__(self, root: Path):
        self.handler = Handler(root)
        self.hello = self.handler.op_hello()

    async def request(self, op: str, **args):
        return await asyncio.to_thread(self.handler.call, op, args)

    async def close(self) -> None:
        self.handler.op_unstage()
        self.handler.release()

