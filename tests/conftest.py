"""Shared fixtures: a real OpenSSH server on loopback, and two workspaces wired to each other as peers.

The logic lives in peersync.testing (the README demo uses it too); helpers for tests:
`from peersync.testing import tree_digest, selection_files, generate, mutate`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from peersync.testing import (
    LoopbackSSHD,
    SSHDError,
    WorkspacePair,
    default_remote_command,
    wire_pair,
)
from peersync.testing.trees import selection_files, tree_digest  # noqa: F401  (re-exported for tests)

# No connection keepers (peersync/daemons/keeper.py) unless a test asks for one: each would outlive its
# test by up to ten minutes.  tests/test_keeper.py turns them on.
os.environ["PEERSYNC_KEEP_CONNECTION"] = "0"

# Property tests check what happens, never how long one example takes: hypothesis's default limit
# of 200 ms per example is a timed test on a shared, loaded machine.
settings.register_profile("peersync", deadline=None)
settings.load_profile("peersync")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> LoopbackSSHD:
    """One real sshd on 127.0.0.1 for the whole run; see LoopbackSSHD for its attributes."""
    server = LoopbackSSHD(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except SSHDError as err:
        pytest.fail(f"cannot start the loopback sshd: {err}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def remote_command() -> str:
    """The peers' `command`: this interpreter with `-m peersync` (SSH sessions have a thin PATH)."""
    return default_remote_command()


@pytest.fixture
def workspace_pair(tmp_path, sshd, remote_command) -> WorkspacePair:
    """Empty workspaces tmp_path/local and tmp_path/remote; local has peer "remote", remote has
    peer "local", both through the loopback sshd."""
    return wire_pair(tmp_path / "local", tmp_path / "remote", sshd, command=remote_command)


# -- Mac-like volumes (FUSE) ----------------------------------------------------------------------

def _fuse_or_skip() -> None:
    """Skip only when this machine truly cannot mount FUSE; under CI that is a failure instead."""
    from peersync.testing.fusefs import fuse_unavailable

    reason = fuse_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"FUSE volumes are required on CI: {reason}", pytrace=False)
    pytest.skip(f"no FUSE here: {reason}")


@pytest.fixture
def fuse_volume(tmp_path):
    """Factory: `fuse_volume("apfs" | "hfs" | "casefold" | "nfd")` mounts a Mac-like volume under
    tmp_path and returns its peersync.testing.fusefs.Volume (`.path` the mount, `.backing` the
    directory it mirrors); every volume is unmounted when the test ends, pass or fail."""
    from contextlib import ExitStack

    from peersync.testing.fusefs import mounted

    _fuse_or_skip()
    with ExitStack() as stack:
        count = iter(range(1000))

        def mount(profile: str):
            n = next(count)
            return stack.enter_context(mounted(profile, tmp_path / f"{profile}-{n}.backing",
                                               tmp_path / f"{profile}-{n}"))

        yield mount


@pytest.fixture(scope="session")
def mac_volumes(tmp_path_factory):
    """One mounted volume of every profile for the whole run ({profile name: Volume}); tests take a
    fresh directory inside one through `mac_dir`."""
    from contextlib import ExitStack

    from peersync.testing.fusefs import PROFILES, mounted

    _fuse_or_skip()
    base = tmp_path_factory.mktemp("mac-volumes")
    with ExitStack() as stack:
        yield {name: stack.enter_context(mounted(name, base / f"{name}.backing", base / name))
               for name in PROFILES}


@pytest.fixture
def mac_dir(mac_volumes, request):
    """Factory: `mac_dir("apfs")` is a new empty directory on the shared volume of that profile."""
    count = iter(range(1000))

    def make(profile: str) -> Path:
        path = mac_volumes[profile].path / f"{request.node.name[:60]}-{next(count)}"
        path.mkdir()
        return path

    return make


@pytest.fixture
def casefold_dir(fuse_volume):
    """A mounted case-insensitive, case-preserving volume (normalisation-sensitive): its path."""
    return fuse_volume("casefold").path


@pytest.fixture
def nfd_dir(fuse_volume):
    """A mounted case-sensitive volume that stores names in NFD (HFSX): its path."""
    return fuse_volume("nfd").path


@pytest.fixture
def apfs_dir(fuse_volume):
    """A mounted APFS-like volume (case- and normalisation-insensitive, preserving): its path."""
    return fuse_volume("apfs").path


@pytest.fixture
def hfs_dir(fuse_volume):
    """A mounted HFS+-like volume (case-insensitive, names stored NFD): its path."""
    return fuse_volume("hfs").path


@pytest.fixture
def wire_events(monkeypatch) -> list[tuple[str, str]]:
    """What this process's SSH sessions send and get answered, in order: ("sent" | "answered", op).
    For the round trips a sync waits for (scripts/bench_rtt.py counts them between machines)."""
    from peersync.transport import ssh
    from peersync.transport.protocol import op_of

    events: list[tuple[str, str]] = []
    send, receive = ssh.Session._send, ssh.Session._receive

    def sent(self, data):
        line = data.split(b"\n", 2)[1 if data.startswith(b"+") else 0] + b"\n"  # (a blob's frame: +N first)
        events.append(("sent", op_of(line)))
        return send(self, data)

    async def received(self, op):
        try:
            return await receive(self, op)
        finally:
            events.append(("answered", op))

    monkeypatch.setattr(ssh.Session, "_send", sent)
    monkeypatch.setattr(ssh.Session, "_receive", received)
    return events
