"""peersync.discovery.discover and the `discover` command: selection, key pinning, registration, and
probes against a real loopback sshd through a fake tailscaled (all addresses 127.0.0.x)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fake_tailscale import (
    FakeAdminAPI,
    FakeTailscaled,
    admin_device,
    peer_status,
    self_status,
    status_document,
)
from typer.testing import CliRunner

from peersync import __version__
from peersync.discovery.discover import (
    AUTH,
    ERROR,
    HOST_KEY,
    NO_PEERSYNC,
    NO_WORKSPACE,
    OFFLINE,
    OK,
    TIMEOUT,
    UNREACHABLE,
    Discovery,
    Probe,
    ProbeOptions,
    classify,
    discover,
    host_keys,
    known_hosts_lines,
    plan_additions,
    register,
    select,
    trust_hint,
)
from peersync.discovery.tailscale import Device, TailscaleUnavailable
from peersync.errors import ConnectError
from peersync.testing import default_remote_command
from peersync.workspace.workspace import Peer, Workspace

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMjrqVZLIlMXriSP7clAfeBR3HxupjO8YzPUXdcAq+A8"
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOZceMSHz5HS7pQFhXS2fo2MFQ2n"
         "08awb3oiT8/9pnu68T4/+9x5QKBb8P149cFeVFvIgthb4mdwIvjFW3dQh+Q=")


def dev(name: str, ip: str | None = "127.0.0.1", *, online=True, tags=(), keys=(), is_self=False) -> Device:
    return Device(name=name, dns_name=f"{name}.tail4f2c1.ts.net", ips=(ip,) if ip else (), ipv4=ip,
                  os="linux", online=online, tags=tuple(tags), ssh_host_keys=tuple(keys), self=is_self)


# -- pure parts ------------------------------------------------------------------------------
def test_select_skips_this_machine_and_offline_devices_and_filters_by_tag():
    devices = [dev("laptop", "127.0.0.9", is_self=True), dev("mini", tags=["tag:peersync"]),
               dev("server", "127.0.0.2"), dev("pi", "127.0.0.3", online=False, tags=["tag:peersync"])]
    assert [d.name for d in select(devices)] == ["mini", "server"]
    assert [d.name for d in select(devices, include_offline=True)] == ["mini", "server", "pi"]
    assert [d.name for d in select(devices, tag="peersync")] == ["mini"]
    assert [d.name for d in select(devices, tag="tag:peersync", include_offline=True)] == ["mini", "pi"]


@pytest.mark.parametrize("reported, kept", [
    ([ED25519], (ED25519,)),
    ([ED25519 + " root@mini"], (ED25519,)),  # comments are dropped
    ([ED25519, ED25519], (ED25519,)),
    ([ED25519 + "\n* " + OTHER_KEY], ()),  # a smuggled second line
    (["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV"], ()),  # not a key
    (["@cert-authority * " + ED25519], ()),  # markers or host patterns
    (["ssh-dss AAAAB3NzaC1kc3M="], ()),
    ([ECDSA, OTHER_KEY], (ECDSA, OTHER_KEY)),
], ids=["plain", "comment", "duplicate", "newline", "truncated", "marker", "dss", "two-types"])
def test_host_keys_keep_only_well_formed_key_lines(reported, kept):
    assert host_keys(dev("mini", keys=reported)) == kept


def test_known_hosts_lines_pin_the_ip_and_the_port_form():
    assert known_hosts_lines("100.64.0.7", (ED25519,), None) == [f"100.64.0.7 {ED25519}"]
    assert known_hosts_lines("100.64.0.7", (ED25519, OTHER_KEY), 2222) == [
        f"100.64.0.7 {ED25519}", f"100.64.0.7 {OTHER_KEY}",
        f"[100.64.0.7]:2222 {ED25519}", f"[100.64.0.7]:2222 {OTHER_KEY}"]


def test_trust_hint_says_to_check_the_fingerprint_then_keyscan():
    hint = trust_hint(dev("mini", "100.64.0.7"), 2222)
    assert "fingerprint" in hint and "ssh-keyscan -p 2222 100.64.0.7 >> ~/.ssh/known_hosts" in hint
    assert "ssh-keyscan 100.64.0.7 >>" in trust_hint(dev("mini", "100.64.0.7"), None)


@pytest.mark.parametrize("message, outcome", [
    ("SSH key refused by root@127.0.0.1:2222", AUTH),
    ("cannot reach mini at root@127.0.0.1:22: timed out after 5 s", TIMEOUT),
    ("cannot reach mini at root@127.0.0.2:22: Connection refused", UNREACHABLE),
    ("peersync is not installed on mini (or not on its non-interactive PATH)", NO_PEERSYNC),
    ("the peersync agent on mini did not start: usage error", NO_PEERSYNC),
    ("something new", ERROR),
])
def test_connection_errors_are_named(message, outcome):
    assert classify(ConnectError(message)) == outcome


def test_an_error_kind_wins_over_the_words():
    err = ConnectError("cannot reach mini: Connection refused")
    err.kind = AUTH
    assert classify(err) == AUTH


OPTS = ProbeOptions(user="agent", path="/srv/agent", port=2222, identity="/keys/id", command="peersync")
NOW = "2026-01-26T10:00:00+00:00"


def ok(device: Device, instance="abc123") -> Probe:
    return Probe(device, OK, version="0.1.0", root="/srv/agent", instance_id=instance)


@pytest.mark.parametrize("existing, probe, added, skipped", [
    ({}, ok(dev("mini", keys=[ED25519])), [("mini", "127.0.0.1", True, False)], []),
    ({}, ok(dev("mini")), [("mini", "127.0.0.1", False, False)], []),
    ({}, Probe(dev("mini"), UNREACHABLE, reason="unreachable"), [], []),
    ({"mini": Peer("mini", "127.0.0.1", added_at="2025-01-01")}, ok(dev("mini", keys=[ED25519])),
     [("mini", "127.0.0.1", True, True)], []),
    ({"mini": Peer("mini", "192.168.1.5")}, ok(dev("mini")), [], [("mini", "already exists with host 192.168.1.5")]),
    ({"mac": Peer("mac", "127.0.0.1")}, ok(dev("mini")), [], [("mini", "already configured as peer mac")]),
], ids=["new-pinned", "new-no-keys", "unreachable", "refresh", "name-taken", "host-taken"])
def test_plan_additions(tmp_path, existing, probe, added, skipped):
    peers, got, left = plan_additions([probe], existing, OPTS, tmp_path / "kh", NOW)
    assert [(a.peer.name, a.peer.host, a.peer.known_hosts is not None, a.updated) for a in got] == added
    assert len(left) == len(skipped)
    assert all(name == want_name and words in why for (name, why), (want_name, words) in zip(left, skipped))
    for item in got:
        peer = peers[item.peer.name]
        assert (peer.user, peer.path, peer.port, peer.identity, peer.command) == (
            "agent", "/srv/agent", 2222, "/keys/id", "peersync")
        assert peer.extra["instanceId"] == "abc123"
        assert peer.added_at == (existing[peer.name].added_at if item.updated else NOW)
        assert peer.known_hosts in (None, str(tmp_path / "kh" / peer.name))
    for name, old in existing.items():
        if not added or added[0][0] != name:
            assert peers[name] == old  # never rewired


def test_register_writes_a_private_pinned_known_hosts_file_and_the_peer(tmp_path):
    ws = Workspace(tmp_path)
    device = dev("mini", "100.64.0.7", keys=[ED25519, "junk"])
    added, skipped = register(ws, [ok(device)], OPTS)
    assert skipped == [] and added[0].pinned[0].startswith("SHA256:")
    path = ws.state / "known_hosts.d" / "mini"
    assert path.read_text() == f"100.64.0.7 {ED25519}\n[100.64.0.7]:2222 {ED25519}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    peer = ws.peer("mini")
    assert peer.host == "100.64.0.7" and peer.known_hosts == str(path)
    raw = json.loads(ws.peers_file.read_text())["peers"]["mini"]
    assert raw["knownHosts"] == str(path) and raw["instanceId"] == "abc123" and raw["port"] == 2222


def test_discovery_json_lists_every_device_with_its_probe():
    probes = (ok(dev("mini")), Probe(dev("server", "127.0.0.2"), UNREACHABLE, reason="unreachable"))
    doc = Discovery(source="localapi", probes=probes).to_json()
    assert [d["name"] for d in doc["devices"]] == ["mini", "server"]
    assert doc["devices"][0]["peersync"] == {"status": "ok", "version": "0.1.0", "root": "/srv/agent",
                                             "reason": None, "hint": None}
    assert doc["devices"][1]["peersync"]["reason"] == "unreachable" and doc["added"] == []
    json.dumps(doc)


# -- against a fake tailscaled and a real sshd --------------------------------------------------
@pytest.fixture
def env(monkeypatch, tmp_path):
    """Isolated from any real Tailscale, API key and ~/.ssh; yields a short socket path."""
    sock_dir = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    monkeypatch.setenv("PEERSYNC_TAILSCALE_SOCKET", str(sock_dir / "tailscaled.sock"))
    monkeypatch.setenv("PEERSYNC_TAILSCALE_CLI", str(tmp_path / "absent-cli"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TAILSCALE_API_KEY", raising=False)
    monkeypatch.delenv("TAILSCALE_TAILNET", raising=False)
    yield sock_dir / "tailscaled.sock"
    shutil.rmtree(sock_dir, ignore_errors=True)


def real_host_key(server) -> str:
    """The sshd's public host key, as written in the fixture's known_hosts (`[host]:port TYPE KEY`)."""
    fields = Path(server.known_hosts).read_text().split()
    return f"{fields[1]} {fields[2]}"


def tailnet(server, *, keys="real") -> dict:
    key = {"real": [real_host_key(server)], "none": None, "other": [OTHER_KEY]}[keys]
    return status_document(self_status("laptop", "127.0.0.9"), [
        peer_status("mac-mini", "127.0.0.1", os_name="macOS", tags=["tag:peersync"], ssh_host_keys=key),
        peer_status("server", "127.0.0.2", tags=["tag:peersync"]),
        peer_status("old-pi", "127.0.0.3", online=False),
    ])


def options(server, remote_root: Path, **changes) -> ProbeOptions:
    base = dict(user=server.user, path=str(remote_root), port=server.port, identity=str(server.identity),
                command=default_remote_command(), timeout=5.0)
    return ProbeOptions(**{**base, **changes})


@pytest.fixture
def roots(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (local / "AGENTS.md").write_text("# an agent's workspace\n")
    return Workspace(local), remote


def test_discover_add_pins_tailscale_host_keys_and_the_peer_then_works(sshd, env, roots):
    ws, remote = roots
    with FakeTailscaled(tailnet(sshd), socket_path=env):
        result = asyncio.run(discover(ws, add=True, opts=options(sshd, remote)))
    by_name = {p.device.name: p for p in result.probes}
    assert set(by_name) == {"mac-mini", "server"}  # self and the offline device are not candidates
    assert by_name["mac-mini"].outcome == OK and by_name["mac-mini"].version == __version__
    assert by_name["server"].outcome == UNREACHABLE and by_name["server"].reason == "unreachable"
    assert [a.peer.name for a in result.added] == ["mac-mini"]

    peer = ws.peer("mac-mini")
    assert peer.host == "127.0.0.1" and peer.port == sshd.port and peer.path == str(remote)
    pinned = Path(peer.known_hosts)
    assert pinned == ws.state / "known_hosts.d" / "mac-mini"
    key = real_host_key(sshd)
    assert pinned.read_text() == f"127.0.0.1 {key}\n[127.0.0.1]:{sshd.port} {key}\n"

    # The saved peer connects with strict host-key checking against the pinned file alone.
    from peersync.transport.ssh import open_session

    async def hello():
        session = await open_session(ws, peer, timeout=10)
        try:
            return session.hello
        finally:
            await session.close()

    assert asyncio.run(hello())["workspace"] is True


def test_all_lists_offline_devices_without_probing_them(sshd, env, roots):
    ws, remote = roots
    with FakeTailscaled(tailnet(sshd), socket_path=env):
        result = asyncio.run(discover(ws, include_offline=True, tag="peersync", opts=options(sshd, remote)))
    assert sorted((p.device.name, p.outcome) for p in result.probes) == [("mac-mini", OK), ("server", UNREACHABLE)]
    with FakeTailscaled(tailnet(sshd), socket_path=env):
        result = asyncio.run(discover(ws, include_offline=True, opts=options(sshd, remote)))
    assert {p.device.name: p.outcome for p in result.probes}["old-pi"] == OFFLINE
    assert not ws.peers_file.exists()  # nothing registered without --add


def test_without_tailscale_keys_the_unknown_host_is_not_trusted_and_the_hint_says_how(sshd, env, roots):
    ws, remote = roots
    with FakeTailscaled(tailnet(sshd, keys="none"), socket_path=env):
        result = asyncio.run(discover(ws, add=True, tag="peersync", opts=options(sshd, remote)))
    mini = next(p for p in result.probes if p.device.name == "mac-mini")
    assert mini.outcome == HOST_KEY and mini.reason == "host key unknown"
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> ~/.ssh/known_hosts" in mini.hint
    assert result.added == () and not ws.peers_file.exists()


def test_a_host_key_other_than_the_one_tailscale_reports_is_refused(sshd, env, roots):
    ws, remote = roots
    with FakeTailscaled(tailnet(sshd, keys="other"), socket_path=env):
        result = asyncio.run(discover(ws, add=True, tag="peersync", opts=options(sshd, remote)))
    mini = next(p for p in result.probes if p.device.name == "mac-mini")
    assert mini.outcome == HOST_KEY and "does not match" in mini.reason
    assert result.added == ()


@pytest.mark.parametrize("change, outcome, words", [
    ("stranger-key", AUTH, "auth refused"),
    ("no-peersync", NO_PEERSYNC, "no peersync found"),
    ("no-workspace", NO_WORKSPACE, "no workspace at"),
])
def test_probe_failures_are_named(sshd, env, roots, tmp_path, change, outcome, words):
    ws, remote = roots
    if change == "stranger-key":
        stranger = tmp_path / "id_stranger"  # a key the server never authorized
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
        opts = options(sshd, remote, identity=str(stranger))
    elif change == "no-peersync":
        opts = options(sshd, remote, command=str(tmp_path / "nowhere" / "peersync"))
    else:
        opts = options(sshd, tmp_path / "missing-workspace")
    doc = status_document(self_status(), [peer_status("mac-mini", "127.0.0.1",
                                                      ssh_host_keys=[real_host_key(sshd)])])
    with FakeTailscaled(doc, socket_path=env):
        result = asyncio.run(discover(ws, add=True, opts=opts))
    (probe,) = result.probes
    assert probe.outcome == outcome and words in probe.reason
    assert result.added == ()


def test_a_host_that_never_speaks_ssh_times_out(env, roots):
    import socket

    ws, remote = roots
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (through the backlog) and never answers
    try:
        doc = status_document(self_status(), [peer_status("mac-mini", "127.0.0.1")])
        with FakeTailscaled(doc, socket_path=env):
            result = asyncio.run(discover(ws, opts=ProbeOptions(port=silent.getsockname()[1], timeout=1)))
    finally:
        silent.close()
    (probe,) = result.probes
    assert probe.outcome == TIMEOUT and probe.reason == "timed out"


def test_admin_api_adds_offline_devices_the_daemon_does_not_list(env, roots, tmp_path, monkeypatch):
    ws, remote = roots
    monkeypatch.setenv("TAILSCALE_API_KEY", "tskey-api-test")
    doc = status_document(self_status(), [peer_status("server", "127.0.0.2")])
    admin = [admin_device("server", "127.0.0.2", online=True),
             admin_device("nas", "127.0.0.4", online=False, os_name="linux")]
    with FakeTailscaled(doc, socket_path=env), FakeAdminAPI(tmp_path, admin) as api:
        async def go():
            async with api.client_session() as session:
                return await discover(ws, include_offline=True, api_session=session,
                                      opts=ProbeOptions(port=1, timeout=3))

        result = asyncio.run(go())
    assert result.source == "localapi+admin-api"
    assert [(p.device.name, p.outcome) for p in result.probes] == [("server", UNREACHABLE), ("nas", OFFLINE)]


def test_admin_api_alone_when_the_daemon_is_down(env, roots, tmp_path, monkeypatch):
    ws, _ = roots
    monkeypatch.setenv("TAILSCALE_API_KEY", "tskey-api-test")
    admin = [admin_device("nas", "127.0.0.4", online=False)]
    with FakeAdminAPI(tmp_path, admin) as api:
        async def go():
            async with api.client_session() as session:
                return await discover(ws, include_offline=True, api_session=session)

        result = asyncio.run(go())
    assert result.source == "admin-api" and [p.device.name for p in result.probes] == ["nas"]
    assert "could not read Tailscale's status" in result.notes[0]


def test_no_tailscale_and_no_api_key_is_an_error(env, roots):
    ws, _ = roots
    with pytest.raises(TailscaleUnavailable):
        asyncio.run(discover(ws))


# -- the command -------------------------------------------------------------------------------
def cli_args(server, ws: Workspace, remote: Path, *extra: str) -> list[str]:
    return ["-w", str(ws.root), *extra, "discover", "--user", server.user, "--port", str(server.port),
            "--identity", str(server.identity), "--path", str(remote),
            "--remote-command", default_remote_command(), "--timeout", "5"]


def test_cli_table_then_add(sshd, env, roots):
    from peersync.cli.main import app

    ws, remote = roots
    runner = CliRunner()
    with FakeTailscaled(tailnet(sshd), socket_path=env):
        shown = runner.invoke(app, cli_args(sshd, ws, remote))
        assert not ws.peers_file.exists()  # listing registers nothing
        print(shown.output)
        added = runner.invoke(app, cli_args(sshd, ws, remote, "--json") + ["--add", "--tag", "peersync"])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "🔎 2 device(s) on the tailnet, 1 with peersync" in text
    assert "mac-mini" in text and "127.0.0.1" in text and "macOS" in text and f"✅ {__version__}" in text
    assert "unreachable" in text and "old-pi" not in text
    assert "➕ Add them with: peersync discover --add" in text

    assert added.exit_code == 0, added.output
    doc = json.loads(added.output)
    assert doc["source"] == "localapi"
    assert sorted((d["name"], d["ipv4"], d["peersync"]["status"], d["added"]) for d in doc["devices"]) == [
        ("mac-mini", "127.0.0.1", "ok", True), ("server", "127.0.0.2", "unreachable", False)]
    assert doc["added"][0]["pinned"][0].startswith("SHA256:")
    assert ws.peer("mac-mini").known_hosts.endswith("known_hosts.d/mac-mini")


def test_cli_without_tailscale_fails_in_one_or_two_lines(env, tmp_path):
    (tmp_path / "MEMORY.md").write_text("")
    proc = subprocess.run([sys.executable, "-m", "peersync", "-w", str(tmp_path), "discover"],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert proc.returncode == 1
    assert proc.stderr.startswith("❌ could not read Tailscale's status here")
    assert len(proc.stderr.strip().splitlines()) == 2 and "Traceback" not in proc.stderr


def test_render_says_what_was_added_and_how_to_trust_the_rest():
    from peersync.cli.discover import render
    from peersync.discovery.discover import Added

    mini, pi = dev("mac-mini", keys=[ED25519]), dev("pi", "127.0.0.3")
    a, b = dev("a", "127.0.0.4"), dev("b", "127.0.0.5")
    result = Discovery(
        source="localapi",
        probes=(ok(mini), Probe(pi, HOST_KEY, reason="host key unknown", hint=trust_hint(pi, 2222)),
                Probe(a, AUTH, reason="auth refused", hint="Install your public key there: ssh-copy-id a"),
                Probe(b, AUTH, reason="auth refused", hint="Install your public key there: ssh-copy-id b")),
        added=(Added(peer=Peer("mac-mini", "127.0.0.1"), pinned=("SHA256:abc",), updated=False),),
        skipped=(("x", "a peer named x already exists with host 10.0.0.1"),))
    text = render(result, add=True)
    lines = text.splitlines()
    assert lines[0] == "🔎 4 device(s) on the tailnet, 1 with peersync"
    assert "✅ Added peer mac-mini (127.0.0.1) — host key pinned from Tailscale (SHA256:abc)" in lines
    assert "⏭️ Not added x: a peer named x already exists with host 10.0.0.1" in lines
    assert any(line.startswith("🔑 ") and "ssh-keyscan -p 2222 127.0.0.3" in line for line in lines)
    assert sum("ssh-copy-id" in line for line in lines) == 1  # one hint per kind of trouble
    assert "Add them with" not in text
    assert render(Discovery(source="localapi", probes=()), add=False).startswith("🔎 No other devices")
