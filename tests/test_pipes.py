"""Wide pipes between the client, ssh and the agent (transport/pipes.py): what they are, and that
every process on the way asks for them.  (Their speed is the bench's business, not a test's.)"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import subprocess
import sys

import pytest

from peersync.transport import openssh, pipes
from peersync.transport.protocol import decode, encode


def _may_widen() -> bool:
    """Whether this user may ask for PIPE_SIZE (root may always; others up to pipe-max-size)."""
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        return False
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            return os.geteuid() == 0 or int(f.read()) >= pipes.PIPE_SIZE
    except (OSError, ValueError):
        return False


pytestmark = pytest.mark.skipif(not _may_widen(), reason="pipe sizes are Linux's, up to its pipe-max-size")


def size(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def test_widen_grows_a_pipe_never_narrows_one_and_leaves_anything_else_alone(tmp_path):
    r, w = os.pipe()
    try:
        assert size(r) < pipes.PIPE_SIZE
        pipes.widen(w)
        assert size(r) == size(w) == pipes.PIPE_SIZE  # one buffer, whichever end asked
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 2 * pipes.PIPE_SIZE)  # beyond an ordinary user's limit
        except PermissionError:
            pass
        else:
            pipes.widen(r)
            assert size(r) == 2 * pipes.PIPE_SIZE
    finally:
        os.close(r)
        os.close(w)
    a, b = socket.socketpair()
    with a, b, open(tmp_path / "file", "wb") as f:
        pipes.widen(a.fileno(), f.fileno(), 10_000)  # a socket, a file, no descriptor: no error, no change
    pipes.widen()


def test_the_agent_widens_the_pipes_it_is_served_on_and_reads_a_large_line_through_them(tmp_path):
    """The pipes sshd gives the agent: it widens both (a pipe's size is the same at either end)
    and answers a request whose JSON line is megabytes long, read a whole pipe at a time."""
    (tmp_path / "ws").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "peersync", "agent", "--root", str(tmp_path / "ws")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(encode({"id": 1, "op": "hello", "args": {}}))
        proc.stdin.flush()
        hello = decode(proc.stdout.readline())
        assert hello["ok"] and hello["result"]["root"] == str(tmp_path / "ws")
        assert size(proc.stdin.fileno()) == size(proc.stdout.fileno()) == pipes.PIPE_SIZE
        paths = [f"memory/{'x' * 200}-{n}.md" for n in range(20_000)]  # a 4 MB line
        proc.stdin.write(encode({"id": 2, "op": "tombstones_get", "args": {"paths": paths}}))
        proc.stdin.write(encode({"id": 3, "op": "bye", "args": {}}))
        proc.stdin.flush()
        replies = [decode(proc.stdout.readline()), decode(proc.stdout.readline())]
        assert [r["id"] for r in replies] == [2, 3] and all(r["ok"] for r in replies), replies
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_the_client_widens_the_pipes_to_the_ssh_it_starts():
    early = openssh.spawn(["cat"])  # the ssh started before the event loop (transport/openssh.py)
    try:
        assert size(early.stdin.fileno()) == size(early.stdout.fileno()) == pipes.PIPE_SIZE
    finally:
        early.kill()
        early.wait()
        early.stdin.close()
        early.stdout.close()
        early.stderr.close()

    async def later() -> list[int]:  # one started on the loop (transport/ssh.py, OpenSSH.start)
        proc = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        fds = pipes.subprocess_fds(proc)
        pipes.widen(*fds)
        sizes = [size(fd) for fd in fds]
        proc.stdin.close()
        await proc.wait()
        return sizes

    assert asyncio.run(later()) == [pipes.PIPE_SIZE, pipes.PIPE_SIZE]


def test_a_sync_over_openssh_runs_on_wide_pipes(tmp_path, sshd, monkeypatch):
    """In-process, the session's own ssh (OpenSSH.start, not one started early) is on wide pipes."""
    from peersync.sync.runner import run_sync
    from peersync.testing import wire_pair
    from peersync.transport import ssh

    seen = []
    start = ssh.OpenSSH.__init__

    def recording(self, proc):
        seen.append([size(fd) for fd in pipes.subprocess_fds(proc)])
        start(self, proc)

    monkeypatch.setattr(ssh.OpenSSH, "__init__", recording)
    monkeypatch.delenv("PEERSYNC_SSH_CLIENT", raising=False)
    monkeypatch.setenv("PEERSYNC_KEEP_CONNECTION", "0")
    pair = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    (pair.local.root / "MEMORY.md").write_text("one\n")
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    assert (pair.remote.root / "MEMORY.md").read_text() == "one\n"
    assert seen and all(sizes == [pipes.PIPE_SIZE, pipes.PIPE_SIZE] for sizes in seen), seen
