"""Connection keepers (peersync/daemons/keeper.py): a warm sync goes through the keeper and behaves exactly
like a direct one; a client killed mid-sync leaves the keeper's agent reset (lock released,
staging dropped); keepers go away when idle, when their workspace goes, and on SIGTERM; a busy or
dead keeper only means a direct connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peersync.errors import ConfigError
from peersync.sync.runner import run_sync
from peersync.testing import generate, selection_files, wire_pair
from peersync.transport import keeper
from peersync.transport.keeper import ENV_KEEP, runtime_dir
from peersync.transport.ssh import attach
from peersync.workspace.workspace import Workspace

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def keep(monkeypatch):
    monkeypatch.setenv(ENV_KEEP, "60")


@pytest.fixture
def pair(tmp_path, sshd, keep):
    p = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    yield p
    for pid in keepers_of(p.local):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not keepers_of(p.local), 20)


def keepers_of(ws: Workspace) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"keeper" in argv and str(ws.root).encode() in argv:
            out.append(int(entry))
    return out


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def socket_of(p) -> Path:
    peer = p.peer()
    return keeper.socket_path(p.local, peer, peer.path)


def sync(ws: Workspace, peer: str = "remote"):
    [report] = run_sync(ws, [peer])
    assert report.error is None, report.error
    return report


def attachable(p) -> bool:
    import asyncio

    async def once():
        session = await attach(p.local, p.peer(), p.peer().path, 10)
        if session is not None:
            await session.close()
        return session is not None

    return asyncio.run(once())


def warm_up(p) -> None:
    first = sync(p.local)
    assert not first.warm
    assert wait_until(lambda: keeper._alive(socket_of(p)), 30), "no keeper came up after the first sync"


def test_a_second_sync_goes_through_the_keeper_and_converges(pair):
    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    generate(pair.local.root, files=300, seed=1)
    generate(pair.remote.root, files=300, seed=2)
    (pair.local.root / "memory").mkdir(exist_ok=True)
    (pair.local.root / "memory" / "big.bin").write_bytes(os.urandom(3 << 20))  # the rsync path
    report = sync(pair.local)
    assert report.warm and report.pushed and report.pulled
    assert selection_files(pair.local) == selection_files(pair.remote)
    assert [os.getpid()] and len(keepers_of(pair.local)) == 1
    # The peer's lock was released when the client went: the peer can sync back at once.
    (pair.remote.root / "USER.md").write_text("from the peer\n")
    sync(pair.remote, "local")
    again = sync(pair.local)
    assert again.warm and not again.changed
    assert selection_files(pair.local) == selection_files(pair.remote)


def test_a_client_killed_mid_sync_leaves_the_keeper_usable(pair):
    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    generate(pair.local.root, files=3000, seed=3)
    for attempt, delay in enumerate((0.15, 0.4, 0.8)):
        (pair.local.root / "memory" / f"kill-{attempt}.md").write_text("x" * 100_000)
        proc = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(pair.local.root), "sync", "remote"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert keepers_of(pair.local), "the keeper must survive its client being killed"
    # It finishes the killed client's last request, resets the agent, and is free again.
    assert wait_until(lambda: attachable(pair), 30)
    report = sync(pair.local)  # would be "busy" if the peer still held the killed run's lock
    assert report.warm
    assert selection_files(pair.local) == selection_files(pair.remote)
    staging = pair.remote.state / "staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_a_busy_keeper_means_a_direct_connection(pair):
    import asyncio

    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    peer = pair.peer()

    async def two():
        first = await attach(pair.local, peer, peer.path, 10)
        second = await attach(pair.local, peer, peer.path, 10)
        try:
            assert first is not None and second is None
        finally:
            await first.close()
        third = await attach(pair.local, peer, peer.path, 10)  # free again
        assert third is not None
        await third.close()

    asyncio.run(two())


def test_a_dead_keepers_socket_is_replaced(pair):
    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    [pid] = keepers_of(pair.local)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not keepers_of(pair.local), 10)
    assert socket_of(pair).exists()  # left behind by the kill
    report = sync(pair.local)
    assert not report.warm  # direct, and a new keeper takes over the name
    assert wait_until(lambda: keeper._alive(socket_of(pair)), 30)
    assert sync(pair.local).warm


def test_keepers_leave_when_idle_when_the_workspace_goes_and_on_sigterm(tmp_path, sshd, monkeypatch):
    monkeypatch.setenv(ENV_KEEP, "1")
    idle = wire_pair(tmp_path / "a", tmp_path / "b", sshd)
    sync(idle.local)
    assert wait_until(lambda: not keepers_of(idle.local) and not socket_of(idle).exists(), 30)

    monkeypatch.setenv(ENV_KEEP, "60")
    gone = wire_pair(tmp_path / "c", tmp_path / "d", sshd)
    warm_up(gone)
    path = socket_of(gone)
    import shutil

    shutil.rmtree(gone.local.root)
    assert wait_until(lambda: not keepers_of(gone.local) and not path.exists(), 30)

    term = wire_pair(tmp_path / "e", tmp_path / "f", sshd)
    warm_up(term)
    for pid in keepers_of(term.local):
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not keepers_of(term.local) and not socket_of(term).exists(), 30)


def test_a_keeper_signalled_as_its_socket_appears_still_removes_it(tmp_path, sshd, keep):
    """SIGTERM at the first moment the socket's name exists (a probe, `stop` or a shutdown can
    come then): the keeper exits and takes the name with it, as it does later in its life."""
    p = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    peer = p.peer()
    path = socket_of(p)
    for _ in range(3):
        assert keeper.spawn(p.local, peer, peer.path, 60)
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert path.exists(), "the keeper never made its socket"
        pids = keepers_of(p.local)
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not keepers_of(p.local), 30), "the keeper did not exit"
        assert not path.exists(), "the keeper left its socket behind"


def test_keep_connection_zero_starts_no_keeper(tmp_path, sshd, monkeypatch):
    monkeypatch.delenv(ENV_KEEP)
    p = wire_pair(tmp_path / "local", tmp_path / "remote", sshd)
    p.local.config_file.parent.mkdir(parents=True, exist_ok=True)
    p.local.config_file.write_text("sync:\n  keep_connection: 0\n")
    sync(p.local)
    time.sleep(1)
    assert not keepers_of(p.local)
    assert not sync(p.local).warm


@pytest.mark.parametrize("value", ["'soon'", "-5", "true"])
def test_a_bad_keep_connection_is_a_config_error(tmp_path, value):
    ws = Workspace(tmp_path)
    ws.ensure_state()
    ws.config_file.write_text(f"sync:\n  keep_connection: {value}\n")
    with pytest.raises(ConfigError, match="keep_connection"):
        ws.sync_config()


def test_no_keeper_when_the_socket_directory_is_not_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    shared = tmp_path / f"peersync-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert runtime_dir() is None
    shared.chmod(0o700)
    assert runtime_dir() == shared


# -- the CLI fast path: a warm keeper runs the whole sync (quick.py) ------------------------------
def cli(ws: Workspace, *args: str):
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)


def test_the_fast_path_prints_reports_a_keeper_did_not_render():
    """A keeper sends its reports rendered (quick.py then imports no renderer); one that does not —
    started by a peersync whose code stamp did not change with an upgrade — still gets them
    printed exactly as the CLI prints them."""
    from peersync.cli import quick
    from peersync.core.render import reports_text
    from peersync.core.types import Mode, Problem, Report

    reports = [Report("mac-mini", "mini", Mode.SYNC, pushed=["MEMORY.md"], problems=[Problem("x.md", "cannot read")],
                      in_keeper=True),
               Report("server", "srv", Mode.SYNC, error="connection refused", error_exit=3, error_kind="connect")]
    text = quick._render([r.to_json() for r in reports], [r.error_exit for r in reports])
    assert text == reports_text(reports) and "MEMORY.md" in text and "connection refused" in text


def test_the_cli_sync_runs_in_the_keeper_and_says_so(pair):
    import json

    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    (pair.local.root / "USER.md").write_text("pushed by the keeper\n")
    (pair.remote.root / "memory").mkdir(exist_ok=True)
    (pair.remote.root / "memory" / "there.md").write_text("pulled by the keeper\n")
    dry = cli(pair.local, "--json", "sync", "remote", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    [report] = json.loads(dry.stdout)["reports"]
    assert report["in_keeper"] and report["dry_run"] and report["pushed"] == ["USER.md"]
    assert not (pair.remote.root / "USER.md").exists()  # a dry run changes nothing
    out = cli(pair.local, "sync")
    assert out.returncode == 0, out.stderr
    assert "USER.md" in out.stdout and "memory/there.md" in out.stdout
    assert selection_files(pair.local) == selection_files(pair.remote)
    last = pair.local.history()[0]
    assert last["in_keeper"] and last["ok"]
    # The peer's lock was released: it can sync back at once, and a second run is a no-op.
    sync(pair.remote, "local")
    again = json.loads(cli(pair.local, "--json", "sync").stdout)["reports"][0]
    assert again["in_keeper"] and not again["pushed"] and not again["pulled"]


def test_a_failed_sync_in_the_keeper_keeps_its_exit_code_and_message(pair):
    (pair.local.root / "MEMORY.md").write_text("first\n")
    for i in range(10):
        (pair.local.root / "memory").mkdir(exist_ok=True)
        (pair.local.root / "memory" / f"n{i}.md").write_text(f"{i}\n")
    warm_up(pair)
    for i in range(10):
        (pair.local.root / "memory" / f"n{i}.md").unlink()
    out = cli(pair.local, "sync")  # the mass-delete guard stops it, in the keeper as in-process
    assert out.returncode == 1 and "--force" in out.stdout + out.stderr, out.stdout + out.stderr
    assert pair.local.history()[0]["in_keeper"]
    assert len(list((pair.remote.root / "memory").glob("n*.md"))) == 10
    forced = cli(pair.local, "sync", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert not list((pair.remote.root / "memory").glob("n*.md"))


def test_what_the_fast_path_does_not_take_runs_in_process(pair):
    from peersync.cli.quick import parse

    assert parse(["-w", "/x", "--json", "sync", "mini", "-n"])["peer"] == "mini"
    assert parse(["sync", "a", "b"]) is None  # several peers: concurrent runs in-process
    assert parse(["--debug", "sync"]) is None
    assert parse(["push", "--policy", "local"]) is None  # push/pull take no policy
    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    out = cli(pair.local, "--debug", "sync", "remote")
    assert out.returncode == 0, out.stderr
    assert not pair.local.history()[0]["in_keeper"] and pair.local.history()[0]["warm_connection"]


def test_a_keeper_whose_connection_died_hands_the_run_back(pair):
    import json

    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    agents = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
              if b"agent" in _argv(pid) and str(pair.remote.root).encode() in _argv(pid)]
    assert agents, "the keeper's agent should be running"
    for pid in agents:
        os.kill(pid, signal.SIGKILL)
    (pair.local.root / "USER.md").write_text("after the agent died\n")
    out = cli(pair.local, "--json", "sync")
    assert out.returncode == 0, out.stdout + out.stderr
    [report] = json.loads(out.stdout)["reports"]
    assert not report["in_keeper"] and report["pushed"] == ["USER.md"]
    assert selection_files(pair.local) == selection_files(pair.remote)


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def test_the_peers_housekeeping_runs_in_the_keeper_after_the_report(pair):
    """The client does not wait for the peer's housekeeping (a round trip between machines): the
    keeper makes it once the report is sent, before the agent's reset — still done every time."""
    import json

    (pair.local.root / "MEMORY.md").write_text("first\n")
    warm_up(pair)
    trash = pair.remote.state / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    marker = pair.remote.state / "trash.purged"  # touched by a housekeeping that looked at the trash
    marker.unlink(missing_ok=True)
    (pair.local.root / "USER.md").write_text("pushed by the keeper\n")
    out = cli(pair.local, "--json", "sync")  # the CLI's sync runs in the keeper (quick.py)
    assert out.returncode == 0, out.stderr
    [report] = json.loads(out.stdout)["reports"]
    assert report["in_keeper"] and report["pushed"] == ["USER.md"]
    assert wait_until(marker.exists, 30), "the peer's housekeeping never ran"
    # The keeper is free again: it reset the agent after the housekeeping.
    again = json.loads(cli(pair.local, "--json", "sync").stdout)["reports"][0]
    assert again["in_keeper"] and not again["pushed"] and not again["pulled"]


