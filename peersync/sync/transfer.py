"""Transfer: getting files' new content from one replica to the other and installing it there.

Small files travel inline over the agent channel, in batches (the next batch is read while the
target installs this one); an appended large file as its new bytes only; other large files with
rsync (whose delta transfer pays off there) where rsync reaches the replica, else over the agent
channel in ranges (sync/chunks.py: a restricted key's peer, a machine without rsync); a cloud
folder's files through rclone.  Whatever the route, the target verifies every file by hash before
it appears.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
from pathlib import Path

from peersync.core.commit import peer_text
from peersync.core.paths import internal_rel
from peersync.core.types import DIR, KIND_BITS, Entry, Side
from peersync.sync import chunks
from peersync.sync.concurrency import gather_all
from peersync.transport.rsync import rsync_files

# Files up to INLINE_MAX_FILE travel inline over the agent channel, INLINE_BATCH_BYTES per request:
# no second SSH connection, and faster than rsync for many small files.  Larger files go through
# rsync, whose delta transfer pays off there.
INLINE_MAX_FILE = 256 << 10
INLINE_BATCH_BYTES = 8 << 20
INLINE_FIRST_BATCH = 512 << 10  # batches grow from this: the target starts writing at once


class Transfers:
    """The transfer half of a Run (sync/execute.py): `session(side)`, `_read` and `_install` come from it."""

    async def transfer(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        """Get `items` from source to target and install them there; results in `items` order.

        Small files travel inline over the agent channel, in batches (reading the next batch
        while the target installs this one); appended large files as their new bytes; other
        large files through rsync, whose delta transfer pays off there.  All at once.
        """
        if self.remote_session.caps.transfer == "rclone":
            return await self._transfer_rclone(target, items)
        small = [i for i in items if i["new"][0] <= INLINE_MAX_FILE]
        big = [i for i in items if i["new"][0] > INLINE_MAX_FILE]
        grown, big = await self._tails(source, big)
        # rsync only where both ends have it for us (never with a restricted key): else ranges.
        rsync = self.remote_session.caps.rsync and shutil.which("rsync") is not None
        # rsync stages a file under its own path in the staging dir: a path too long for that
        # (core.paths.internal_rel) travels by ranges, staged under a short upload name.
        ranged = [i for i in big if not rsync or internal_rel(i["path"]) != i["path"]]
        big = [i for i in big if rsync and internal_rel(i["path"]) == i["path"]]
        outcome = await gather_all(self._copy_inline(source, target, small), self._copy_rsync(source, target, big),
                                   self._copy_ranges(source, target, ranged), self._install_batches(target, grown))
        results = dict(zip((id(i) for i in small + big + ranged + grown),
                           outcome[0] + outcome[1] + outcome[2] + outcome[3]))
        return [results[id(i)] for i in items]

    async def _transfer_rclone(self, target: Side, items: list[dict]) -> list[dict]:
        """A replica that moves bytes itself (a cloud folder through rclone): it uploads from our
        workspace when it installs, and downloads into our staging (checking each hash) for us."""
        if target is Side.LOCAL:
            stage = Path((await self.local_session.request("stage"))["dir"])
            await self.remote_session.download([i["path"] for i in items], stage,
                                               {i["path"]: Entry.from_wire(i["new"]).hash for i in items})
        return await self._install(target, items)

    async def _tails(self, source: Side, items: list[dict]) -> tuple[list[dict], list[dict]]:
        """Split large files into (grown, rest): a file the target holds a prefix of (a log that
        was appended to) travels as its new bytes only; the target rebuilds it and checks it."""
        asked = [i for i in items if i["expect"] is not None and i["expect"][0] < i["new"][0]
                 and i["new"][0] - i["expect"][0] <= INLINE_BATCH_BYTES]
        grown = []
        for batch in _batches(asked, INLINE_BATCH_BYTES, size=_growth):  # replies of bounded size
            raw = await self.session(source).request("read_tail", items=[
                {"path": i["path"], "offset": i["expect"][0], "prefix": i["expect"][3]} for i in batch])
            for item in batch:
                data = raw.get(item["path"]) if isinstance(raw, dict) else None
                if isinstance(data, bytes) and len(data) == _growth(item):
                    item["tail"] = {"size": item["expect"][0], "prefix": item["expect"][3], "data": data}
                    grown.append(item)
        return grown, [i for i in items if "tail" not in i]

    async def _install_batches(self, side: Side, items: list[dict]) -> list[dict]:
        """Install items carrying bytes (appended tails) in requests of bounded size."""
        results = []
        for batch in _batches(items, INLINE_BATCH_BYTES, size=_growth):
            results += await self._install(side, batch)
        return results

    async def _copy_inline(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        """Read a batch from the source while the target installs earlier ones: requests are
        pipelined, so the target's agent always has the next batch waiting (two at most)."""
        results: list[dict] = []
        installing: collections.deque = collections.deque()
        try:
            for batch in _batches(items, INLINE_BATCH_BYTES, min(INLINE_FIRST_BATCH, INLINE_BATCH_BYTES)):
                # An empty folder's content is known (nothing): it is not read, so one that went
                # meanwhile is only a failed install, never a failed run.
                ahead = await self._first_bytes(source)  # read ahead (Run._read_ahead) as prefetch() started
                wanted = [i["path"] for i in batch if i["new"][2] & KIND_BITS != DIR]
                data = await self._read(source, [p for p in wanted if p not in ahead],
                                        keep=[i["path"] for i in batch if i.get("base") is True and i["path"] not in ahead])
                data.update((p, ahead.pop(p)) for p in wanted if p in ahead)
                for item in batch:
                    item["data"] = data.get(item["path"], b"")
                installing.append(asyncio.ensure_future(self._install_inline(target, batch)))
                if len(installing) >= 2:
                    results += await installing.popleft()
            while installing:
                results += await installing.popleft()
        finally:
            # On failure a batch may still be in flight: let it end (and its error be collected)
            # before the error goes up — a side is never left writing while the run winds up.
            if installing:
                await asyncio.gather(*installing, return_exceptions=True)
        return results

    async def _install_inline(self, side: Side, batch: list[dict]) -> list[dict]:
        try:
            return await self._install(side, batch)
        finally:
            for item in batch:  # the bytes are written: do not hold a whole transfer in memory
                item.pop("data", None)

    async def _copy_rsync(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        if not items:
            return []
        local_stage = (await self.local_session.request("stage"))["dir"]
        remote_stage = (await self.remote_session.request("stage"))["dir"]
        push = target is Side.REMOTE
        await rsync_files(self.peer, [i["path"] for i in items], push=push,
                          local_dir=str(self.ws.root) if push else local_stage,
                          remote_dir=remote_stage if push else self.remote_session.hello["root"],
                          basis_dir=self.remote_session.hello["root"] if push else str(self.ws.root))
        return await self._install(target, items)

    async def _copy_ranges(self, source: Side, target: Side, items: list[dict]) -> list[dict]:
        """Large files over the agent channel (sync/chunks.py): staged range by range on the target,
        then installed there — verified by hash — in one request."""
        if not items:
            return []
        failed = await chunks.stage_all(self.session(source), self.session(target), items)
        staged = [i for n, i in enumerate(items) if n not in failed]
        done = dict(zip((id(i) for i in staged), await self._install(target, staged)))
        results = []
        for n, item in enumerate(items):
            if n in failed:
                self.problem(item["path"], peer_text(failed[n]), target)
                results.append({"path": item["path"], "ok": False, "error": failed[n]})
            else:
                results.append(done[id(item)])
        return results


def _batches(items: list[dict], limit: int, first: int | None = None, *, size=lambda item: item["new"][0]):
    """Consecutive runs of `items` of at most `limit` bytes (a bigger file makes a batch alone).
    `first`: the first batch's limit, doubling for each next one up to `limit` — the pipeline
    fills fast (the target writes while the next batch is read), then runs in large batches.
    `size`: an item's bytes in the batch (by default its whole file)."""
    batch, total, cap = [], 0, first or limit
    for item in items:
        if batch and total + size(item) > cap:
            yield batch
            batch, total, cap = [], 0, min(cap * 2, limit)
        batch.append(item)
        total += size(item)
    if batch:
        yield batch


def _growth(item: dict) -> int:
    """The appended bytes of a grown file (its new size minus the size the target holds)."""
    return item["new"][0] - item["expect"][0]
