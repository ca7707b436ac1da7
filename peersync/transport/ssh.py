"""Sessions with a peer's agent: over the system OpenSSH client (`ssh`, a subprocess: no Python SSH
stack to import, which is most of a new connection's start-up), over asyncssh where there is no
`ssh`, or through the peer's keeper."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import socket
import sys
import time

from peersync import install
from peersync.errors import BusyError, ConnectError, ProtocolError
from peersync.transport import openssh, pipes, sshconfig, sshfiles
from peersync.transport.children import die_with_parent
from peersync.transport.keeper import STREAM_LIMIT, socket_path
from peersync.transport.openssh import CLIENT_ENV, NOT_FOUND, agent_command, use_openssh
from peersync.transport.protocol import (LARGE_LINE, MAX_BLOB, PROTOCOL, SMALL_LINE, TooLarge, blob_limit, blob_size,
                                         decode, encode, line_limit)
from peersync.transport.replica import AGENT, KEPT, Capabilities, Replica, agent_caps
from peersync.workspace.workspace import Peer, Workspace


async def read_line(stream, limit: int = LARGE_LINE) -> bytes:
    """One whole line, read only up to `limit` bytes (TooLarge beyond: a peer that never ends a
    line costs bounded memory).  asyncssh's readline() hands back a partial line once its receive
    window (2 MiB) is full, so a large manifest arrives in pieces that must be joined; an asyncio
    stream (a keeper's socket) gives the pieces its own buffer limit allows."""
    parts, size = [], 0
    while True:
        if isinstance(stream, asyncio.StreamReader):
            try:
                chunk = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as err:
                chunk = err.partial  # EOF
            except asyncio.LimitOverrunError as err:
                chunk = await stream.readexactly(err.consumed)  # what is buffered, no newline yet
        else:
            chunk = await stream.readline()
        parts.append(chunk)
        size += len(chunk)
        if size > limit + 1:
            raise TooLarge(f"line too large (over {limit} bytes)")
        if not chunk or chunk.endswith(b"\n"):
            return b"".join(parts)


async def read_frame(stream, limit: int = LARGE_LINE, blob_max: int = MAX_BLOB) -> tuple[bytes, bytes | None]:
    """One message as (JSON line, raw bytes or None) from `stream` (protocol.py), its line read
    only up to `limit` bytes and its raw bytes only when there are at most `blob_max`.  A line
    without its newline means EOF came first; ValueError for a malformed header, TooLarge
    beyond a limit."""
    line = await read_line(stream, max(limit, SMALL_LINE))
    size = blob_size(line) if line.endswith(b"\n") else None
    if size is None:
        if len(line) > limit + 1:
            raise TooLarge(f"line too large (over {limit} bytes)")
        return line, None
    if size > blob_max:
        raise TooLarge(f"too large ({size} bytes of data)")
    line = await read_line(stream, limit)
    try:
        blob = await stream.readexactly(size)
    except asyncio.IncompleteReadError:
        return b"", None  # cut mid-frame: the same as EOF
    return (line, blob) if line.endswith(b"\n") else (b"", None)


class Session(Replica):
    """A running `peersync agent` on a peer, over one SSH connection (or through its keeper)."""

    base_caps = AGENT

    @property
    def caps(self) -> Capabilities:
        return agent_caps(self.base_caps, self.hello)

    def __init__(self, peer: Peer, conn, process, hello: dict, offset: float, rtt: float):
        self.peer = peer
        self.conn = conn
        self.process = process
        self.hello = hello
        self.offset = offset  # remote clock minus local clock, seconds
        self.rtt = rtt
        self._next = 0
        # Requests are pipelined: each is sent at once and its reply awaited in order (the agent
        # answers one request at a time, in order), so the agent already has the next batch of
        # an install while it works on this one.
        self._waiting: collections.deque = collections.deque()
        self._reader: asyncio.Task | None = None
        self._lost: BaseException | None = None
        self._timed: asyncio.Future | None = None  # a hello timed for the offset, not yet settled
        self._later: list = []  # requests made as the session closes (after_report)

    def _send(self, data: bytes) -> None:
        self.process.stdin.write(data)

    async def _drain(self) -> None:
        await self.process.stdin.drain()

    async def _receive(self, op: str) -> tuple[bytes, bytes | None]:
        """The next reply, which answers `op`: its limits are that operation's (protocol.py)."""
        return await read_frame(self.process.stdout, line_limit(op, reply=True), blob_limit(op, reply=True))

    def _lost_errors(self) -> tuple:
        return _lost()  # asyncssh's errors count only where it is loaded

    def _connection_lost(self, op: str, err=None) -> ConnectError:
        return ConnectError(f"connection to {self.peer.name} lost during '{op}'" + (f": {err}" if err else ""),
                            "Nothing was lost; run the sync again when the peer is reachable.")

    async def request(self, op: str, **args):
        if self._lost is not None:
            raise self._connection_lost(op)
        # The requests before this one go out first: encoding a large one holds this loop, which
        # meanwhile could not write what is left of theirs (after a first sync of 100k files the
        # peer got its first save 1 s late, while its second was encoded).  No await between
        # taking a place in line and sending: the agent answers in the order it reads.
        try:
            await self._drain()
        except self._lost_errors() as err:
            self._fail_all(err)
            raise self._connection_lost(op, err) from None
        if self._lost is not None:
            raise self._connection_lost(op)
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((self._next, op, future))
        try:
            self._send(encode({"id": self._next, "op": op, "args": args}))
            if self._reader is None or self._reader.done():
                self._reader = asyncio.ensure_future(self._read_replies())
            await self._drain()
        except self._lost_errors() as err:
            self._fail_all(err)
        except asyncio.CancelledError:
            future.cancel()  # its reply, when it comes, is dropped; nothing is left unretrieved
            raise
        reply = await future
        if not reply.get("ok"):
            kind, message = reply.get("kind"), reply.get("error", "unknown error")
            if kind == "busy":
                raise BusyError(f"{self.peer.name} is busy: {message}", "Try again in a moment.")
            if kind == "path":
                raise ProtocolError(f"{self.peer.name} refused a path: {message}")
            raise ProtocolError(f"{self.peer.name} failed '{op}': {message}")
        return reply.get("result")

    async def _read_replies(self) -> None:
        """Hand each reply line to the oldest waiting request; any trouble fails them all."""
        while self._waiting:
            rid, op, future = self._waiting[0]
            try:
                line, blob = await self._receive(op)
            except self._lost_errors() as err:
                self._fail_all(err)
                return
            except TooLarge as err:
                self._waiting.popleft()
                self._fail_all(None, ProtocolError(f"{self.peer.name} sent a reply to '{op}' that is {err}; "
                                                   "refusing it", "Check the peer's peersync installation."), future)
                return
            except ValueError as err:  # a malformed frame header
                self._waiting.popleft()
                self._fail_all(None, ProtocolError(f"{self.peer.name} sent a malformed reply: {err}"), future)
                return
            if not line.endswith(b"\n"):  # EOF, possibly mid-reply: the connection was cut
                self._fail_all(None)
                return
            self._waiting.popleft()
            try:
                reply = decode(line, blob)
            except ValueError as err:
                self._fail_all(None, ProtocolError(f"{self.peer.name} sent a malformed reply: {err}"), future)
                return
            if reply.get("id") != rid:
                self._fail_all(None, ProtocolError(f"{self.peer.name} answered out of order"), future)
                return
            if not future.done():  # a request whose caller gave up (cancelled): reply dropped
                future.set_result(reply)

    def _fail_all(self, err, first: BaseException | None = None, future=None) -> None:
        """The stream is unusable: every waiting request fails (the first with `first`)."""
        self._lost = self._lost or err or first or True
        if future is not None and not future.done():
            future.set_exception(first)
        while self._waiting:
            _, op, waiting = self._waiting.popleft()
            if not waiting.done():
                waiting.set_exception(self._connection_lost(op, err))

    @property
    def settled(self) -> bool:
        """Whether `offset` and `rtt` are measured (else settle() gives them)."""
        return self._timed is None

    async def settle(self) -> None:
        """The clock offset and round trip from the hello timed right after the agent's first one
        (open_session with settled=False): sent ahead of the run's first requests, so it is
        answered before them, and the run does not wait a round trip for it alone."""
        if self._timed is not None:
            _, self.offset, self.rtt = await self._timed
            self._timed = None

    def after_report(self, request) -> None:
        """Make `request()` (the peer's housekeeping) as the session closes, sent right before the
        bye: still under the peer's lock, answered in the bye's round trip instead of one of its own
        (a keeper's lent session makes it after the report is sent).  Its failure is not the run's."""
        self._later.append(request)

    def _send_later(self) -> list[asyncio.Future]:
        later, self._later = self._later, []
        return [asyncio.ensure_future(request()) for request in later]  # (sent in this order)

    async def close(self) -> None:
        if self._timed is not None:  # never settled (the run stopped first): nothing left unretrieved
            self._timed.cancel()
            self._timed.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            if not self.process.stdin.is_closing():
                later = self._send_later()
                bye = asyncio.ensure_future(self.request("bye"))
                await _answered(later)
                await asyncio.wait_for(bye, 5)
        except Exception:
            pass  # closing anyway; the agent releases its lock on EOF
        self.conn.close()
        try:
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        except (asyncio.TimeoutError, OSError):
            pass


def protocol_mismatch(peer: Peer, hello: dict) -> ProtocolError:
    """The one-line refusal when the two machines run peersync versions that cannot sync together."""
    theirs = hello.get("protocol")
    older = isinstance(theirs, int) and theirs < PROTOCOL
    where = f"on {peer.name}" if older else "on this machine"
    return ProtocolError(f"{peer.name} runs peersync {hello.get('version', '?')} (protocol {theirs if theirs is not None else '?'}), "
                         f"this machine protocol {PROTOCOL}: upgrade peersync {where}",
                         "Nothing was changed. Install the same peersync version on every machine, then sync again.")


def destination(peer: Peer) -> sshconfig.Destination:
    """Where `peer` is, as `ssh` would reach it (transport/sshconfig.py); ConnectError for a
    config file ssh cannot read."""
    try:
        return sshconfig.resolve(peer.host, user=peer.user, port=peer.port, identity=expand(peer.identity),
                                 known_hosts=expand(peer.known_hosts))
    except ValueError as err:
        raise ConnectError(f"cannot work out how to reach {peer.name}: {err}",
                           f"Fix {sshfiles.shown_config()} (`ssh -G {peer.host}` shows what ssh reads).") from None


def expand(path: str | None) -> str | None:
    return sshfiles.expand_home(path) if path else None


def _connect_options(peer: Peer, dest: sshconfig.Destination, timeout: float) -> dict:
    """asyncssh's options: exactly the destination `ssh -G` resolved, so asyncssh reads no config
    file of its own (it would read $HOME's, where ssh reads the passwd entry's home)."""
    import asyncssh  # deferred: only the client side pays for it

    options = dict(
        host=dest.host,
        port=dest.port,
        username=dest.user,
        config=[],
        host_key_alias=dest.host_key_alias,
        connect_timeout=timeout,
        keepalive_interval=15,
        keepalive_count_max=3,
        # Public-key auth only; never a password prompt (this runs in heartbeats and daemons).
        password=None,
        kbdint_auth=False,
        gss_auth=False,
        preferred_auth="publickey",
        # AES-GCM first: one OpenSSL call per packet (and AES instructions on most CPUs), where
        # asyncssh's chacha20-poly1305 builds cipher contexts per packet in Python — a third of
        # the client's CPU when an initial sync streams tens of MB.  Either is strong.
        encryption_algs=["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                         "aes256-ctr", "aes192-ctr", "aes128-ctr"],
    )
    proxy = sshconfig.proxy_argv(dest)
    if proxy:
        options["proxy_command"] = proxy
    if peer.identity:
        options["client_keys"] = [expand(peer.identity)]
        options["agent_path"] = None
    else:
        keys = []
        for path in dest.identities:
            try:
                keys += asyncssh.load_keypairs([path])
            except (OSError, asyncssh.KeyImportError, ValueError):
                continue  # missing, or protected by a passphrase: ssh-agent may hold it, as for ssh
        options["client_keys"] = keys
        if dest.identities_only and keys:
            options["agent_path"] = None
    known = [path for path in dest.known_hosts if os.path.isfile(path)]
    # No known_hosts file: trust nothing (an explicit empty list), never "skip the check".
    options["known_hosts"] = known or asyncssh.import_known_hosts("")
    return {k: v for k, v in options.items() if v is not None or k in ("password", "agent_path")}


def path_hint(peer: Peer, root: str) -> str:
    """What to check when the agent cannot use the workspace path it was given — often a `~`
    that this machine's shell expanded to its own home before peersync saw it."""
    home = os.path.expanduser("~")
    if root == home or root.startswith(home + "/"):
        return (f"{root} is under THIS machine's home directory (did your shell expand ~?). For the peer's "
                f"own home quote the tilde: peersync peers set {peer.name} --path '~{root[len(home):]}'")
    return f"Check the workspace path on {peer.name}: peersync peers set {peer.name} --path PATH"


async def open_session(ws: Workspace, peer: Peer, *, timeout: float = 15.0, root: str | None = None,
                       settled: bool = True) -> Session:
    """Connect to `peer`, start its agent, and say hello (measuring the clock offset).
    `settled=False`: the offset's hello is sent, and the session returned at once; its `offset`
    and `rtt` are set by `await session.settle()` (a sync's pipeline does, after the lock)."""
    root = root or peer.path or str(ws.root)
    dest = destination(peer)
    if use_openssh():
        conn = await OpenSSH.start(peer, root, timeout)
        process = conn
    else:
        conn = await _connect_asyncssh(peer, dest, timeout)
        try:
            process = await conn.create_process(agent_command(peer, root), encoding=None)
        except BaseException as err:
            conn.close()
            if isinstance(err, (OSError, sys.modules["asyncssh"].Error)):
                raise ConnectError(f"connection to {peer.name} lost while starting its agent: {err}",
                                   "Check the peer's sshd log; then run the sync again.") from None
            raise
    try:
        return await _hello(peer, dest, root, conn, process, timeout, settled)
    except BaseException:
        conn.abort()
        raise


async def _connect_asyncssh(peer: Peer, dest: sshconfig.Destination, timeout: float):
    import asyncssh  # lazy: slow to import; only where there is no system ssh (or it was asked for)

    where = f"{dest.user}@{dest.where}"
    try:
        return await asyncio.wait_for(asyncssh.connect(**_connect_options(peer, dest, timeout)), timeout + 1)
    except asyncssh.HostKeyNotVerifiable:
        from peersync.transport.hostkeys import refusal_for  # lazy: only on this failure (start-up)

        raise await refusal_for(peer) from None
    except asyncssh.PermissionDenied:
        raise _key_refused(dest) from None
    except (asyncio.TimeoutError, TimeoutError):
        raise _timed_out(peer, dest, timeout) from None
    except (OSError, asyncssh.Error) as err:
        code = getattr(err, "errno", None)
        reason = (os.strerror(code) if isinstance(code, int) and code > 0 else None) \
            or getattr(err, "reason", None) or str(err)
        raise ConnectError(f"cannot reach {peer.name} at {where}: {reason}",
                           sshconfig.unreachable_hint(dest, err, peer.name)) from None


def _key_refused(dest: sshconfig.Destination) -> ConnectError:
    port_arg = f"-p {dest.port} " if dest.port != 22 else ""
    return ConnectError(f"SSH key refused by {dest.user}@{dest.where}",
                        f"Install your public key there: ssh-copy-id {port_arg}{dest.user}@{dest.host}")


def _timed_out(peer: Peer, dest: sshconfig.Destination, timeout: float) -> ConnectError:
    return ConnectError(f"cannot reach {peer.name} at {dest.user}@{dest.where}: timed out after {timeout:g} s",
                        sshconfig.unreachable_hint(dest, None, peer.name))


def _lost() -> tuple:
    """What a broken connection raises: OSError, and asyncssh's errors where it is loaded."""
    return (OSError, ConnectionError) + ((sys.modules["asyncssh"].Error,) if "asyncssh" in sys.modules else ())


async def _hello(peer: Peer, dest: sshconfig.Destination, root: str, conn, process, timeout: float,
                 settled: bool = True) -> Session:
    """The agent's first hello (its start-up included), then a second one for RTT and clock offset
    (awaited here, or by Session.settle when not `settled`)."""
    try:
        started = time.time()
        process.stdin.write(encode({"id": 0, "op": "hello", "args": {"protocol": PROTOCOL}}))
        try:
            line = await asyncio.wait_for(read_line(process.stdout, SMALL_LINE), timeout + 15)
        except (asyncio.TimeoutError, TimeoutError):
            raise _timed_out(peer, dest, timeout + 15) from None
        finished = time.time()
        if not line:
            if isinstance(conn, OpenSSH):  # ssh itself may have failed: say how
                failure = await conn.failure(peer, dest, timeout)
                if failure is not None:
                    raise failure
                err = conn.stderr_text()
            else:
                err = (await asyncio.wait_for(process.stderr.read(4096), 5)).decode(errors="replace")
            if NOT_FOUND in err:
                raise ConnectError(f"peersync is not installed on {peer.name} (or not on its non-interactive PATH)",
                                   f"{install.remote_hint(peer.name)}; or tell peersync where it is: "
                                   f"peersync peers set {peer.name} --remote-command '/path/to/peersync'")
            raise ConnectError(f"the peersync agent on {peer.name} did not start: {err.strip()[:300] or 'no output'}")
        reply = decode(line)
        hello = reply.get("result") or {}
        if not isinstance(hello, dict):
            raise ValueError("hello is not an object")
        if not reply.get("ok"):
            raise ConnectError(f"the peersync agent on {peer.name} failed to start in {root}: {reply.get('error')}",
                               path_hint(peer, root))
        if hello.get("protocol") != PROTOCOL:
            raise protocol_mismatch(peer, hello)
        session = Session(peer, conn, process, hello, 0.0, finished - started)
        # The first reply includes the agent's start-up; time a second hello for RTT and offset.
        timed = asyncio.ensure_future(timed_hello(session))
        session._timed = asyncio.ensure_future(asyncio.wait_for(timed, timeout + 15))
        await asyncio.sleep(0)  # (its request is written before any the caller makes)
        if settled:
            await session.settle()
        return session
    except _lost() as err:
        raise ConnectError(f"connection to {peer.name} lost while starting its agent: {err}",
                           "Check the peer's sshd log; then run the sync again.") from None
    except ValueError as err:  # TooLarge included: a hello that is not one
        raise ProtocolError(f"{peer.name} answered hello with something else ({str(err)[:100]}); refusing it",
                            "Check the peer's peersync installation.") from None


async def _answered(requests: list[asyncio.Future]) -> None:
    """Wait for requests made as a session closes (Session.after_report); their errors are not the run's."""
    for request in requests:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(request, 60)


async def timed_hello(session: Session) -> tuple[dict, float, float]:
    """(the agent's hello, its clock's offset from ours, the round trip), measured now."""
    started = time.time()
    hello = await session.request("hello", protocol=PROTOCOL)
    finished = time.time()
    try:
        return hello, float(hello["time"]) - (started + finished) / 2, finished - started
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"{session.peer.name} answered hello without its time; refusing it",
                            "Check the peer's peersync installation.") from None


class OpenSSH:
    """`ssh PEER <agent command>` as a child process: both halves a Session needs — the process
    (stdin, stdout) and the connection (close, wait_closed, abort).  ssh's own stderr and the
    agent's are read as they come (a full pipe would stall both) and the last few KB kept."""

    GRACE = 3.0  # seconds the agent gets to exit after EOF before ssh is killed
    TAIL = 8192

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self._tail = bytearray()
        self._stderr = asyncio.ensure_future(self._read_stderr())

    @classmethod
    async def start(cls, peer: Peer, root: str, timeout: float) -> "OpenSSH":
        """`ssh PEER <agent>`: the one started early for exactly this (transport/openssh.py), or a new one."""
        args = openssh.argv(peer, root, timeout)
        early = openssh.adopt(args)
        if early is not None:
            return cls(await _Adopted.wrap(early))
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=STREAM_LIMIT, preexec_fn=die_with_parent())
        except OSError as err:
            raise ConnectError(f"cannot run ssh to reach {peer.name}: {err.strerror or err}",
                               f"Install the OpenSSH client, or set {CLIENT_ENV}=asyncssh.") from None
        pipes.widen(*pipes.subprocess_fds(proc))  # megabyte batches both ways
        return cls(proc)

    async def _read_stderr(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := await self.proc.stderr.read(4096):
                self._tail += chunk
                del self._tail[:-self.TAIL]

    def stderr_text(self) -> str:
        return self._tail.decode(errors="replace")

    async def failure(self, peer: Peer, dest: sshconfig.Destination, timeout: float) -> Exception | None:
        """After EOF before the first reply: ssh's own failure (exit 255) as the error to show, or
        None when ssh connected and the agent is what failed (its stderr then says why)."""
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr), 2)
        if self.proc.returncode != 255:
            return None
        text = self.stderr_text()
        from peersync.transport.hostkeys import from_openssh  # lazy: only on this failure (start-up)

        refused = await from_openssh(peer, text)
        if refused is not None:
            return refused
        if "Permission denied" in text or "Too many authentication failures" in text:
            return _key_refused(dest)
        if "timed out" in text.lower():
            return _timed_out(peer, dest, timeout)
        last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "ssh failed")
        reason = last.split(": ")[-1]  # "ssh: connect to host h port 22: Connection refused"
        cause = None
        if "Connection refused" in text:
            cause = ConnectionRefusedError(errno.ECONNREFUSED, reason)
        elif "Could not resolve hostname" in text:
            cause = socket.gaierror(socket.EAI_NONAME, reason)
        return ConnectError(f"cannot reach {peer.name} at {dest.user}@{dest.where}: {reason}",
                            sshconfig.unreachable_hint(dest, cause, peer.name))

    # -- the connection half (what a Session closes) ------------------------------------------
    def close(self) -> None:
        """EOF to the agent: it releases its lock and exits, and ssh with it."""
        with contextlib.suppress(OSError, RuntimeError):
            if not self.stdin.is_closing():
                self.stdin.close()

    async def wait_closed(self) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), self.GRACE)
        except (asyncio.TimeoutError, TimeoutError):
            self.abort()
            await self.proc.wait()
        self._release()

    def abort(self) -> None:
        """Now: a failed start, or a peer that does not end."""
        self.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self._release()

    def _release(self) -> None:
        # The pipes' transport closes itself only once every pipe reached EOF; a stdout we stopped
        # reading (a reply refused as too large) never does, and the transport would then be
        # collected after the event loop closed (a traceback on stderr).  Closing it is final.
        self._stderr.cancel()
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            transport.close()



