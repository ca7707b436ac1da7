"""A real S3 endpoint for tests and benchmarks: `rclone serve s3` on loopback, and a proxy that counts its requests.

The proxy speaks HTTP/1.1 between the client and rclone (one upstream connection per client
connection, messages forwarded as they are, bodies by Content-Length or chunked) and counts
each request, its method and the bytes in both directions: what a cloud provider would bill.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`rclone serve s3` over `root` (its top-level directories are buckets), with access keys."""

    def __init__(self, rclone: str, root: Path, key: str, secret: str, log: Path | None = None):
        self.rclone, self.root, self.key, self.secret = rclone, Path(root), key, secret
        self.log = log or self.root.parent / f"serve-s3-{self.root.name}.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "S3Server":
        self.port = free_port()
        with open(self.log, "wb") as log:
            # The keys go in the environment (RCLONE_AUTH_KEY is --auth-key): argv is public.
            self.proc = subprocess.Popen(
                [self.rclone, "serve", "s3", "--addr", f"127.0.0.1:{self.port}", str(self.root)],
                stdout=log, stderr=subprocess.STDOUT,
                env={"RCLONE_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin", "RCLONE_AUTH_KEY": f'"{self.key},{self.secret}"'})  # CSV: one pair
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"rclone serve s3 did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self, name: str, port: int | None = None) -> dict[str, str]:
        """RCLONE_CONFIG_<NAME>_* defining an rclone remote for this server (or a proxy at `port`)."""
        prefix = f"RCLONE_CONFIG_{name.upper()}_"
        return {prefix + "TYPE": "s3", prefix + "PROVIDER": "Rclone",
                prefix + "ENDPOINT": f"http://127.0.0.1:{port or self.port}",
                prefix + "ACCESS_KEY_ID": self.key, prefix + "SECRET_ACCESS_KEY": self.secret}


class CountingProxy:
    """An HTTP/1.1 pass-through in front of `upstream_port` that counts what goes through."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = 0
        self.methods: Counter = Counter()
        self.bytes_up = 0  # request bodies (uploads)
        self.bytes_down = 0  # response bodies (downloads)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None

    @property
    def requests(self) -> int:
        return sum(self.methods.values())

    def reset(self) -> None:
        with self._lock:
            self.methods.clear()
            self.bytes_up = self.bytes_down = 0

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "methods": dict(self.methods), "bytes_up": self.bytes_up,
                    "bytes_down": self.bytes_down}

    def start(self) -> "CountingProxy":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="s3-counting-proxy")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- one client connection ------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, headers = _parse_head(head)
                with self._lock:
                    self.methods[method] += 1
                if headers.get("expect", "").lower() == "100-continue":
                    # Answer the client's wait ourselves and forward without Expect (not signed).
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = b"\r\n".join(line for line in head.split(b"\r\n")
                                        if not line.lower().startswith(b"expect:"))
                up_w.write(head)
                sent = await _body(reader, up_w, headers)
                with self._lock:
                    self.bytes_up += sent
                while True:
                    rhead = await up_r.readuntil(b"\r\n\r\n")
                    status, rheaders = _parse_status(rhead)
                    writer.write(rhead)
                    if 100 <= status < 200:
                        continue
                    break
                if method == "HEAD" or status in (204, 304):
                    got = 0
                else:
                    got = await _body(up_r, writer, rheaders, until_eof=True)
                with self._lock:
                    self.bytes_down += got
                await writer.drain()
                if rheaders.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            return
        finally:
            up_w.close()
            writer.close()


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    return method, _headers(lines[1:])


def _parse_status(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split(" ")[1]), _headers(lines[1:])


def _headers(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        if ":" in line:
            name, _, value = line.partition(":")
            out[name.strip().lower()] = value.strip()
    return out


async def _body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str], *,
                until_eof: bool = False) -> int:
    """Copy one message body; returns its size."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        return total
            data = await reader.readexactly(size + 2)
            writer.write(data)
            total += size
            await writer.drain()
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        total = remaining
        while remaining:
            data = await reader.read(min(remaining, 1 << 20))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            writer.write(data)
            remaining -= len(data)
            await writer.drain()
        return total
    if until_eof:
        total = 0
        while data := await reader.read(1 << 20):
            writer.write(data)
            total += len(data)
        return total
    return 0
