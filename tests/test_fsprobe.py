"""peersync.replica.fsprobe tells Linux volumes from Mac-like ones by asking them, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from peersync.replica import fsprobe
from peersync.replica.fsprobe import PROBE_PREFIX, FsBehaviour, ProbeError, probe
from peersync.testing.fusefs import mounted

LINUX = dict(case_sensitive=True, case_preserving=True, normalization_sensitive=True,
             stored_form="as-given", utf8_only=False, symlinks=True, sparse=True, seek_hole=True,
             permissions=True)


@pytest.fixture(autouse=True)
def no_cached_results():
    fsprobe.forget()
    yield
    fsprobe.forget()


def described(result: FsBehaviour) -> dict:
    doc = result.to_wire()
    del doc["device"]
    return doc


def leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(PROBE_PREFIX)]


def test_a_linux_disk(tmp_path):
    result = probe(tmp_path)
    assert described(result) == LINUX
    assert result.device == os.stat(tmp_path).st_dev and not result.folds_names
    assert os.listdir(tmp_path) == []  # nothing left behind


def test_tmpfs():
    shm = Path("/dev/shm")
    with open("/proc/self/mounts") as f:
        if not any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f):
            pytest.skip("no tmpfs at /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as d:
        assert described(probe(d)) == LINUX
        assert os.listdir(d) == []


@pytest.mark.parametrize("profile, expected", [
    ("apfs", dict(case_sensitive=False, normalization_sensitive=False, stored_form="as-given",
                  sparse=True, seek_hole=True)),
    ("hfs", dict(case_sensitive=False, normalization_sensitive=False, stored_form="nfd",
                 sparse=False, seek_hole=False)),
    ("casefold", dict(case_sensitive=False, normalization_sensitive=True, stored_form="as-given",
                      sparse=True, seek_hole=True)),
    ("nfd", dict(case_sensitive=True, normalization_sensitive=False, stored_form="nfd",
                 sparse=False, seek_hole=False)),
])
def test_mac_like_volumes(mac_dir, profile, expected):
    d = mac_dir(profile)
    result = probe(d)
    assert described(result) == {**LINUX, "utf8_only": True, **expected}
    assert result.folds_names
    assert os.listdir(d) == []


def test_the_summary_reads_as_a_sentence(mac_dir):
    assert probe(mac_dir("hfs")).summary() == (
        "case-insensitive, normalisation-insensitive, names stored NFD, UTF-8 names only, symlinks, "
        "no sparse files, permission bits")


def test_results_are_cached_per_device_until_forgotten(tmp_path, monkeypatch):
    first = probe(tmp_path)
    (tmp_path / "sub").mkdir()

    def must_not_probe(*args):
        raise AssertionError("probed again")

    monkeypatch.setattr(fsprobe, "_probe", must_not_probe)
    assert probe(tmp_path / "sub") is first  # same device: no new probe
    with pytest.raises(AssertionError, match="probed again"):
        probe(tmp_path, fresh=True)
    fsprobe.forget(first.device)
    with pytest.raises(AssertionError, match="probed again"):
        probe(tmp_path)


def test_a_device_number_reused_by_the_next_mount_is_probed_again(tmp_path):
    """Linux gives a freed device number to the next mount: the cache must not mix them up."""
    seen = []
    for profile in ("apfs", "nfd"):
        with mounted(profile, tmp_path / f"{profile}.backing", tmp_path / profile) as volume:
            seen.append((os.stat(volume.path).st_dev, probe(volume.path)))
    (dev_a, apfs), (dev_b, nfd) = seen
    assert not apfs.case_sensitive and nfd.case_sensitive  # whether or not dev_a == dev_b


def test_the_probe_directory_goes_even_when_probing_fails(tmp_path, monkeypatch):
    def broken(private):
        (Path(private) / "half-done").write_text("x")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsprobe, "_metadata", broken)
    with pytest.raises(ProbeError, match="probing the file system at .* failed: .*Input/output error"):
        probe(tmp_path)
    assert os.listdir(tmp_path) == []


def test_leftovers_of_a_killed_probe_are_swept_once_stale(tmp_path):
    old, recent = tmp_path / (PROBE_PREFIX + "0ld"), tmp_path / (PROBE_PREFIX + "recent")
    for d in (old, recent):
        d.mkdir()
        (d / "Case-Probe").write_text("")
    long_ago = time.time() - 2 * fsprobe.STALE_AFTER
    os.utime(old, (long_ago, long_ago))
    probe(tmp_path)
    assert leftovers(tmp_path) == [recent.name]  # a probe running right now is left alone


@pytest.mark.parametrize("where, message", [
    ("missing", "cannot probe .*missing: No such file or directory"),
    ("file", "cannot probe .*file: not a directory"),
    ("/proc", "cannot probe the file system at /proc: .* \\(the directory must be writable\\)"),
])
def test_what_cannot_be_probed_says_why(tmp_path, where, message):
    (tmp_path / "file").write_text("x")
    path = where if where.startswith("/") else tmp_path / where
    with pytest.raises(ProbeError, match=message):
        probe(path)


def test_the_wire_form_round_trips_and_refuses_anything_else(tmp_path):
    result = probe(tmp_path)
    assert FsBehaviour.from_wire(result.to_wire()) == result
    doc = result.to_wire()
    for bad in ({**doc, "case_sensitive": 1}, {**doc, "device": True}, {k: v for k, v in doc.items() if k != "sparse"},
                {**doc, "stored_form": "nfkc"}, {**doc, "extra": 1}, [doc], None):
        with pytest.raises(ValueError):
            FsBehaviour.from_wire(bad)


def test_the_command_line(tmp_path):
    run = [sys.executable, "-m", "peersync.replica.fsprobe"]
    out = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert out == f"{tmp_path}: case-sensitive, normalisation-sensitive, names stored as given, symlinks, " \
                  "sparse files, permission bits\n"
    assert subprocess.run(run, capture_output=True).returncode == 2
    bad = subprocess.run([*run, str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 1 and "No such file or directory" in bad.stderr


def test_probing_imports_nothing_heavy():
    """It runs at the start of every session in the remote agent, which must start fast."""
    code = ("import sys, peersync.replica.fsprobe as p, tempfile; p.probe(tempfile.gettempdir()); "
            "print(sorted(m for m in ('typer', 'asyncssh', 'rich', 'yaml', 'xxhash', 'mfusepy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