class _Adopted:
    """An ssh started before the event loop (subprocess.Popen, transport/openssh.py) with the face
    of an asyncio subprocess: streams on its pipes, wait(), kill()."""

    def __init__(self, popen, stdin, stdout, stderr, transports):
        self.popen, self.stdin, self.stdout, self.stderr = popen, stdin, stdout, stderr
        self._transport = _Transports(transports)

    @classmethod
    async def wrap(cls, popen) -> "_Adopted":
        loop = asyncio.get_running_loop()
        stdout, stderr = asyncio.StreamReader(limit=STREAM_LIMIT), asyncio.StreamReader()
        out, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), popen.stdout)
        err, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr), popen.stderr)
        into, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
        return cls(popen, asyncio.StreamWriter(into, protocol, None, loop), stdout, stderr, (out, err, into))

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        return await asyncio.to_thread(self.popen.wait)

    def kill(self) -> None:
        self.popen.kill()


class _Transports:
    def __init__(self, transports):
        self.transports = transports

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


# -- through a keeper (daemons/keeper.py): the same agent, over its unix socket ----------------
# -- the client side ------------------------------------------------------------------------------
async def attach(ws: Workspace, peer: Peer, root: str, timeout: float):
    """A Session through the peer's keeper, or None when there is no usable keeper (the caller
    then connects directly).  Never raises for a missing, busy, stale or broken keeper."""
    path = socket_path(ws, peer, root)
    if path is None:
        return None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=STREAM_LIMIT), 2)
    except (OSError, asyncio.TimeoutError):
        return None
    session = KeptSession(peer, writer, reader)
    try:
        started = time.time()
        hello = await asyncio.wait_for(session.request("hello", protocol=PROTOCOL), timeout)
        finished = time.time()
    except Exception:  # busy, or its connection died while idle: connect directly instead
        await session.close()
        return None
    if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL or hello.get("root") is None:
        await session.close()
        return None
    session.hello = hello
    session.rtt = finished - started
    session.offset = float(hello["time"]) - (started + finished) / 2
    return session


class KeptSession(Session):
    """A Session whose lines go through a keeper's unix socket."""

    base_caps = KEPT

    def __init__(self, peer: Peer, writer, reader):
        super().__init__(peer, None, None, {}, 0.0, 0.0)
        self.writer, self.reader = writer, reader

    def _send(self, data: bytes) -> None:
        self.writer.write(data)

    async def _drain(self) -> None:
        await self.writer.drain()

    async def _receive(self, op: str) -> tuple[bytes, bytes | None]:
        return await read_frame(self.reader, line_limit(op, reply=True), blob_limit(op, reply=True))

    async def close(self) -> None:
        # No "bye": the agent stays for the next sync; the keeper resets it when we go.
        await _answered(self._send_later())
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

