"""A five-machine mesh soak under the conditions real machines have (issue 14): odd names, files
made unreadable for a while, permission changes, case-only renames, NFC/NFD twins and a name that is not UTF-8 — with one
replica on a case-insensitive volume and one on an NFD-storing volume (FUSE, as tests/test_mac_volumes).

At the end: the three Linux replicas are identical (names, bytes, the x bit); each Mac-like replica
holds the same files except names it cannot hold apart, which its last syncs reported as a name
clash; nothing is lost (every version a user did not replace is live somewhere or kept in some
conflicts/ or trash); names peersync refuses (a newline, a tab, a backslash) stay where they were
made, untouched; and no conflict is spurious (tests/lineage.py: the loser was never in the winner's
ancestry).

Root reads every file whatever its mode, so the soak runs in a child process without
CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv, as tests/test_unreadable.py): a chmod-000 file is
then unreadable to it.  It runs twice: with the syncs in-process (sync_local: the real pipeline, no
sshd), and over the loopback sshd (each sync a new SSH connection and agent, the agent also without
DAC override; fewer rounds, as each sync costs a connection).

    PEERSYNC_MESH_ROUNDS=600 PEERSYNC_MESH_SEED=3 pytest tests/test_mesh_realfs.py --timeout=0 -s
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

N = 5
LINUX = (0, 1, 2)  # plain directories; 3 is case-insensitive (casefold), 4 stores names NFD (nfd)
ROUNDS = int(os.environ.get("PEERSYNC_MESH_ROUNDS", "100"))
SSHD_ROUNDS = int(os.environ.get("PEERSYNC_MESH_ROUNDS", "40"))  # each sync starts ssh and an agent
SSHD_SEED = int(os.environ.get("PEERSYNC_MESH_SEED", "3"))  # one whose 40 rounds write every kind of name
SEED = int(os.environ.get("PEERSYNC_MESH_SEED", "11"))
FINAL_ROUNDS = 3
OWNER_ONLY = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.getuid() == 0 else []

CAFE_NFC, CAFE_NFD = (unicodedata.normalize(f, "memory/café.txt") for f in ("NFC", "NFD"))
CASED = ("memory/Case.txt", "memory/case.txt")  # one file, renamed between the two spellings
# A name that is not UTF-8: synced between the Linux replicas, never sent to the Mac-like ones (their
# volumes hold only UTF-8 names), where it is reported and left alone.
RAW = os.fsdecode(b"memory/caf\xe9.txt")
SYNCED = ["memory/notes/a.txt", "memory/notes/b.txt", "memory/plan.txt", CAFE_NFC, CAFE_NFD, *CASED, RAW]
# Names peersync refuses to sync (reported, the rest syncs): control characters and a backslash.
# Each stays where it was made, untouched.
ODD = ["memory/odd\nline.txt", "memory/odd\ttab.txt", "memory/odd\\back.txt"]
LOCKED_ROUNDS = (2, 6)  # a file is unreadable for this many rounds, then readable again
LINK = "memory/notes/latest.txt"  # a symbolic link, created, retargeted and deleted on any replica
LINK_TARGETS = ["a.txt", "b.txt", "../plan.txt"]  # relative, inside the selection


class Soak:
    def __init__(self, roots: list[Path], rng: random.Random, link_rng: random.Random, *, over_ssh: bool = False):
        from lineage import Lineage

        from peersync.workspace.workspace import Workspace

        self.roots, self.rng, self.over_ssh = roots, rng, over_ssh
        self.link_rng = link_rng  # its own sequence: the other ops keep theirs per seed
        for root in roots:
            (root / "memory").mkdir(parents=True, exist_ok=True)
        self.ws = [Workspace(r) for r in roots]
        self.names = [r.name for r in roots]
        self.counter = 0
        self.owed: dict[bytes, str] = {}  # version -> path; dropped once a user replaced it where it was held
        self.lineage = Lineage()
        self.locked: dict[tuple[int, str], int] = {}  # (replica, path) -> rounds left unreadable
        self.odd_made: dict[tuple[int, str], bytes] = {}
        self.counts = {"syncs": 0, "problems": 0, "clash_reports": 0, "locks": 0, "unreadable": 0, "clash_groups": 0,
                       "mac_files_compared": 0, "not_utf8_writes": 0, "link_ops": 0,
                       "not_utf8_reports": 0}
        self.op_counts: dict[str, int] = {}
        self.last_problems: dict[int, set[str]] = {k: set() for k in range(N)}  # paths reported on k, final rounds
        # Each user action is one entry: a symlink op (when links sync) is one more line here.
        self.ops = [(0.30, self.op_write), (0.08, self.op_delete), (0.10, self.op_twin), (0.10, self.op_case_rename),
                    (0.10, self.op_chmod_x), (0.08, self.op_lock), (0.10, self.op_odd_name),
                    (0.12, self.op_rename)]

    # -- the replicas' files ------------------------------------------------------------------------
    def key(self, k: int, name: str) -> str:
        """A replica's stored name as the model spells it (the NFD volume stores decomposed)."""
        return unicodedata.normalize("NFC", name) if k == 4 else name

    def tree(self, k: int) -> dict[str, tuple[bytes | None, int]]:
        """path -> (bytes, or None when unreadable; the x bit) of every file, by the name stored."""
        out = {}
        base = self.roots[k]
        for here, dirs, files in os.walk(base / "memory"):
            dirs[:] = [d for d in dirs if d != "clawdbot-sync"]
            for name in files:
                full = os.path.join(here, name)
                rel = os.path.relpath(full, base)
                st = os.lstat(full)
                if os.path.islink(full):
                    out[rel] = (b"-> " + os.fsencode(os.readlink(full)), 0)
                    continue
                try:
                    data = Path(full).read_bytes()
                except PermissionError:
                    data = None
                out[rel] = (data, st.st_mode & 0o111)
        return out

    def read(self, k: int, path: str) -> bytes | None:
        """The bytes at exactly `path` (as the model spells it) on replica k, by listing: a lookup
        on a folding volume would answer for another spelling."""
        parent = self.roots[k] / os.path.dirname(path)
        try:
            listed = {self.key(k, n): n for n in os.listdir(parent)}
        except (FileNotFoundError, NotADirectoryError):
            return None
        stored = listed.get(os.path.basename(path))
        if stored is None:
            return None
        try:
            return (parent / stored).read_bytes()
        except (PermissionError, IsADirectoryError):
            return None

    def unique(self, what: str) -> bytes:
        self.counter += 1
        return f"{what!r} #{self.counter}\n".encode()

    def free(self, k: int, path: str) -> bool:
        return (k, path) not in self.locked

    def write(self, k: int, path: str, data: bytes) -> None:
        before = self.read(k, path)
        if before is not None:
            self.owed.pop(before, None)  # the user saw it and replaced it
        full = self.roots[k] / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
        self.lineage.wrote(k, path, data)
        self.owed[data] = path

    # -- user actions (one entry each in self.ops) ----------------------------------------------------
    def op_write(self, k: int) -> None:
        path = self.rng.choice(SYNCED[:3])
        if self.free(k, path):
            self.write(k, path, self.unique(f"{path} by {self.names[k]}"))

    def op_delete(self, k: int) -> None:
        path = self.rng.choice(SYNCED[:3])
        before = self.read(k, path)
        if before is not None and self.free(k, path):
            self.owed.pop(before, None)
            (self.roots[k] / path).unlink()

    def op_rename(self, k: int) -> None:
        """The same bytes under another name, the old name gone (an editor's save-as)."""
        src, dst = self.rng.sample(SYNCED[:3], 2)
        data = self.read(k, src)
        if data is not None and self.free(k, src) and self.free(k, dst):
            self.owed.pop(data, None)
            (self.roots[k] / src).unlink()
            self.write(k, dst, self.unique(f"{dst} renamed from {src} by {self.names[k]}"))

    def op_twin(self, k: int) -> None:
        """café.txt written as NFC or (on Linux, where both can exist) NFD."""
        path = CAFE_NFC if k not in LINUX or self.rng.random() < 0.6 else CAFE_NFD
        self.write(k, path, self.unique(f"{path} by {self.names[k]}"))

    def op_case_rename(self, k: int) -> None:
        """Case.txt <-> case.txt, bytes unchanged; or a first write of one of them."""
        have = [p for p in CASED if self.read(k, p) is not None]
        if len(have) != 1:
            if not have:
                self.write(k, self.rng.choice(CASED), self.unique(f"cased by {self.names[k]}"))
            return
        src = have[0]
        dst = CASED[1 - CASED.index(src)]
        data = self.read(k, src)
        os.rename(self.roots[k] / src, self.roots[k] / dst)
        self.lineage.wrote(k, dst, data)
        self.owed[data] = dst

    def op_chmod_x(self, k: int) -> None:
        path = self.rng.choice(SYNCED[:3])
        full = self.roots[k] / path
        if self.read(k, path) is not None and self.free(k, path):
            full.chmod(full.stat().st_mode & 0o777 ^ 0o111)

    def op_lock(self, k: int) -> None:
        """chmod 000 for a few rounds (Linux replicas: a FUSE server reads as root whatever the mode)."""
        have = [p for p in SYNCED[:3] if self.read(k, p) is not None and self.free(k, p)]
        if k in LINUX and have:
            full = self.roots[k] / self.rng.choice(have)
            # rounds left * 1000 + the mode to give back
            self.locked[(k, os.path.relpath(full, self.roots[k]))] = \
                self.rng.randint(*LOCKED_ROUNDS) * 1000 + (full.stat().st_mode & 0o777)
            full.chmod(0)
            self.counts["locks"] += 1
            try:
                full.read_bytes()
            except PermissionError:
                self.counts["unreadable"] += 1  # as it must be (else the soak has root's power)

    def op_odd_name(self, k: int) -> None:
        if k in LINUX:
            path = self.rng.choice([*ODD, RAW, RAW, RAW])  # half of them: the name that syncs
            data = self.unique(f"{path} by {self.names[k]}")
            if path == RAW:
                if self.free(k, path):
                    self.write(k, path, data)
                    self.counts["not_utf8_writes"] += 1
                return
            (self.roots[k] / path).write_bytes(data)
            self.odd_made[(k, path)] = data

    def tick(self) -> None:
        """A round passed: files locked long enough become readable again (their old mode)."""
        for (k, path), left in list(self.locked.items()):
            if left >= 2000:
                self.locked[(k, path)] = left - 1000
            else:
                os.chmod(self.roots[k] / path, left % 1000)
                del self.locked[(k, path)]

    def unlock_all(self) -> None:
        for (k, path), left in self.locked.items():
            os.chmod(self.roots[k] / path, left % 1000)
        self.locked.clear()

    def op_link(self) -> None:
        """On any replica: create the link, retarget it, or delete it."""
        k = self.link_rng.randrange(N)
        full = self.roots[k] / LINK
        if os.path.lexists(full):
            os.unlink(full)
            if self.link_rng.random() < 0.3:
                return  # deleted
        full.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.link_rng.choice(LINK_TARGETS), full)
        self.counts["link_ops"] += 1

    def random_op(self) -> None:
        if self.link_rng.random() < 0.1:
            self.op_link()
        k = self.rng.randrange(N)
        weights = [w for w, _ in self.ops]
        op = self.rng.choices([f for _, f in self.ops], weights)[0]
        self.op_counts[op.__name__] = self.op_counts.get(op.__name__, 0) + 1
        op(k)

    # -- syncing ------------------------------------------------------------------------------------
    def snapshot(self, i: int, j: int) -> dict:
        return {(r, p): self.read(r, p) for r in (i, j) for p in SYNCED}

    def sync(self, i: int, j: int, final: bool = False) -> None:
        from peersync.sync.runner import run_sync
        from peersync.testing.inprocess import sync_local

        before = self.snapshot(i, j)
        if self.over_ssh:  # the agent on the other side over a real sshd, itself without DAC override
            [report] = run_sync(self.ws[i], [self.names[j]])
        else:
            report = sync_local(self.ws[i], self.ws[j], name=self.names[j])
        assert report.ok, f"{self.names[i]}<->{self.names[j]}: {report.error}"
        self.counts["syncs"] += 1
        self.counts["problems"] += len(report.problems)
        self.counts["clash_reports"] += sum("clash" in p.message for p in report.problems)
        self.counts["not_utf8_reports"] += sum("not valid UTF-8" in p.message for p in report.problems)
        if final:
            for p in report.problems:
                for k in (i, j):  # a clash names both paths
                    self.last_problems[k] |= {p.path, *(_quoted_paths(p.message) if "clash" in p.message else ())}
        self.lineage.synced((i, j), before, self.snapshot(i, j),
                            [(c.path, c.kept) for c in report.conflicts if c.kept in ("local", "remote")],
                            label=f"{self.names[i]}<->{self.names[j]}")

    def random_sync(self) -> None:
        i, j = self.rng.sample(range(N), 2)
        self.sync(i, j)

    # -- the end ------------------------------------------------------------------------------------
    def kept_somewhere(self) -> set[bytes]:
        out = set()
        for root in self.roots:
            for place in ("conflicts", "trash"):
                top = root / "memory/clawdbot-sync" / place
                if top.is_dir():
                    out |= {p.read_bytes() for p in top.rglob("*") if p.is_file() and p.name != "index.json"}
        return out

    def verdict(self) -> dict:
        """What the test asserts, as data (the soak runs in a child process)."""
        trees = [self.tree(k) for k in range(N)]
        odd = {p for p in ODD}
        linux = [{p: v for p, v in trees[k].items() if p not in odd} for k in LINUX]
        diverged = []
        for k in LINUX[1:]:
            for p in sorted(set(linux[0]) | set(linux[k]), key=repr):
                if linux[0].get(p) != linux[k - LINUX[0]].get(p):
                    diverged.append([repr(p), self.names[0], self.names[k]])
        unrepresented = []
        for k, fold in ((3, str.casefold), (4, lambda s: unicodedata.normalize("NFC", s))):
            mine = {fold(p) if k == 3 else self.key(k, p): v for p, v in trees[k].items()}
            groups: dict[str, list[str]] = {}
            for p in linux[0]:
                if p != RAW:  # compared below: never on a Mac-like volume
                    groups.setdefault(fold(p), []).append(p)
            for folded, paths in groups.items():
                if len(paths) > 1:
                    self.counts["clash_groups"] += 1
                    reported = all(p in self.last_problems[k] for p in paths)
                    if not reported:
                        unrepresented.append([repr(paths), self.names[k], "not reported"])
                    continue
                [p] = paths
                got = mine.get(fold(p) if k == 3 else p)
                self.counts["mac_files_compared"] += 1
                if got != linux[0][p]:
                    diverged.append([repr(p), self.names[0], self.names[k]])
        live = {v[0] for t in trees for v in t.values() if v[0] is not None}
        kept = self.kept_somewhere()
        lost = [repr(p) for v, p in self.owed.items() if v not in live and v not in kept]
        odd_wrong = [repr(p) for (k, p), data in self.odd_made.items() if trees[k].get(p, (None,))[0] != data]
        odd_spread = [repr(p) for k in range(N) for p in trees[k] if p in odd and (k, p) not in self.odd_made]
        raw_on_mac = [self.names[k] for k in (3, 4) if any(not p.isascii() and "\udce9" in p for p in trees[k])]
        if RAW in linux[0] and not self.counts["not_utf8_reports"]:
            unrepresented.append([repr(RAW), "Mac-like replicas", "not reported"])
        return {"diverged": diverged, "unreported": unrepresented, "raw_on_mac": raw_on_mac, "lost": lost, "odd_wrong": odd_wrong,
                "odd_spread": odd_spread, "spurious": [repr(s) for s in self.lineage.spurious],
                "reverts": [repr(r) for r in self.lineage.reverts], "conflicts": self.lineage.conflicts,
                "counts": self.counts, "ops": self.op_counts, "files": len(linux[0])}

