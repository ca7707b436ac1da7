#!/usr/bin/env python3
"""Profile one peersync sync: start-up imports, each protocol step, the client (cProfile) and the remote agent."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peersync.core import commit
from peersync.core import plan as planning
from peersync.sync import pipeline, runner, transfer
from peersync.testing import LoopbackSSHD, generate, mutate, wire_pair  # noqa: E402
from peersync.transport import local, protocol  # noqa: E402
from peersync.transport import ssh as remote
from peersync.workspace.workspace import Workspace  # noqa: E402

PY = sys.executable


# -- start-up ------------------------------------------------------------------------------------
def wall(argv: list[str], reps: int, stdin=subprocess.DEVNULL) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(argv, stdin=stdin, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def importtime(argv: list[str]) -> dict:
    """Parse `-X importtime`: the total, self time summed per top-level package, heaviest modules."""
    err = subprocess.run([PY, "-X", "importtime", *argv], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m[1]), int(m[2]), len(m[3]) // 2, m[4]))
    by_pkg: dict[str, int] = {}
    for self_us, _, _, name in rows:
        root = name.split(".")[0]
        by_pkg[root] = by_pkg.get(root, 0) + self_us
    pkgs = sorted(((n, round(us / 1000, 1)) for n, us in by_pkg.items()), key=lambda x: -x[1])
    heavy = sorted(((n, round(cum / 1000, 1)) for _, cum, _, n in rows if not n.startswith("peersync")),
                   key=lambda x: -x[1])
    own = sorted(((n, round(cum / 1000, 1)) for _, cum, _, n in rows if n.startswith("peersync")),
                 key=lambda x: -x[1])
    return {"total_ms": round(sum(us for _, us, d, _ in rows if d == 0) / 1000, 1), "modules": len(rows),
            "self_ms_by_package": pkgs[:15], "heaviest_foreign_cumulative_ms": heavy[:12],
            "peersync_modules_cumulative_ms": own[:12]}


def startup(tmp: Path, reps: int) -> dict:
    empty = tmp / "empty-ws"
    empty.mkdir(exist_ok=True)
    script = Path(PY).with_name("peersync")
    out = {
        "python_-c_pass_ms": round(wall([PY, "-c", "pass"], reps) * 1000, 1),
        "python_-I_-S_-c_pass_ms": round(wall([PY, "-I", "-S", "-c", "pass"], reps) * 1000, 1),
        "peersync_--help_ms": round(wall([str(script) if script.exists() else PY, *([] if script.exists() else ["-m", "peersync"]), "--help"], reps) * 1000, 1),
        "peersync_--version_ms": round(wall([PY, "-m", "peersync", "--version"], reps) * 1000, 1),
        "agent_start_to_eof_ms": round(wall([PY, "-m", "peersync", "agent", "--root", str(empty)], reps) * 1000, 1),
        "import_cli": importtime(["-m", "peersync", "--help"]),
        "import_agent": importtime(["-m", "peersync", "agent", "--root", str(empty)]),
        "import_engine_path": importtime(["-c", "import peersync.sync.runner, peersync.cli.sync, asyncssh"]),
        "import_asyncssh": importtime(["-c", "import asyncssh"]),
        # asyncssh probes for liboqs at import: ctypes.util.find_library spawns ldconfig (and gcc/ld).
        "find_library_oqs_ms": round(wall([PY, "-c", "import ctypes.util as u; u.find_library('oqs'); u.find_library('liboqs')"], reps)
                                     * 1000 - wall([PY, "-c", "import ctypes.util"], reps) * 1000, 1),
    }
    return out


# -- protocol timeline -----------------------------------------------------------------------
class Timeline:
    """Patches peersync.transport.ssh so every request (remote and local), the SSH connect and the
    JSON encode/decode of the client are timed.  Nothing in peersync is edited."""

    def __init__(self):
        self.events: list[dict] = []
        self.t0 = 0.0
        self.codec = {"encode_s": 0.0, "encode_bytes": 0, "decode_s": 0.0, "decode_bytes": 0}
        self.local_profiles: list[cProfile.Profile] = []
        self.profile_local = False
        self._saved = {}

    def __enter__(self):
        import asyncssh

        tl = self
        saved = self._saved
        saved["sreq"] = remote.Session.request
        saved["lreq"] = local.LocalSession.request
        saved["encode"], saved["decode"] = remote.encode, remote.decode
        saved["connect"] = asyncssh.connect
        saved["open_session"] = runner.open_session
        saved["rsync"] = transfer.rsync_files
        # Client-side CPU steps between the protocol requests (module globals, looked up per call).
        for module in (pipeline, runner, planning):
            for name in ("parse_manifest", "read_ancestor", "agreed_ancestor", "plan_sync", "reconcile",
                         "mass_delete_violations", "manifest_to_wire", "record", "workspace_lock", "select_peers"):
                if not callable(getattr(module, name, None)):
                    continue  # not a name of this module: time what exists
                saved[f"fn:{module.__name__}:{name}"] = getattr(module, name)
                setattr(module, name, _timed_fn(self, name, getattr(module, name)))
        saved["new_ancestor"] = pipeline.new_ancestor
        if saved["new_ancestor"] is not None:
            pipeline.new_ancestor = _timed_fn(self, "new_ancestor", pipeline.new_ancestor)

        async def sreq(self, op, **args):
            start = time.perf_counter()
            try:
                return await saved["sreq"](self, op, **args)
            finally:
                tl.add("remote", op, start)

        async def lreq(self, op, **args):
            start = time.perf_counter()
            if tl.profile_local:
                prof = cProfile.Profile()
                tl.local_profiles.append(prof)

                def call():
                    prof.enable()
                    try:
                        return self.handler.call(op, args)
                    finally:
                        prof.disable()
                try:
                    return await asyncio.to_thread(call)
                finally:
                    tl.add("local", op, start)
            try:
                return await saved["lreq"](self, op, **args)
            finally:
                tl.add("local", op, start)

        def encode(message):
            start = time.perf_counter()
            data = saved["encode"](message)
            tl.codec["encode_s"] += time.perf_counter() - start
            tl.codec["encode_bytes"] += len(data)
            return data

        def decode(line, blob=None):
            start = time.perf_counter()
            value = saved["decode"](line, blob)
            tl.codec["decode_s"] += time.perf_counter() - start
            tl.codec["decode_bytes"] += len(line) + len(blob or b"")
            return value

        async def connect(*a, **kw):
            start = time.perf_counter()
            try:
                return await saved["connect"](*a, **kw)
            finally:
                tl.add("ssh", "asyncssh.connect", start)

        async def open_session(*a, **kw):
            start = time.perf_counter()
            try:
                return await saved["open_session"](*a, **kw)
            finally:
                tl.add("ssh", "open_session (connect + agent start + 2 hellos)", start)

        async def rsync_files(*a, **kw):
            start = time.perf_counter()
            try:
                return await saved["rsync"](*a, **kw)
            finally:
                tl.add("rsync", f"rsync {len(a[1]) if len(a) > 1 else '?'} files", start)

        remote.Session.request, local.LocalSession.request = sreq, lreq
        remote.encode, remote.decode = encode, decode
        asyncssh.connect = connect
        runner.open_session, transfer.rsync_files = open_session, rsync_files
        return self

    def __exit__(self, *exc):
        import asyncssh

        s = self._saved
        remote.Session.request, local.LocalSession.request = s["sreq"], s["lreq"]
        remote.encode, remote.decode = s["encode"], s["decode"]
        asyncssh.connect = s["connect"]
        runner.open_session, transfer.rsync_files = s["open_session"], s["rsync"]
        for key, fn in s.items():
            if key.startswith("fn:"):
                _, module, name = key.split(":")
                setattr(sys.modules[module], name, fn)
        if s["new_ancestor"] is not None:
            pipeline.new_ancestor = s["new_ancestor"]

    def add(self, side: str, op: str, start: float) -> None:
        self.events.append({"side": side, "op": op, "start_ms": round((start - self.t0) * 1000, 1),
                            "ms": round((time.perf_counter() - start) * 1000, 1)})

    def run(self, ws: Workspace) -> dict:
        self.events.clear()
        for k in self.codec:
            self.codec[k] = 0
        self.t0 = time.perf_counter()
        reports = runner.run_sync(ws)
        total = time.perf_counter() - self.t0
        rep = reports[0]
        return {"total_ms": round(total * 1000, 1), "ok": rep.ok, "error": rep.error,
                "pushed": len(rep.pushed), "pulled": len(rep.pulled), "merged": len(rep.merged),
                "deleted": len(rep.deleted_local) + len(rep.deleted_remote), "conflicts": len(rep.conflicts),
                "events": sorted(self.events, key=lambda e: e["start_ms"]),
                "client_codec": {k: (round(v * 1000, 1) if k.endswith("_s") else v) for k, v in self.codec.items()}}


def _timed_fn(tl: "Timeline", name: str, fn):
    import contextlib
    import functools

    if name == "workspace_lock":  # a context manager: time taking the lock only
        @contextlib.contextmanager
        def lock(*a, **kw):
            start = time.perf_counter()
            with fn(*a, **kw):
                tl.add("client", "workspace_lock (acquire)", start)
                yield
        return lock

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        start = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            tl.add("client", name, start)
    return wrapper


def top_stats(prof, n: int, sort: str) -> str:
    out = io.StringIO()
    stats = prof if isinstance(prof, pstats.Stats) else pstats.Stats(prof, stream=out)
    stats.stream = out
    stats.strip_dirs().sort_stats(sort).print_stats(n)
    text = out.getvalue()
    return text[text.find("   ncalls"):] if "   ncalls" in text else text


def profile_client(ws: Workspace, tl: Timeline, n: int) -> dict:
    """cProfile of run_sync in this process: the event-loop thread plus the local-scan threads."""
    tl.local_profiles.clear()
    tl.profile_local = True
    prof = cProfile.Profile()
    prof.enable()
    try:
        result = tl.run(ws)
    finally:
        prof.disable()
        tl.profile_local = False
    stats = pstats.Stats(prof)
    for p in tl.local_profiles:
        stats.add(p)
    return {"total_ms": result["total_ms"], "by_cumulative": top_stats(stats, n, "cumulative"),
            "by_tottime": top_stats(stats, n, "tottime")}


def profile_agent(pair, ws: Workspace, out: Path, n: int, prepare=None) -> dict:
    """One sync whose remote agent runs under `python -m cProfile`."""
    prof_file = out.with_suffix(".prof")
    prof_file.unlink(missing_ok=True)
    wire_pair(pair.local.root, pair.remote.root, pair.sshd,
              command=f"{shlex.quote(PY)} -m cProfile -o {shlex.quote(str(prof_file))} -m peersync")
    try:
        if prepare:
            prepare()
        started = time.perf_counter()
        reports = runner.run_sync(ws)
        total = time.perf_counter() - started
    finally:
        wire_pair(pair.local.root, pair.remote.root, pair.sshd)
    deadline = time.monotonic() + 10
    while not prof_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not prof_file.exists():
        return {"error": "agent profile not written", "ok": reports[0].ok}
    time.sleep(0.2)
    stats = pstats.Stats(str(prof_file))
    return {"total_ms": round(total * 1000, 1), "by_cumulative": top_stats(stats, n, "cumulative"),
            "by_tottime": top_stats(stats, n, "tottime")}


# -- scan breakdown (in-process, local side) ---------------------------------------------------
def scan_breakdown(root: Path) -> dict:
    from peersync.core.types import Entry
    from peersync.replica.scan import StatCache, scan, walk

    ws = Workspace(root)
    sel = ws.sync_config().selection
    cache_path = ws.state / "scan-cache.json"
    out = {"cache_file_bytes": cache_path.stat().st_size if cache_path.exists() else 0}

    def best(fn, reps=3):
        times = []
        value = None
        for _ in range(reps):
            started = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - started)
        return min(times) * 1000, value

    out["import_check_ms"] = 0
    out["stat_cache_load_ms"], cache = best(lambda: StatCache(cache_path))
    out["walk_ms"], walked = best(lambda: list(walk(root, sel)))
    out["walk_files"] = len(walked)
    out["scan_cached_ms"], result = best(lambda: scan(root, sel, cache_path, save_cache=False))
    out["scan_hashed_in_cached_run"] = result.hashed
    out["scan_nocache_ms"], _ = best(lambda: scan(root, sel, None, save_cache=False), reps=1)
    out["manifest_to_wire_ms"], wire = best(lambda: {p: e.to_wire() for p, e in result.manifest.items()})
    msg = {"id": 1, "ok": True, "result": {"entries": wire, "problems": [], "hashed": 0}}
    out["encode_ms"], data = best(lambda: protocol.encode(msg))
    out["encoded_bytes"] = len(data)
    out["decode_ms"], decoded = best(lambda: protocol.decode(data))
    out["parse_manifest_ms"], entries = best(lambda: commit.parse_manifest(decoded["result"]["entries"], sel, "x"))
    out["entry_from_wire_only_ms"], _ = best(lambda: {p: Entry.from_wire(w) for p, w in wire.items()})
    out["selection_contains_ms"], _ = best(lambda: [sel.contains(p) for p in wire])
    from peersync.core.paths import check_relpath
    out["check_relpath_ms"], _ = best(lambda: [check_relpath(p) for p in wire])
    anc_files = list((ws.state / "ancestors").glob("*.json"))
    if anc_files:
        from peersync.workspace.storage import read_json
        out["ancestor_file_bytes"] = anc_files[0].stat().st_size
        out["ancestor_read_ms"], raw = best(lambda: read_json(anc_files[0]))
        out["read_ancestor_ms"], anc = best(lambda: commit.read_ancestor(raw))
        out["agreed_ancestor_ms"], agreed = best(lambda: commit.agreed_ancestor(anc, anc))
        from peersync.core.reconcile import reconcile
        from peersync.core.types import Mode, Policy
        cfg = ws.sync_config()
        out["reconcile_ms"], _ = best(lambda: reconcile(agreed, entries, entries, policy=Policy.NEWEST, mode=Mode.SYNC,
                                                       is_log=cfg.rules.is_log, mergeable=cfg.rules.mergeable, offset_ns=0,
                                                       local_id="a", remote_id="b"))
        from peersync.core.types import manifest_to_wire
        out["manifest_to_wire_for_ancestor_put_ms"], new = best(lambda: manifest_to_wire(agreed))
        out["ancestor_encode_ms"], enc = best(lambda: protocol.encode({"op": "ancestor_put", "args": {"manifest": new}}))
        out["ancestor_put_bytes"] = len(enc)
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in out.items()}


# -- main ----------------------------------------------------------------------------------------

def cli_sync(root: Path) -> float:
    script = Path(PY).with_name("peersync")
    argv = [str(script)] if script.exists() else [PY, "-m", "peersync"]
    started = time.perf_counter()
    proc = subprocess.run([*argv, "-w", str(root), "sync"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          )
    if proc.returncode != 0:
        raise SystemExit(f"peersync sync failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1000:]}")
    return time.perf_counter() - started


def summary_text(doc: dict) -> str:
    lines = [f"files {doc['files']}; load {doc['load_start']} → {doc.get('load_end')}", "", "start-up:"]
    st = doc["startup"]
    for k, v in st.items():
        if k.startswith("import_"):
            lines.append(f"  {k}: total {v['total_ms']} ms over {v['modules']} modules; self ms by package "
                         + ", ".join(f"{n} {ms}" for n, ms in v["self_ms_by_package"][:10]))
            lines.append("    heaviest: " + ", ".join(f"{n} {ms}" for n, ms in v["heaviest_foreign_cumulative_ms"][:8]))
        else:
            lines.append(f"  {k}: {v}")
    for key, value in doc.items():
        if key.endswith("_timeline"):
            counts = {k: value[k] for k in ("pushed", "pulled", "merged", "deleted", "conflicts") if value.get(k)}
            lines += ["", f"{key}: {value['total_ms']} ms {counts} client codec {value['client_codec']}",
                      "   start ms    dur ms  where   step"]
            lines += [f"   {e['start_ms']:8.1f}  {e['ms']:8.1f}  {e['side']:<7} {e['op']}" for e in value["events"]]
    if "noop_cli_s" in doc:
        lines += ["", f"no-op through the CLI (subprocess), s: {doc['noop_cli_s']}"]
    if "scan_breakdown" in doc:
        lines += ["", "local scan / manifest breakdown (ms, best of 3): "
                  + ", ".join(f"{k} {v}" for k, v in doc["scan_breakdown"].items())]
    for key, value in doc.items():
        if key.endswith("_profile"):
            lines += ["", f"{key}: {value.get('total_ms')} ms (full text in --stats-dir)"]
    return "\n".join(lines)


def noop_only(doc: dict, tl: Timeline, pair, ws: Workspace, work: Path, top: int) -> None:
    """Both sides start as copies of one tree: the first sync only records the ancestor."""
    print("first sync of identical trees, then no-ops…", file=sys.stderr, flush=True)
    doc["identical_first_timeline"] = tl.run(ws)
    doc["noop_first_timeline"] = tl.run(ws)
    doc["noop_cli_s"] = [round(cli_sync(ws.root), 3) for _ in range(2)]
    doc["noop_timeline"] = tl.run(ws)
    doc["noop_client_profile"] = profile_client(ws, tl, top)
    doc["noop_agent_profile"] = profile_agent(pair, ws, work / "agent-noop", top)
    doc["scan_breakdown"] = scan_breakdown(ws.root)


def full(doc: dict, tl: Timeline, pair, ws: Workspace, work: Path, top: int) -> None:
    """Initial sync, no-op, 2 × 130 changes, big file appended: timelines and profiles."""
    local_root, remote_root, sshd = pair.local.root, pair.remote.root, pair.sshd
    print("initial sync (timeline)…", file=sys.stderr, flush=True)
    doc["initial_timeline"] = tl.run(ws)
    # The first no-op after the initial may still fill the remote stat cache.
    doc["noop_first_timeline"] = tl.run(ws)
    doc["noop_cli_s"] = [round(cli_sync(local_root), 3) for _ in range(3)]
    doc["noop_timeline"] = tl.run(ws)
    print("no-op profiles…", file=sys.stderr, flush=True)
    doc["noop_client_profile"] = profile_client(ws, tl, top)
    doc["noop_agent_profile"] = profile_agent(pair, ws, work / "agent-noop", top)
    doc["scan_breakdown"] = scan_breakdown(local_root)

    print("2 × 130 changes…", file=sys.stderr, flush=True)
    seed = [0]

    def edits():
        seed[0] += 1
        mutate(local_root, seed=100 + seed[0], n=130)
        mutate(remote_root, seed=200 + seed[0], n=130)

    edits()
    doc["changes_timeline"] = tl.run(ws)
    edits()
    doc["changes_client_profile"] = profile_client(ws, tl, top)
    doc["changes_agent_profile"] = profile_agent(pair, ws, work / "agent-changes", top, prepare=edits)

    print("big file appended…", file=sys.stderr, flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_lib import BIG_APPEND, BIG_FILE, BIG_SIZE, append_bytes, write_big_file

    write_big_file(local_root / BIG_FILE, BIG_SIZE, seed=7)
    doc["bigfile_new_timeline"] = tl.run(ws)
    append_bytes(local_root / BIG_FILE, BIG_APPEND, seed=8)
    doc["bigappend_timeline"] = tl.run(ws)
    append_bytes(local_root / BIG_FILE, BIG_APPEND, seed=9)
    doc["bigappend_agent_profile"] = profile_agent(pair, ws, work / "agent-bigappend", top)

    print("initial-sync agent profile…", file=sys.stderr, flush=True)
    shutil.rmtree(remote_root)
    for f in (local_root / "memory/clawdbot-sync/ancestors").glob("*.json"):
        f.unlink()
    pair = wire_pair(local_root, remote_root, sshd)
    doc["initial_agent_profile"] = profile_agent(pair, ws, work / "agent-initial", top)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--reps", type=int, default=5, help="repetitions for start-up timings")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--noop-only", action="store_true",
                        help="only the no-op: both sides start as copies of one generated tree (no initial transfer)")
    parser.add_argument("--stats-dir", type=Path, default=None, help="write the full pstats text here")
    args = parser.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="peersync-prof-"))
    work.mkdir(parents=True, exist_ok=True)
    doc: dict = {"files": args.files, "load_start": [round(x, 2) for x in os.getloadavg()]}
    print("start-up…", file=sys.stderr, flush=True)
    doc["startup"] = startup(work, args.reps)

    sshd = LoopbackSSHD(work / "sshd").start()
    try:
        local_root, remote_root = work / "local", work / "remote"
        for p in (local_root, remote_root):
            shutil.rmtree(p, ignore_errors=True)
        print(f"generating {args.files} files…", file=sys.stderr, flush=True)
        generate(local_root, files=args.files, seed=1)
        if args.noop_only:
            subprocess.run(["cp", "-a", str(local_root), str(remote_root)], check=True)
        pair = wire_pair(local_root, remote_root, sshd)
        ws = Workspace(local_root)

        with Timeline() as tl:
            if args.noop_only:
                noop_only(doc, tl, pair, ws, work, args.top)
            else:
                full(doc, tl, pair, ws, work, args.top)
    finally:
        sshd.stop()
    doc["load_end"] = [round(x, 2) for x in os.getloadavg()]

    if args.stats_dir:
        args.stats_dir.mkdir(parents=True, exist_ok=True)
        for key, value in doc.items():
            if key.endswith("_profile"):
                (args.stats_dir / f"{key}.txt").write_text(
                    f"total {value.get('total_ms')} ms\n\n== cumulative ==\n{value.get('by_cumulative')}\n"
                    f"== tottime ==\n{value.get('by_tottime')}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    print(summary_text(doc))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
