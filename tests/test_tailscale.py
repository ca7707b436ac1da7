"""peersync.discovery.tailscale: parsing ipnstate documents, and every status source against a fake."""

from __future__ import annotations

import asyncio
import os
import shutil
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
    write_fake_cli,
)

from peersync.discovery import tailscale
from peersync.discovery.tailscale import (
    Device,
    TailscaleUnavailable,
    device_name,
    merge,
    parse_status,
)

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No real tailscaled, CLI, macOS app or API key can leak into a test."""
    monkeypatch.setenv("PEERSYNC_TAILSCALE_SOCKET", str(tmp_path / "absent.sock"))
    monkeypatch.setenv("PEERSYNC_TAILSCALE_CLI", str(tmp_path / "absent-cli"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TAILSCALE_API_KEY", raising=False)
    monkeypatch.delenv("TAILSCALE_TAILNET", raising=False)
    monkeypatch.setattr(tailscale, "MACSYS_DIR", tmp_path / "Library-Tailscale")
    return tmp_path


@pytest.fixture
def sock_dir():
    # Unix socket paths must stay under ~100 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tailnet() -> dict:
    return status_document(self_status("laptop", "127.0.0.9"), [
        peer_status("mac-mini", "127.0.0.1", os_name="macOS", tags=["tag:peersync"], ssh_host_keys=[ED25519]),
        peer_status("server", "127.0.0.2", tags=["tag:server"]),
        peer_status("old-pi", "127.0.0.3", online=False),
    ])


# -- parsing -------------------------------------------------------------------------------
def test_parse_status_reads_self_and_peers_like_tailscale_reports_them():
    status = parse_status(tailnet(), "localapi")
    assert status.running and status.version.startswith("1.78.1") and status.source == "localapi"
    by_name = {d.name: d for d in status.devices}
    assert status.devices[0].self and status.devices[0].name == "laptop"
    mini = by_name["mac-mini"]
    assert mini == Device(name="mac-mini", dns_name="mac-mini.tail4f2c1.ts.net",
                          ips=("127.0.0.1", "fd7a:115c:a1e0::1"), ipv4="127.0.0.1", os="macOS", online=True,
                          tags=("tag:peersync",), ssh_host_keys=(ED25519,), last_seen=None, self=False)
    assert not by_name["old-pi"].online and by_name["old-pi"].last_seen == "2026-01-20T18:02:11Z"
    assert by_name["server"].ssh_host_keys == () and by_name["server"].tags == ("tag:server",)


@pytest.mark.parametrize("peer_field", [None, {}], ids=["Peer-null", "Peer-empty"])
def test_a_status_without_peers_gives_only_self(peer_field):
    doc = {**tailnet(), "Peer": peer_field}
    status = parse_status(doc)
    assert [d.name for d in status.devices] == ["laptop"]


def test_a_logged_out_status_has_no_self_and_no_peers():
    doc = {"Version": "1.78.1", "BackendState": "NeedsLogin", "Self": None, "Peer": None, "User": None}
    status = parse_status(doc)
    assert status.devices == () and not status.running


def test_sharee_nodes_and_mullvad_exit_nodes_are_hidden_as_tailscale_status_hides_them():
    doc = status_document(self_status(), [
        peer_status("friend-box", "127.0.0.4", ShareeNode=True),
        peer_status("us-nyc-wg-301", "127.0.0.5", ExitNodeOption=True,
                    Location={"Country": "USA", "CountryCode": "US", "City": "New York", "CityCode": "NYC"},
                    dns_name="us-nyc-wg-301.mullvad.ts."),
        peer_status("exit-box", "127.0.0.6", ExitNodeOption=True),
    ])
    assert [d.name for d in parse_status(doc).devices] == ["laptop", "exit-box"]


@pytest.mark.parametrize("doc, words", [
    ([], "not a JSON object"),
    ({"BackendState": "Running", "Peer": ["x"]}, "not a map"),
], ids=["list", "peer-list"])
def test_malformed_documents_are_refused_with_a_clear_error(doc, words):
    with pytest.raises(TailscaleUnavailable, match=words):
        parse_status(doc)


def test_odd_field_types_are_tolerated_not_trusted():
    raw = peer_status("weird", "127.0.0.7", TailscaleIPs=["not-an-ip", "127.0.0.7"], Tags="tag:x",
                      sshHostKeys=[42, ED25519], OS=None)
    dev = parse_status(status_document(self_status(), [raw])).devices[1]
    assert dev.ips == ("127.0.0.7",) and dev.tags == () and dev.ssh_host_keys == (ED25519,) and dev.os == ""


@pytest.mark.parametrize("dns, host, expected", [
    ("mac-mini.tail4f2c1.ts.net", "Mac mini", "mac-mini"),
    ("", "John's MacBook Pro", "john-s-macbook-pro"),
    ("", "", "device"),
    ("SERVER.tail4f2c1.ts.net", "server", "server"),
])
def test_device_names_prefer_the_magicdns_label(dns, host, expected):
    assert device_name(dns, host) == expected


def test_require_running_says_how_to_connect():
    with pytest.raises(TailscaleUnavailable) as info:
        tailscale.require_running(parse_status({"BackendState": "NeedsLogin", "Peer": None}))
    assert "NeedsLogin" in info.value.message and "tailscale up" in info.value.hint


# -- local sources -------------------------------------------------------------------------
def test_localapi_socket_is_read_with_the_host_header_tailscaled_requires(isolated, sock_dir, monkeypatch):
    sock = sock_dir / "tailscaled.sock"
    monkeypatch.setenv("PEERSYNC_TAILSCALE_SOCKET", str(sock))
    with FakeTailscaled(tailnet(), socket_path=sock) as fake:
        status = tailscale.local_status(timeout=2)
    assert status.source == "localapi"
    assert status.devices[0].name == "laptop"
    assert {d.name for d in status.devices[1:]} == {"mac-mini", "server", "old-pi"}
    assert fake.requests == [{"path": "/localapi/v0/status", "host": "local-tailscaled.sock", "authorization": None}]


def test_the_fake_daemon_refuses_a_wrong_host_like_the_real_one(sock_dir):
    sock = sock_dir / "tailscaled.sock"
    with FakeTailscaled(tailnet(), socket_path=sock):
        conn = tailscale._UnixHTTPConnection(str(sock), 2)
        conn.request("GET", "/localapi/v0/status", headers={"Host": "evil.example"})
        assert conn.getresponse().status == 403
        conn.close()


def test_the_cli_is_used_when_there_is_no_socket(isolated, monkeypatch):
    cli = write_fake_cli(isolated, tailnet())
    monkeypatch.setenv("PEERSYNC_TAILSCALE_CLI", str(cli))
    status = tailscale.local_status(timeout=10)
    assert status.source == "cli" and len(status.devices) == 4


def test_the_cli_peers_false_document_parses_to_self_only(isolated):
    cli = write_fake_cli(isolated, tailnet())
    doc = tailscale.from_cli(str(cli), 10)  # plain status --json
    assert len(doc["Peer"]) == 3
    import json
    import subprocess

    out = subprocess.run([str(cli), "status", "--json", "--peers=false"], capture_output=True, check=True).stdout
    assert [d.name for d in parse_status(json.loads(out)).devices] == ["laptop"]


def test_the_cli_is_found_on_path(isolated, monkeypatch):
    bindir = isolated / "bin"
    bindir.mkdir()
    write_fake_cli(bindir, tailnet())
    monkeypatch.delenv("PEERSYNC_TAILSCALE_CLI")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert tailscale.cli_path() == str(bindir / "tailscale")
    assert tailscale.local_status(timeout=10).source == "cli"


def test_nothing_answering_names_every_source_tried(isolated, monkeypatch):
    cli = write_fake_cli(isolated, None)  # the CLI says tailscaled is down
    monkeypatch.setenv("PEERSYNC_TAILSCALE_CLI", str(cli))
    with pytest.raises(TailscaleUnavailable) as info:
        tailscale.local_status(timeout=10)
    message = info.value.message
    assert "absent.sock: not there" in message and "doesn't appear to be running" in message
    assert "tailscale status" in info.value.hint


def test_no_cli_at_all_is_reported(isolated):
    with pytest.raises(TailscaleUnavailable, match="absent-cli: not found"):
        tailscale.local_status(timeout=2)


def test_macos_app_store_sameuserproof_file_gives_port_and_token(isolated):
    group = isolated / "home" / "Library" / "Group Containers" / "W5364U7YZB.io.tailscale.ipn.macos"
    group.mkdir(parents=True)
    with FakeTailscaled(tailnet(), token="2ae2ec9e0aa2005784f1") as fake:
        (group / f"sameuserproof-{fake.port}-2ae2ec9e0aa2005784f1").touch()
        status = tailscale.local_status(timeout=2)
    assert status.source == "macos-app" and len(status.devices) == 4
    assert fake.requests[0]["authorization"].startswith("Basic ")


def test_macos_standalone_app_keeps_the_token_inside_the_file(isolated):
    macsys = isolated / "Library-Tailscale"
    macsys.mkdir()
    with FakeTailscaled(tailnet(), token="f00dfeed") as fake:
        (macsys / f"sameuserproof-{fake.port}").write_text("f00dfeed\n")
        assert tailscale.macos_credentials() == [(fake.port, "f00dfeed")]
        assert tailscale.local_status(timeout=2).source == "macos-app"


def test_macos_wrong_token_is_refused_and_reported(isolated):
    group = isolated / "home" / "Library" / "Group Containers" / "X.io.tailscale.ipn.macos"
    group.mkdir(parents=True)
    with FakeTailscaled(tailnet(), token="right") as fake:
        (group / f"sameuserproof-{fake.port}-wrong").touch()
        with pytest.raises(TailscaleUnavailable, match="HTTP 403 bad password"):
            tailscale.local_status(timeout=2)


# -- admin API -----------------------------------------------------------------------------
def admin_devices_fixture() -> list[dict]:
    return [admin_device("mac-mini", "127.0.0.1", online=True, os_name="macOS", tags=["tag:peersync"]),
            admin_device("old-pi", "127.0.0.3", online=False, last_seen="2026-01-20T18:02:11Z")]


def run_admin(api: FakeAdminAPI, key: str):
    async def go():
        async with api.client_session() as session:
            return await tailscale.admin_devices(key, "-", session=session, timeout=5)

    return asyncio.run(go())


def test_admin_api_lists_offline_devices_over_verified_tls(tmp_path):
    with FakeAdminAPI(tmp_path, admin_devices_fixture()) as api:
        devices = run_admin(api, "tskey-api-test")
    assert [(d.name, d.ipv4, d.online, d.os) for d in devices] == [
        ("mac-mini", "127.0.0.1", True, "macOS"), ("old-pi", "127.0.0.3", False, "linux")]
    assert devices[0].dns_name == "mac-mini.tail4f2c1.ts.net" and devices[0].tags == ("tag:peersync",)
    assert devices[1].last_seen == "2026-01-20T18:02:11Z" and devices[1].ssh_host_keys == ()
    assert api.requests[0]["path"] == "/api/v2/tailnet/-/devices?fields=all"


def test_admin_api_bad_key_is_a_clear_error(tmp_path):
    with FakeAdminAPI(tmp_path, admin_devices_fixture()) as api:
        with pytest.raises(TailscaleUnavailable, match="API token invalid") as info:
            run_admin(api, "tskey-api-wrong")
    assert "TAILSCALE_API_KEY" in info.value.hint


def test_admin_api_tls_is_verified_not_disabled(tmp_path):
    """A session that does not trust the test CA is refused: TLS checks stay on."""
    import aiohttp

    with FakeAdminAPI(tmp_path, admin_devices_fixture()) as api:
        async def go():
            trusting = api.client_session()
            connector = aiohttp.TCPConnector(resolver=trusting.connector._resolver)  # default trust store
            await trusting.close()
            async with aiohttp.ClientSession(connector=connector) as session:
                return await tailscale.admin_devices("tskey-api-test", session=session, timeout=5)

        with pytest.raises(TailscaleUnavailable, match="admin API"):
            asyncio.run(go())
        assert api.requests == []  # the handshake failed before any request was read


def test_merge_adds_admin_only_devices_after_the_local_ones():
    local = parse_status(tailnet())
    admin = [Device("mac-mini", "mac-mini.tail4f2c1.ts.net", ("127.0.0.1",), "127.0.0.1", "macOS", True),
             Device("nas", "nas.tail4f2c1.ts.net", ("127.0.0.8",), "127.0.0.8", "linux", False)]
    merged = merge(local, admin)
    assert [d.name for d in merged][-1] == "nas" and len(merged) == 5
    assert next(d for d in merged if d.name == "mac-mini").ssh_host_keys == (ED25519,)  # local copy kept
    assert merge(None, admin) == admin