def _quoted_paths(message: str) -> list[str]:
    """Paths named in a problem message ('a' and 'b', or memory/x and memory/y)."""
    import re

    return [m.group(1) or m.group(2) for m in re.finditer(r"'([^']+)'|(memory/\S+?)(?=[\s,;:)]|$)", message)]


def run(roots: list[Path], rounds: int, seed: int, over_ssh: bool = False) -> dict:
    soak = Soak(roots, random.Random(seed), random.Random(seed + 1), over_ssh=over_ssh)
    for _ in range(rounds):
        for _ in range(soak.rng.randrange(1, 3)):
            soak.random_op()
        soak.random_sync()
        soak.tick()
    soak.unlock_all()
    for final in range(FINAL_ROUNDS):
        for i in range(N):
            for j in range(N):
                if i != j:
                    soak.sync(i, j, final=final == FINAL_ROUNDS - 1)
    return soak.verdict()


@pytest.mark.parametrize("transport", ["inprocess", "sshd"])
def test_five_machines_with_real_file_systems_converge_and_lose_nothing(tmp_path, fuse_volume, request, transport):
    casefold, nfd = fuse_volume("casefold"), fuse_volume("nfd")
    roots = [tmp_path / f"m{k}" for k in LINUX] + [casefold.path / "m3", nfd.path / "m4"]
    rounds, seed = (ROUNDS, SEED) if transport == "inprocess" else (SSHD_ROUNDS, SSHD_SEED)
    if transport == "sshd":
        # Every machine knows every other as a peer over the loopback sshd; the agent each sync starts
        # there runs without root's DAC override too (a chmod-000 file is unreadable to it as well).
        from peersync.testing.pair import default_remote_command, wire_pair

        sshd = request.getfixturevalue("sshd")
        command = " ".join([*OWNER_ONLY, default_remote_command()])
        for i in range(N):
            for j in range(i + 1, N):
                wire_pair(roots[i], roots[j], sshd, command=command, peer_name=roots[j].name, back_name=roots[i].name)
    proc = subprocess.run([*OWNER_ONLY, sys.executable, __file__, str(rounds), str(seed), transport, *map(str, roots)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nrealfs mesh ({transport}): {rounds} rounds, seed {seed}: {out['counts']}, {out['conflicts']} conflicts, "
          f"{len(out['spurious'])} spurious; ops {out['ops']}; {out['files']} files")
    assert out["counts"]["unreadable"] == out["counts"]["locks"], "a chmod-000 file was still readable"
    assert not out["diverged"], f"replicas differ: {out['diverged'][:5]}"
    assert not out["unreported"], f"names a replica cannot hold, not reported as a clash: {out['unreported'][:5]}"
    assert not out["lost"], f"versions lost: {out['lost'][:5]}"
    assert not out["odd_wrong"] and not out["odd_spread"], (out["odd_wrong"], out["odd_spread"])
    assert not out["raw_on_mac"], f"a name that is not UTF-8 reached a Mac-like volume: {out['raw_on_mac']}"
    assert not out["spurious"], f"conflicts whose loser the winner had seen: {out['spurious'][:5]}"
    assert not out["reverts"], f"versions replaced by one of their own ancestors: {out['reverts'][:5]}"


if __name__ == "__main__":  # the soak itself, in the child process (see the module's docstring)
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ["PEERSYNC_KEEP_CONNECTION"] = "0"
    print(json.dumps(run([Path(r) for r in sys.argv[4:]], int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "sshd")))
