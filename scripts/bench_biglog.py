#!/usr/bin/env python3
"""Measure the merge of a huge log appended on both sides, over a loopback sshd: wall time and the
peak RSS of the client and of the remote agent.

    python scripts/bench_biglog.py --mb 2000 [--append-mb 1] [--workdir DIR] [--keep]

Writes a --mb MB `.jsonl` into two workspaces wired as peers (the same bytes: the first sync
adopts it), appends --append-mb MB of different lines on each side, and times the sync that
merges them (`peersync sync`, a process of its own).  Each process's peak RSS is recorded by
peersync.testing.rss, the launcher the agent and the client are started under.  Needs about
four times --mb free on the work dir's disk (two replicas, each staging its merged copy).
Not run in CI.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import xxhash  # noqa: E402

from peersync.testing import LoopbackSSHD, default_remote_command, wire_pair  # noqa: E402
from peersync.testing.rss import peak_mb  # noqa: E402

LOG = "memory/agent-events.jsonl"


def write_log(path: Path, size: int) -> None:
    """`size` bytes (rounded up to a line) of JSON lines like an agent's event log."""
    line = b'{"ts": "2026-12-04T10:00:00Z", "event": "tool_call", "tool": "exec", "ok": true, "ms": 131}\n'
    block = line * ((1 << 20) // len(line))
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as f:
        n = 0
        while written < size:
            head = b'{"block": %d}\n' % n
            f.write(head + block)
            written += len(head) + len(block)
            n += 1


def append(path: Path, who: str, size: int) -> int:
    lines = []
    total = n = 0
    while total < size:
        lines.append(b'{"from": "%s", "n": %d, "event": "appended while apart"}\n' % (who.encode(), n))
        total += len(lines[-1])
        n += 1
    with open(path, "ab") as f:
        f.write(b"".join(lines))
    return n


def file_hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def sync(local: Path, report: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "peersync.testing.rss", str(report), sys.executable, "-m", "peersync",
                           "-w", str(local), "sync"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"sync failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=2000, help="size of the log (default 2000)")
    parser.add_argument("--append-mb", type=float, default=1, help="appended on each side (default 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="peersync-biglog-"))
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    if free < 4.2 * (args.mb << 20):
        print(f"❌ {workdir} has {free >> 20} MB free; a {args.mb} MB log needs about {4 * args.mb} MB "
              f"(use a smaller --mb or another --workdir)", file=sys.stderr)
        return 1
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "peersync")],
                   stdout=subprocess.DEVNULL, check=False)
    agent_rss, client_rss = workdir / "agent.rss", workdir / "client.rss"
    try:
        with LoopbackSSHD(workdir / "sshd") as sshd:
            command = f"{sys.executable} -m peersync.testing.rss {agent_rss} {default_remote_command()}"
            pair = wire_pair(workdir / "local", workdir / "remote", sshd, command=command)
            local, remote = pair.local.root / LOG, pair.remote.root / LOG
            started = time.monotonic()
            write_log(local, args.mb << 20)
            remote.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, remote)
            print(f"⏱️ wrote a {local.stat().st_size / (1 << 20):.0f} MB log on both sides in "
                  f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
            first = sync(pair.local.root, workdir / "first.rss")
            print(f"⏱️ first sync (adopts the log, hashing it on both sides): {first:.1f} s", file=sys.stderr, flush=True)
            appended = {who: append(path, who, int(args.append_mb * (1 << 20)))
                        for who, path in (("local", local), ("remote", remote))}
            agent_rss.unlink(missing_ok=True)
            seconds = sync(pair.local.root, client_rss)
            same = local.stat().st_size == remote.stat().st_size and file_hash(local) == file_hash(remote)
            size = local.stat().st_size
            with open(local, "rb") as f:
                f.seek(max(0, size - 4 * int(args.append_mb * (1 << 20)) - (1 << 20)))
                tail = f.read()
            lines = sum(tail.count(b'"from": "%s"' % who.encode()) for who in appended)
            client_mb, agent_mb = peak_mb(client_rss), peak_mb(agent_rss)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = same and lines == sum(appended.values())
    print(f"log {args.mb} MB, {args.append_mb:g} MB appended on each side: merge sync {seconds:.1f} s; "
          f"peak RSS client {client_mb:.0f} MB, agent {agent_mb:.0f} MB; "
          f"{'identical on both sides, every appended line present' if ok else 'NOT CONVERGED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
