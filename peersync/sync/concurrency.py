"""Running a pair's steps side by side without leaving either side half-way."""

from __future__ import annotations

import asyncio

from peersync.errors import PeersyncError


async def gather_all(*aws):
    """asyncio.gather, except that when one fails the others still run to their end before the
    error propagates: a side is never left writing while the sessions close and the lock goes."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:  # the clearest one: a PeersyncError carries a message meant for the user
        raise next((e for e in errors if isinstance(e, PeersyncError)), errors[0])
    return results


def drop(task: asyncio.Future | None) -> None:
    """A request sent ahead (or work started) that is not wanted after all: cancelled if still
    under way, and its outcome, when it comes, dropped — never an unretrieved exception."""
    if task is not None:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
