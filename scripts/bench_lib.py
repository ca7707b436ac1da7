"""The benchmark's parts: the three tools on loopback SSH, the four scenarios, medians, ratios and the table."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from peersync.core.paths import STATE_DIR
from peersync.core.selection import DEFAULT_EXCLUDES, DEFAULT_ROOTS
from peersync.testing import LoopbackSSHD, generate, mutate, wire_pair
from peersync.testing.trees import is_selected

# "peersync": as installed (its connection kept warm between syncs by a keeper, keeper.py);
# "peersync-cold": every sync makes a new SSH connection (sync.keep_connection: 0).
TOOLS = ("peersync", "peersync-cold", "rsync", "unison")
PEERSYNCS = ("peersync", "peersync-cold")
SCENARIOS = ("initial", "noop", "changes", "bigappend")
SCENARIO_TITLES = {
    "initial": "initial sync (empty remote)",
    "noop": "no-op sync",
    "changes": "2 × {changes} changes",
    "bigappend": "{big_mb:g} MB file + {append_mb:g} MB appended",
}
DEFAULT_PARAMS = {"changes": 130, "big_mb": 50, "append_mb": 1}


def title(scenario: str, params: dict | None = None) -> str:
    return SCENARIO_TITLES[scenario].format(**{**DEFAULT_PARAMS, **(params or {})})
# Ratio targets of issue 3: (scenario, baseline tool, max ratio peersync / baseline).
RATIO_TARGETS = {"initial": ("rsync", 1.2), "noop": ("unison", 0.7), "changes": ("unison", 0.8)}
NOOP_100K_MAX_S = 2.0
PEAK_RSS_MAX_MB = 300.0
HEARTBEAT_MAX_MS = 150.0
CHANGES_PER_SIDE = 130
BIG_FILE = "memory/logs/huge-session.jsonl"
BIG_SIZE = 50 << 20
BIG_APPEND = 1 << 20
UNISON_OK = (0, 1)  # 1: some items skipped (both-sides conflicts, which -batch leaves alone)
TIME = "/usr/bin/time"  # GNU time (Debian package `time`), for peak RSS


class BenchError(RuntimeError):
    """A tool failed in a way that makes the numbers meaningless; the message says which and why."""


# -- selection as rsync filters and unison paths ----------------------------------------------
def rsync_filters() -> list[str]:
    """peersync's default selection as rsync filter rules (first match wins)."""
    rules = [f"--exclude=/{STATE_DIR}/"] + [f"--exclude={x}" for x in DEFAULT_EXCLUDES]
    for root in DEFAULT_ROOTS:
        rules += [f"--include=/{root}", f"--include=/{root}/**"]
    return rules + ["--exclude=*"]


def unison_selection() -> list[str]:
    """peersync's default selection as unison -path/-ignore options."""
    args: list[str] = []
    for root in DEFAULT_ROOTS:
        args += ["-path", root]
    for pattern in DEFAULT_EXCLUDES:
        name = pattern.rstrip("/")
        args += ["-ignore", f"Name {name}"]
        if name.startswith("*"):  # unison's * does not match a leading dot
            args += ["-ignore", f"Name .{name}"]
    return args + ["-ignore", f"Path {STATE_DIR}"]


