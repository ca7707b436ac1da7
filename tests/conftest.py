"""Shared fixtures: a real OpenSSH server on loopback, and two workspaces wired to each other as peers.

The logic lives in peersync.testing (the README demo uses it too); helpers for tests:
`from peersync.testing import tree_digest, selection_files, generate, mutate`.
"""

from __future__ import annotations

import os

import pytest

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