def test_the_keepers_hello_lock_and_selection_go_out_before_the_hello_is_answered(pair, wire_events):
    """On a tailnet each round trip a warm sync waits for shows (scripts/bench_rtt.py): the timed
    hello (the clock offset) is sent first and the run's lock and selection right behind it; the
    agent answers them in order, and the run's clock offset is the one measured now."""
    import asyncio

    from peersync.daemons.keeper import Keeper
    from peersync.transport import ssh
    from peersync.transport.protocol import decode

    (pair.local.root / "MEMORY.md").write_text("x\n")
    events = wire_events

    class Writer:
        def __init__(self):
            self.data = b""

        def write(self, data):
            self.data += data

        async def drain(self):
            pass

    async def one_run():
        peer = pair.peer()
        kept = Keeper(pair.local, peer, peer.path, 60, pair.local.state / "keeper-test.sock")
        kept.session = await ssh.open_session(pair.local, peer, timeout=15.0, root=peer.path)
        try:
            kept.session.offset = 1234.0  # the connection's first measure: a run must measure anew
            writer = Writer()
            events.clear()  # (the connection's own hello)
            await kept._run({"id": 1, "op": "run", "args": {}}, writer)
            return decode(writer.data.split(b"\n", 1)[0])
        finally:
            await kept.session.close()

    reply = asyncio.run(one_run())
    assert reply["ok"], reply
    [report] = reply["reports"]
    assert report["in_keeper"] and report["pushed"] == ["MEMORY.md"]
    assert abs(report["clock_offset"]) < 5  # this run's hello, not the connection's first
    assert (pair.remote.root / "MEMORY.md").read_text() == "x\n"
    order = [e for e in events if e[1] in ("hello", "lock", "selection")]
    assert order == [("sent", "hello"), ("sent", "lock"), ("sent", "selection"),
                     ("answered", "hello"), ("answered", "lock"), ("answered", "selection")], events


