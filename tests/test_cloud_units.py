"""Cloud folders, the parts without a server: backend hashes against real rclone, times, settings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from peersync.cloud import hashes as cloud_hash
from peersync.cloud.config import (
    PROVIDERS,
    CloudSpec,
    expand,
    inbox_command,
    provider_settings,
    resolve,
)
from peersync.cloud.index import Obj, parse_time
from peersync.cloud.mailbox import _numbered, is_junk
from peersync.errors import ConfigError, UsageError
from peersync.transport.rclone import find_rclone
from peersync.workspace.workspace import Peer, Workspace

SIZES = [0, 1, 5, 159, 160, 161, 1000, (4 << 20) - 1, 4 << 20, (4 << 20) + 1, 9_000_000]


def test_every_computable_hash_matches_what_rclone_reports(tmp_path):
    """rclone's local backend reports all hash types; ours must print the same hex, for block-edge sizes."""
    for size in SIZES:
        (tmp_path / f"f{size}").write_bytes(os.urandom(size))
    kinds = [k for k in cloud_hash.COMPUTABLE]
    args = [find_rclone(), "lsjson", "--hash", str(tmp_path)] + [x for k in kinds for x in ("--hash-type", k)]
    listing = json.loads(subprocess.run(args, capture_output=True, check=True,
                                        env={**os.environ, "RCLONE_CONFIG": "/dev/null"}).stdout)
    assert len(listing) == len(SIZES)
    for item in listing:
        data = (tmp_path / item["Path"]).read_bytes()
        assert set(item["Hashes"]) == set(kinds)
        for kind, expected in item["Hashes"].items():
            h = cloud_hash.new(kind)
            for start in range(0, len(data), 777_777):  # streamed in odd chunks
                h.update(data[start:start + 777_777])
            assert h.hexdigest() == expected, (kind, item["Path"])
            ours, theirs = cloud_hash.file_hashes(tmp_path / item["Path"], kind)
            assert theirs == expected and ours == cloud_hash.bytes_hashes(data, None)[0]


def test_pick_prefers_peersyncs_own_hash_then_strong_ones():
    assert cloud_hash.pick(["md5", "xxh128", "sha1"]) == "xxh128"
    assert cloud_hash.pick(["SHA1", "md5"]) == "md5"
    assert cloud_hash.pick(["quickxor"]) == "quickxor"
    assert cloud_hash.pick(["dropbox"]) == "dropbox"
    assert cloud_hash.pick(["whirlpool", "mailru"]) is None
    assert cloud_hash.pick([]) is None


@pytest.mark.parametrize("text, ns", [
    ("2026-01-26T10:00:00Z", 1769421600 * 10**9),
    ("2026-01-26T10:00:00.5Z", 1769421600 * 10**9 + 500_000_000),
    ("2026-01-26T10:00:00.123456789Z", 1769421600 * 10**9 + 123_456_789),
    ("2026-01-26T11:00:00.000000001+01:00", 1769421600 * 10**9 + 1),
    ("2026-01-26T08:30:00-01:30", 1769421600 * 10**9),
])
def test_rclone_times_keep_nanoseconds(text, ns):
    assert parse_time(text) == ns


def test_versions_compare_by_hash_and_fall_back_to_modtime():
    assert Obj(3, 1, "aa").same(Obj(3, 2, "aa"))  # same hash: same version, whatever the time
    assert not Obj(3, 1, "aa").same(Obj(3, 1, "bb"))
    assert Obj(3, 1, None).same(Obj(3, 1, "bb"))  # one side without a hash: size + modtime
    assert not Obj(3, 1, None).same(Obj(3, 2, None))
    assert not Obj(3, 1, "aa").same(Obj(4, 1, "aa"))
    assert not Obj(3, 1, "aa").same(None)


def test_inbox_names_never_collide():
    assert _numbered("report.pdf", 2) == "report (2).pdf"
    assert _numbered("a.tar.gz", 3) == "a (3).tar.gz"
    assert _numbered(".env", 2) == ".env (2)"
    assert _numbered("README", 2) == "README (2)"
    assert is_junk("x/.DS_Store") and is_junk("~$draft.docx") and is_junk(".peersync-keep")
    assert not is_junk("notes/todo.txt")


def test_cloud_spec_validation():
    with pytest.raises(ValueError):
        CloudSpec(remote="x:", mode="sideways")
    with pytest.raises(ValueError):
        CloudSpec(remote="x:", mode="mirror", direction="up")
    with pytest.raises(ValueError):
        CloudSpec(remote="x:", mode="bisync", folder="../escape")
    with pytest.raises(ValueError):
        CloudSpec(remote=" ", mode="bisync")
    spec = CloudSpec(remote="dropbox:Agent", mode="mirror", direction="pull")
    assert spec.extra() == {"type": "cloud", "remote": "dropbox:Agent", "mode": "mirror", "direction": "pull"}
    with pytest.raises(ConfigError):  # a hand-edited peers.json with a bad mode is a config error (exit 2)
        CloudSpec.from_peer(Peer("x", "h", extra={"type": "cloud", "remote": "r:", "mode": "both"}))