def selection_digest(root: Path) -> tuple[int, str]:
    """(file count, digest of paths and contents) of the default selection under root."""
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = os.path.join(dirpath, name)
            if not is_selected(rel) or os.path.islink(full):
                continue
            count += 1
            h.update(rel.encode() + b"\0")
            with open(full, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return count, h.hexdigest()


def copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def write_big_file(path: Path, size: int, seed: int) -> None:
    """A JSONL-looking file of `size` bytes whose lines do not repeat (so nothing can cheat)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            blob = rng.randbytes(3 << 20).hex()  # 6 MB of text per round
            for i in range(0, len(blob), 200):
                line = b'{"type":"event","data":"' + blob[i:i + 200].encode() + b'"}\n'
                f.write(line)
                written += len(line)
                if written >= size:
                    break


def append_bytes(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "ab") as f:
        written = 0
        while written < size:
            line = b'{"type":"event","data":"' + rng.randbytes(100).hex().encode() + b'"}\n'
            f.write(line)
            written += len(line)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- tools ---------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    returncode: int
    load: list[float]


class Tool:
    """One sync tool on its own copy of the data: `local` is synced to/with `remote` over ssh."""

    name = "?"
    ok_codes: tuple[int, ...] = (0,)

    def __init__(self, bench: "Bench", local: Path, remote: Path):
        self.bench, self.local, self.remote = bench, local, remote
        self.runs = 0

    def prepare(self) -> None:
        """Called once the local copy exists and the remote root is empty."""

    def command(self) -> tuple[list[str], dict | None]:
        raise NotImplementedError

    def sync(self, label: str) -> Run:
        argv, env = self.command()
        self.runs += 1
        os.sync()  # untimed: no tool pays for writing back what the set-up or another tool left dirty
        log = self.bench.logs / f"{self.local.parent.parent.name}-{self.name}-{self.runs:02d}-{label}.log"
        load = loadavg()
        with open(log, "wb") as out:
            started = time.perf_counter()
            proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - started
        if proc.returncode not in self.ok_codes:
            tail = log.read_text(errors="replace")[-1500:]
            raise BenchError(f"{self.name} {label} failed with exit {proc.returncode} (log {log}):\n{tail}")
        return Run(seconds, proc.returncode, load)


def peersync_argv() -> list[str]:
    """What users run: the console script next to this interpreter, else `python -m peersync`."""
    script = Path(sys.executable).with_name("peersync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "peersync"]


class Peersync(Tool):
    name = "peersync"

    def remote_command(self, wrap: str | None = None) -> str:
        base = f"{shlex.quote(sys.executable)} -m peersync"
        return f"{wrap} {base}" if wrap else base

    def prepare(self, command: str | None = None) -> None:
        wire_pair(self.local, self.remote, self.bench.sshd, command=command or self.remote_command())

    def command(self):
        return [*peersync_argv(), "-w", str(self.local), "sync"], self.env()

    def env(self) -> dict | None:
        return dict(os.environ, PEERSYNC_KEEP_CONNECTION="600")

    def sync(self, label: str) -> Run:
        run = super().sync(label)
        self.wait_for_keeper()  # untimed: its start-up must not slow the next tool's run
        return run

    def wait_for_keeper(self) -> None:
        from peersync.transport import keeper
        from peersync.workspace.workspace import Workspace

        ws = Workspace(self.local)
        peer = ws.peer("remote")
        path = keeper.socket_path(ws, peer, peer.path or str(ws.root))
        deadline = time.monotonic() + 10
        while path is not None and not keeper._alive(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_idle([str(self.local), str(self.remote)])  # and its warm-up of both sides (keeper._warm)

    def measure_memory(self) -> dict:
        """One no-op sync with both processes under GNU time: peak RSS of the client and the agent."""
        if not os.access(TIME, os.X_OK):
            return {"skipped": f"{TIME} not found (apt-get install time)"}
        client_out = self.bench.logs / f"{self.local.parent.parent.name}-rss-client.txt"
        agent_out = self.bench.logs / f"{self.local.parent.parent.name}-rss-agent.txt"
        for f in (client_out, agent_out):
            f.unlink(missing_ok=True)
        self.prepare(self.remote_command(f"{TIME} -v -o {shlex.quote(str(agent_out))}"))
        try:
            argv = [TIME, "-v", "-o", str(client_out), *peersync_argv(), "-w", str(self.local), "sync"]
            started = time.perf_counter()
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=self.env())
            seconds = time.perf_counter() - started
        finally:
            self.prepare()
        if proc.returncode != 0:
            raise BenchError(f"peersync no-op under {TIME} failed: {proc.stderr.decode(errors='replace')[-800:]}")
        deadline = time.monotonic() + 5  # the agent's time writes its report as the session ends
        while not agent_out.exists() or "Maximum resident" not in agent_out.read_text():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return {"client_mb": _max_rss_mb(client_out), "agent_mb": _max_rss_mb(agent_out),
                "seconds": round(seconds, 3)}

    def heartbeat(self, reps: int) -> dict:
        """Wall time of `peersync heartbeat` with auto-sync off (nothing due: must return at once)."""
        argv = [*peersync_argv(), "-w", str(self.local), "heartbeat"]
        times = []
        for _ in range(max(reps, 5)):
            started = time.perf_counter()
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                text = proc.stdout + proc.stderr
                if "No such command" in text or "no such command" in text.lower():
                    return {"skipped": "peersync has no `heartbeat` command yet"}
                return {"skipped": f"heartbeat exited {proc.returncode}: {text.strip()[-300:]}"}
        return {"runs_ms": [round(t * 1000, 1) for t in times],
                "median_ms": round(statistics.median(times) * 1000, 1)}


class Rsync(Tool):
    name = "rsync"

    def command(self):
        return ["rsync", "-a", "--delete", *rsync_filters(), "-e", self.bench.sshd.rsh(),
                f"{self.local}/", f"{self.bench.sshd.target}:{self.remote}/"], None


class Unison(Tool):
    name = "unison"
    ok_codes = UNISON_OK

    def command(self):
        home = self.local.parent / "unison-home"  # own archives, apart from ~/.unison
        remote_home = self.local.parent / "unison-home-remote"
        env = dict(os.environ, UNISON=str(home))
        sshargs = " ".join(shlex.quote(a) for a in self.bench.sshd.ssh_base_args())
        return ["unison", "-batch", "-auto", "-times", "-ui", "text", "-terse", "-sshargs", sshargs,
                "-servercmd", f"env UNISON={shlex.quote(str(remote_home))} /usr/bin/unison",
                *unison_selection(), str(self.local),
                f"ssh://{self.bench.sshd.target}/{self.remote}"], env  # remote path absolute: "//"


def wait_idle(marks: list[str], timeout: float = 30.0) -> None:
    """Until the processes whose command line names one of `marks` (a keeper, its agent) have used
    no CPU for 0.3 s, or `timeout`: work they do in the background after a sync must not slow the
    next tool's run, as their start-up must not (reads Linux's /proc; without it, waits 0.3 s)."""
    wanted = [m.encode() for m in marks]

    def cpu_ticks() -> int:
        total = 0
        for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if not any(m in f.read() for m in wanted):
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                continue
        return total

    deadline = time.monotonic() + timeout
    last = cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_ticks()
        if now - last <= 1:
            return
        last = now


class PeersyncCold(Peersync):
    name = "peersync-cold"

    def env(self) -> dict | None:
        return dict(os.environ, PEERSYNC_KEEP_CONNECTION="0")

    def wait_for_keeper(self) -> None:
        pass


TOOL_CLASSES = {"peersync": Peersync, "peersync-cold": PeersyncCold, "rsync": Rsync, "unison": Unison}


def _max_rss_mb(path: Path) -> float | None:
    try:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", path.read_text())
    except FileNotFoundError:
        return None
    return round(int(match[1]) / 1024, 1) if match else None


# -- the run -------------------------------------------------------------------------------------
@dataclass
class SizeResult:
    files: int
    gen: dict = field(default_factory=dict)
    times: dict = field(default_factory=lambda: {s: {t: [] for t in TOOLS} for s in SCENARIOS})
    extra: dict = field(default_factory=dict)  # noop_first: the first no-op right after the initial sync
    converged: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    heartbeat: dict = field(default_factory=dict)
    loads: list = field(default_factory=list)

    def medians(self) -> dict:
        return {s: {t: _median(runs) for t, runs in by_tool.items()} for s, by_tool in self.times.items()}

    def to_json(self) -> dict:
        med = self.medians()
        return {
            "files": self.files, "generated": self.gen,
            "runs_s": {s: {t: [round(r, 4) for r in runs] for t, runs in by.items()} for s, by in self.times.items()},
            "median_s": {s: {t: _round(v) for t, v in by.items()} for s, by in med.items()},
            "ratios": ratios(med),
            "noop_first_s": {t: [round(r, 4) for r in runs] for t, runs in self.extra.get("noop_first", {}).items()},
            "converged": self.converged, "memory": self.memory, "heartbeat": self.heartbeat,
            "load_min_max": [min(self.loads), max(self.loads)] if self.loads else None,
        }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _round(value, digits=4):
    return None if value is None else round(value, digits)


def ratios(medians: dict) -> dict:
    out = {}
    for scenario, by_tool in medians.items():
        out[scenario] = {}
        for ours in PEERSYNCS:
            ps = by_tool.get(ours)
            prefix = "" if ours == "peersync" else "cold_"
            out[scenario].update({f"{prefix}vs_{t}": (_round(ps / by_tool[t], 3) if ps and by_tool.get(t) else None)
                                  for t in ("rsync", "unison")})
    return out


class Bench:
    """Owns the loopback sshd, the work directory and the logs of one benchmark run."""

    def __init__(self, workdir: Path, *, tools=TOOLS, echo=print):
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.tools = tuple(tools)
        self.echo = echo
        self.sshd: LoopbackSSHD | None = None

    def __enter__(self) -> "Bench":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.sshd = LoopbackSSHD(self.workdir / "sshd").start()
        return self

    def __exit__(self, *exc) -> None:
        if self.sshd is not None:
            self.sshd.stop()

    def run_size(self, files: int, reps: int, *, verify: bool = True, big_size: int = BIG_SIZE,
                 big_append: int = BIG_APPEND, changes: int = CHANGES_PER_SIDE) -> SizeResult:
        result = SizeResult(files)
        pristine = self.workdir / f"gen-{files}"
        if not pristine.exists():
            started = time.monotonic()
            stats = generate(pristine.with_suffix(".part"), files=files, seed=1)
            pristine.with_suffix(".part").rename(pristine)
            result.gen = {**stats.as_dict(), "seconds": round(time.monotonic() - started, 1)}
            result.gen.pop("kinds", None)
            self.echo(f"  generated {files} files ({stats.bytes / 1e6:.1f} MB, {stats.selected_files} in the"
                      f" selection) in {result.gen['seconds']} s")
        for rep in range(reps):
            self.echo(f"  repetition {rep + 1}/{reps} (load {loadavg()})")
            self._one_rep(pristine, files, rep, result, verify=verify, big_size=big_size,
                          big_append=big_append, changes=changes, last=rep == reps - 1)
        return result

    def _one_rep(self, pristine: Path, files: int, rep: int, result: SizeResult, *, verify: bool,
                 big_size: int, big_append: int, changes: int, last: bool) -> None:
        rep_dir = self.workdir / f"run-{files}-{rep}"
        shutil.rmtree(rep_dir, ignore_errors=True)
        tools: dict[str, Tool] = {}
        for name in self.tools:
            base = rep_dir / name
            base.mkdir(parents=True)
            copy_tree(pristine, base / "local")  # every tool starts from identical bytes and mtimes
            (base / "remote").mkdir()
            tools[name] = TOOL_CLASSES[name](self, base / "local", base / "remote")
            tools[name].prepare()

        def timed(scenario: str, key: str | None = None):
            for name, tool in tools.items():
                run = tool.sync(scenario)
                result.loads.extend(run.load)
                target = result.extra.setdefault(key, {}) if key else result.times[scenario]
                target.setdefault(name, []).append(run.seconds)

        def settle(label: str):
            for tool in tools.values():
                tool.sync(label)

        timed("initial")
        if verify and rep == 0:
            for name, tool in tools.items():
                result.converged.setdefault("initial", {})[name] = \
                    selection_digest(tool.local) == selection_digest(tool.remote)
        timed("noop", key="noop_first")  # may still fill caches (e.g. the remote stat cache)
        timed("noop")

        # 2 × N changes: the same edits (same tree, same seeds) on each tool's copies.
        for tool in tools.values():
            mutate(tool.local, seed=1000 + rep, n=changes)
            mutate(tool.remote, seed=2000 + rep, n=changes)
        timed("changes")
        if verify and rep == 0:
            for name, tool in tools.items():
                result.converged.setdefault("changes", {})[name] = \
                    selection_digest(tool.local) == selection_digest(tool.remote)
        settle("settle")

        # One big file: put it on both sides (untimed), then append to it locally (timed).
        for tool in tools.values():
            write_big_file(tool.local / BIG_FILE, big_size, seed=7)
        settle("big-setup")
        for tool in tools.values():
            append_bytes(tool.local / BIG_FILE, big_append, seed=8 + rep)
        timed("bigappend")

        if last and "peersync" in tools:
            ps = tools.get("peersync-cold") or tools["peersync"]  # RSS of a whole run, connection included
            ps.sync("settle")
            result.memory = ps.measure_memory()
            result.heartbeat = ps.heartbeat(5)
        shutil.rmtree(rep_dir, ignore_errors=True)


# -- backups (another helper's scripts/bench_backup.py) -----------------------------------------
def run_backup_bench(workdir: Path, files: int) -> dict:
    script = Path(__file__).with_name("bench_backup.py")
    if not script.exists():
        return {"skipped": "scripts/bench_backup.py not present"}
    try:
        spec = importlib.util.spec_from_file_location("bench_backup", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = getattr(module, "bench_backup", None)
        if fn is None:
            return {"skipped": "scripts/bench_backup.py has no bench_backup(workdir, files)"}
        out = fn(workdir, files)
        return json.loads(json.dumps(out, default=str))
    except Exception as err:  # the backup bench is optional: report, never abort the sync numbers
        return {"error": f"{err.__class__.__name__}: {err}"}


# -- report --------------------------------------------------------------------------------------
def environment() -> dict:
    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    from peersync import __version__
    return {"peersync": __version__, "python": platform.python_version(), "rsync": version(["rsync", "--version"]),
            "unison": version(["unison", "-version"]), "ssh": version(["ssh", "-V"]),
            "cpus": os.cpu_count(), "machine": platform.machine(), "kernel": platform.release(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt_s(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _fmt_ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


def target_rows(size: dict, params: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(what, measured, target, met) for every target of the issue that this size can check."""
    rows = []
    for scenario, (base, limit) in RATIO_TARGETS.items():
        value = size["ratios"][scenario][f"vs_{base}"]
        rows.append((f"{title(scenario, params)}: peersync / {base}", _fmt_ratio(value), f"≤ {limit}×",
                     "—" if value is None else ("✅" if value <= limit else "❌")))
    noop = size["median_s"]["noop"].get("peersync")
    if size["files"] >= 100_000 and noop is not None:
        rows.append(("100k-file no-op wall time", f"{noop:.2f} s", f"< {NOOP_100K_MAX_S:g} s",
                     "✅" if noop < NOOP_100K_MAX_S else "❌"))
    mem = size.get("memory") or {}
    for side in ("client", "agent"):
        value = mem.get(f"{side}_mb")
        if value is not None:
            rows.append((f"peak RSS, {side}, no-op", f"{value:.0f} MB", f"< {PEAK_RSS_MAX_MB:g} MB"
                         + ("" if size["files"] >= 100_000 else " (at 100k)"),
                         "✅" if value < PEAK_RSS_MAX_MB else "❌"))
    hb = size.get("heartbeat") or {}
    if "median_ms" in hb:
        rows.append(("heartbeat, nothing due", f"{hb['median_ms']:.0f} ms", f"< {HEARTBEAT_MAX_MS:g} ms",
                     "✅" if hb["median_ms"] < HEARTBEAT_MAX_MS else "❌"))
    elif hb.get("skipped"):
        rows.append(("heartbeat, nothing due", "skipped", f"< {HEARTBEAT_MAX_MS:g} ms", hb["skipped"]))
    return rows