def test_a_keeper_warms_both_sides_up_as_soon_as_it_is_connected(pair, wire_events):
    """Right after connecting, the keeper has the peer's agent and its own side read what a sync
    reads and set their watches up (Handler.warm), holding `serving` for the peer's part; an agent
    that does not know `warm` (an older peersync) changes nothing: the next sync does it all."""
    import asyncio

    from peersync.daemons.keeper import Keeper
    from peersync.errors import PeersyncError
    from peersync.replica import watched
    from peersync.transport import ssh

    (pair.local.root / "MEMORY.md").write_text("x\n")
    sync(pair.local)  # an ancestor on both sides: the warm-up reads it
    events = wire_events

    async def warm(refused: bool):
        peer = pair.peer()
        kept = Keeper(pair.local, peer, peer.path, 60, pair.local.state / "keeper-test.sock")
        kept.session = await ssh.open_session(pair.local, peer, timeout=15.0, root=peer.path)
        try:
            if refused:
                real = kept.session.request

                async def older(op, **args):
                    if op == "warm":
                        raise PeersyncError("remote failed 'warm': unknown operation 'warm'")
                    return await real(op, **args)
                kept.session.request = older
            events.clear()
            await kept._warm()
            assert not kept.serving.locked()
            return await kept.session.request("scan")  # the connection still serves a sync
        finally:
            await kept.session.close()

    try:
        scanned = asyncio.run(warm(refused=False))
        assert [e for e in events if e[1] in ("selection", "warm")] == [
            ("sent", "selection"), ("answered", "selection"), ("sent", "warm"), ("answered", "warm")], events
        assert "MEMORY.md" in scanned["entries"]
        assert os.path.realpath(pair.local.root) in watched._SCANNED  # our side: watched from its first scan
        assert "MEMORY.md" in asyncio.run(warm(refused=True))["entries"]
    finally:
        watched.forget_all()