def test_env_references_expand_and_missing_ones_name_the_variable_only():
    env = {"TOKEN": "s3cr3t", "EMPTY": ""}
    assert expand("a-${TOKEN}-b", env, where="w") == "a-s3cr3t-b"
    assert expand("${NOPE:-fallback}", env, where="w") == "fallback"
    assert expand("${EMPTY:-d}", env, where="w") == "d"
    with pytest.raises(ConfigError) as err:
        expand("${MISSING_KEY}", env, where="cloud provider 'r2' (secret_access_key)")
    assert "MISSING_KEY" in str(err.value) and "s3cr3t" not in str(err.value)


def _ws(tmp_path: Path, config: str = "") -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.ensure_state()
    if config:
        ws.config_file.write_text(config)
    return ws


def test_provider_shortcuts_become_env_remotes_with_secrets_hidden(tmp_path):
    ws = _ws(tmp_path, "cloud:\n  providers:\n    r2:\n      endpoint: https://acct.example\n"
                       "    nas:\n      type: sftp\n      host: nas.local\n      user: ${NAS_USER}\n")
    env = {"R2_ACCESS_KEY_ID": "AKID", "R2_SECRET_ACCESS_KEY": "TOPSECRET", "NAS_USER": "me"}
    target = resolve(ws, CloudSpec(remote="bucket/agent", mode="mirror", folder="work", provider="r2"), env)
    assert target.root == "peersync_cloud:bucket/agent/work"
    assert target.display == "r2:bucket/agent/work"
    assert target.env["RCLONE_CONFIG_PEERSYNC_CLOUD_TYPE"] == "s3"
    assert target.env["RCLONE_CONFIG_PEERSYNC_CLOUD_PROVIDER"] == "Cloudflare"
    assert target.env["RCLONE_CONFIG_PEERSYNC_CLOUD_ENDPOINT"] == "https://acct.example"  # config overrides
    assert target.env["RCLONE_CONFIG_PEERSYNC_CLOUD_SECRET_ACCESS_KEY"] == "TOPSECRET"
    assert "TOPSECRET" in target.secrets and "TOPSECRET" not in target.display
    nas = resolve(ws, CloudSpec(remote="/srv/agent", mode="bisync", provider="nas"), env)
    assert nas.env["RCLONE_CONFIG_PEERSYNC_CLOUD_TYPE"] == "sftp"
    assert nas.env["RCLONE_CONFIG_PEERSYNC_CLOUD_USER"] == "me"
    with pytest.raises(ConfigError) as err:
        resolve(ws, CloudSpec(remote="b", mode="mirror", provider="r2"), {})
    assert "R2_ACCESS_KEY_ID" in str(err.value)
    with pytest.raises(UsageError):
        provider_settings(ws, "floppy")
    assert set(PROVIDERS) >= {"dropbox", "gdrive", "onedrive", "s3", "r2", "b2"}


def test_plain_remotes_and_connection_strings(tmp_path):
    ws = _ws(tmp_path)
    local = resolve(ws, CloudSpec(remote="../cloud", mode="bisync"), {})
    assert local.root == str((ws.root / "../cloud").absolute()) and not local.env
    named = resolve(ws, CloudSpec(remote="dropbox:Agent", mode="mailbox", folder="sub"), {})
    assert named.root == "dropbox:Agent/sub"
    conn = resolve(ws, CloudSpec(remote=":s3,provider=Rclone,secret_access_key=${K}:bucket", mode="bisync"),
                   {"K": "hush"})
    assert conn.root == "peersync_cloud:bucket" and "hush" not in conn.display and "hush" in conn.secrets


def test_inbox_command_setting(tmp_path):
    assert inbox_command(_ws(tmp_path)) is None
    ws = Workspace(tmp_path / "ws")
    ws.config_file.write_text("cloud:\n  inbox:\n    command: \"openclaw system event --text 'New: {files}'\"\n")
    assert inbox_command(ws) == ["openclaw", "system", "event", "--text", "New: {files}"]
    ws.config_file.write_text("cloud:\n  inbox:\n    command: [notify, x]\n")
    assert inbox_command(ws) == ["notify", "x"]
    ws.config_file.write_text("cloud:\n  inbox:\n    command: 3\n")
    with pytest.raises(ConfigError):
        inbox_command(ws)