def markdown(doc: dict) -> str:
    lines = []
    for size in doc["sizes"]:
        med, rat = size["median_s"], size["ratios"]
        lines += [f"### {size['files']:,} files — median of {doc['reps']} (seconds)", "",
                  "| scenario | peersync ² | peersync, new connection ³ | rsync -a (one-way) | unison -batch "
                  "| peersync / rsync | peersync / unison | new conn. / rsync | new conn. / unison |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for scenario in SCENARIOS:
            name = title(scenario, doc.get("params")) + (" ¹" if scenario == "changes" else "")
            m, r = med[scenario], rat[scenario]
            lines.append(f"| {name} | {_fmt_s(m.get('peersync'))} | {_fmt_s(m.get('peersync-cold'))} "
                         f"| {_fmt_s(m.get('rsync'))} | {_fmt_s(m.get('unison'))} "
                         f"| {_fmt_ratio(r.get('vs_rsync'))} | {_fmt_ratio(r.get('vs_unison'))} "
                         f"| {_fmt_ratio(r.get('cold_vs_rsync'))} | {_fmt_ratio(r.get('cold_vs_unison'))} |")
        lines += ["", "| target | measured | target | met |", "|---|---:|---:|:-:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in target_rows(size, doc.get("params"))]
        lines += [""]
        if size.get("load_min_max"):
            lo, hi = size["load_min_max"]
            lines.append(f"Load average during the runs: {lo:.2f}–{hi:.2f} on {doc['env']['cpus']} CPUs.")
        if size.get("converged"):
            bad = [f"{t} after {s}" for s, by in size["converged"].items() for t, ok in by.items() if not ok]
            if bad:
                lines.append("Replicas differ (expected for rsync and for unison's skipped conflicts): " + ", ".join(bad) + ".")
        lines.append("")
    lines += ["¹ Both sides edited (append/modify/create/delete, different seeds). rsync -a --delete is "
              "one-way: it only propagates the local side (and overwrites the remote's edits); unison -batch "
              "skips files changed on both sides; peersync merges appended logs and applies its conflict policy.",
              "All three sync peersync's default selection (MEMORY.md, USER.md, HEARTBEAT.md, memory/ minus "
              "excludes) over ssh to a loopback sshd on the same machine; peersync runs as the `peersync` CLI "
              "(start-up included).",
              "² As installed: after a sync, a keeper holds the peer's SSH connection and agent for "
              "`sync.keep_connection` seconds (600), so the next sync skips the SSH handshake, the remote "
              "login shell and the agent's start-up. The initial sync is always a new connection.",
              "³ `sync.keep_connection: 0`: every sync makes a new SSH connection and starts a new agent, "
              "like rsync and unison do.", ""]
    backup = doc.get("backup")
    if backup:
        lines += ["### Backups (scripts/bench_backup.py)", "", "```", json.dumps(backup, indent=2)[:3000], "```", ""]
    return "\n".join(lines)
