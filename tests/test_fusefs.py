"""The Mac-like volumes of peersync/testing/fusefs.py behave as APFS and HFS+ do, through the real kernel.

Each test works in a fresh directory of a volume mounted once per run (`mac_dir`); the name
rules themselves are checked as a table first, without FUSE.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import subprocess
import unicodedata
from pathlib import Path

import pytest

from peersync.testing.fusefs import PROFILES, MountError, _is_ours, hfs_decompose, mounted

NFC = unicodedata.normalize("NFC", "café.md")
NFD = unicodedata.normalize("NFD", "café.md")
CASE_INSENSITIVE = ["apfs", "hfs", "casefold"]
ALL = list(PROFILES)


def renameat2(src: Path, dst: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(dst))


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def backing_of(directory: Path, mac_volumes) -> Path:
    """The backing directory that mirrors `directory` (a mac_dir, created under its stored name)."""
    for volume in mac_volumes.values():
        if directory.parent == volume.path:
            return volume.backing / directory.name
    raise AssertionError(f"{directory} is not a mac_dir")


# -- the name rules, as a table -----------------------------------------------------------------------

@pytest.mark.parametrize("profile, a, b, same", [
    ("casefold", "Notes.md", "notes.md", True),
    ("casefold", NFC, NFD, False),  # case alone: the two forms are two names
    ("casefold", "Straße", "STRASSE", True),  # Python's full case folding (Apple's tables differ here)
    ("apfs", "Notes.md", "NOTES.MD", True),
    ("apfs", NFC, NFD, True),
    ("apfs", NFC.upper(), NFD, True),
    ("hfs", "Notes.md", "notes.md", True),
    ("hfs", NFC.upper(), NFD, True),
    ("nfd", "Notes.md", "notes.md", False),  # HFSX: case-sensitive
    ("nfd", NFC, NFD, True),
    ("apfs", "a.md", "b.md", False),
])
def test_which_names_are_one_entry(profile, a, b, same):
    p = PROFILES[profile]
    assert (p.key(a) == p.key(b)) is same


@pytest.mark.parametrize("profile, stored", [("apfs", NFC), ("casefold", NFC), ("hfs", NFD), ("nfd", NFD)])
def test_names_are_stored_as_given_or_decomposed(profile, stored):
    assert PROFILES[profile].stored_name(NFC) == stored
    assert PROFILES[profile].stored_name("Notes.md") == "Notes.md"  # case is always preserved


def test_hfs_decomposition_leaves_apples_excluded_ranges_alone():
    ohm, cjk = "\u2126", "\uf900"  # both decompose under today's NFD, not on HFS+
    assert unicodedata.normalize("NFD", ohm) != ohm and unicodedata.normalize("NFD", cjk) != cjk
    assert hfs_decompose(f"{ohm}é{cjk}") == f"{ohm}e\u0301{cjk}"
    assert hfs_decompose("plain.md") == "plain.md"


# -- lookups and creation -------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ALL)
def test_every_spelling_finds_the_entry_on_case_insensitive_volumes(mac_dir, profile):
    d = mac_dir(profile)
    (d / "notes.md").write_text("hello\n")
    found = (d / "NOTES.md").exists()
    assert found is (profile != "nfd")
    if found:
        assert (d / "Notes.MD").read_text() == "hello\n"
        assert os.stat(d / "NOTES.md").st_ino == os.stat(d / "notes.md").st_ino  # one file, as on a Mac
    assert os.listdir(d) == ["notes.md"]  # readdir returns the stored name


@pytest.mark.parametrize("profile", CASE_INSENSITIVE)
def test_creating_another_spelling_opens_the_existing_entry(mac_dir, profile):
    d = mac_dir(profile)
    (d / "notes.md").write_text("first\n")
    (d / "other").write_text("x")
    with open(d / "NOTES.md", "w") as f:  # O_CREAT|O_TRUNC: the existing file, its name kept
        f.write("second\n")
    assert os.listdir(d / ".") == ["notes.md", "other"] or sorted(os.listdir(d)) == ["notes.md", "other"]
    assert (d / "notes.md").read_text() == "second\n"
    with pytest.raises(FileExistsError):
        os.open(d / "Notes.md", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with pytest.raises(FileExistsError):
        os.mkdir(d / "NOTES.MD")
    with pytest.raises(FileExistsError):
        os.symlink("other", d / "Notes.md")
    with pytest.raises(FileExistsError):
        os.link(d / "other", d / "NOTES.md")
    with pytest.raises(FileExistsError):
        os.mkfifo(d / "notes.MD")
    os.mkdir(d / "Sub")
    with pytest.raises(FileExistsError):
        os.mkdir(d / "sub")
    assert sorted(os.listdir(d)) == ["Sub", "notes.md", "other"]


def test_a_case_sensitive_volume_keeps_spellings_apart(mac_dir):
    d = mac_dir("nfd")
    (d / "notes.md").write_text("lower\n")
    (d / "Notes.md").write_text("upper\n")
    assert sorted(os.listdir(d)) == ["Notes.md", "notes.md"]
    assert (d / "notes.md").read_text() == "lower\n"


@pytest.mark.parametrize("profile", ALL)
def test_normalisation_forms(mac_dir, mac_volumes, profile):
    d = mac_dir(profile)
    (d / NFC).write_text("composed\n")
    stored = NFD if profile in ("hfs", "nfd") else NFC
    assert os.listdir(d) == [stored]
    assert os.listdir(backing_of(d, mac_volumes)) == [stored]  # what is on "disk"
    insensitive = profile != "casefold"
    assert (d / NFD).exists() is insensitive
    if insensitive:
        assert (d / NFD).read_text() == "composed\n"
        with pytest.raises(FileExistsError):
            os.open(d / NFD, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    else:  # case folding alone: the NFD twin is a second file
        (d / NFD).write_text("decomposed\n")
        assert sorted(os.listdir(d)) == sorted([NFC, NFD])


@pytest.mark.parametrize("profile", ALL)
def test_names_that_are_not_utf8_are_refused(mac_dir, profile):
    d = os.fsencode(mac_dir(profile))
    for make in (lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY)), os.mkdir,
                 lambda p: os.symlink(b"x", p)):
        with pytest.raises(OSError) as err:
            make(d + b"/caf\xe9.md")
        assert err.value.errno == errno.EILSEQ
    (Path(os.fsdecode(d)) / "ok.md").write_text("x")
    with pytest.raises(OSError) as err:
        os.rename(d + b"/ok.md", d + b"/caf\xe9.md")
    assert err.value.errno == errno.EILSEQ
    assert not os.path.exists(d + b"/caf\xe9.md")
    assert os.listdir(d) == [b"ok.md"]


# -- renames --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", CASE_INSENSITIVE)
def test_a_case_only_rename_changes_the_stored_name(mac_dir, profile):
    d = mac_dir(profile)
    (d / "notes.md").write_text("body\n")
    ino = os.stat(d / "notes.md").st_ino
    os.rename(d / "notes.md", d / "Notes.md")
    assert os.listdir(d) == ["Notes.md"]
    assert os.stat(d / "NOTES.md").st_ino == ino and (d / "notes.md").read_text() == "body\n"
    (d / "projects" / "deep").mkdir(parents=True)
    (d / "projects" / "deep" / "a.md").write_text("a\n")
    os.rename(d / "projects", d / "Projects")
    assert sorted(os.listdir(d)) == ["Notes.md", "Projects"]
    assert (d / "PROJECTS" / "Deep" / "A.md").read_text() == "a\n"
    (d / "projects" / "b.md").write_text("b\n")  # lands in the one folder
    assert sorted(os.listdir(d / "Projects")) == ["b.md", "deep"]


@pytest.mark.parametrize("profile", ["apfs", "hfs", "nfd"])
def test_a_normalisation_only_rename_is_the_same_entry(mac_dir, profile):
    d = mac_dir(profile)
    (d / NFC).write_text("x\n")
    os.rename(d / NFC, d / NFD)
    assert os.listdir(d) == [NFD]  # APFS now keeps the NFD spelling; HFS+ stored NFD all along
    assert (d / NFC).read_text() == "x\n"


@pytest.mark.parametrize("profile", CASE_INSENSITIVE)
def test_renaming_over_another_spelling_replaces_it_under_the_new_name(mac_dir, profile):
    d = mac_dir(profile)
    (d / "notes.md").write_text("old\n")
    (d / "a.md").write_text("new\n")
    os.rename(d / "a.md", d / "NOTES.md")
    assert os.listdir(d) == ["NOTES.md"]
    assert (d / "notes.md").read_text() == "new\n"
    (d / "full").mkdir()
    (d / "full" / "x").write_text("x")
    (d / "empty").mkdir()
    with pytest.raises(OSError) as err:
        os.rename(d / "EMPTY", d / "FULL")
    assert err.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        os.rename(d / "notes.md", d / "EMPTY")


@pytest.mark.parametrize("profile", ALL)
def test_rename_noreplace_and_exchange(mac_dir, profile):
    """peersync installs with renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE must be honoured."""
    d = mac_dir(profile)
    (d / "notes.md").write_text("mine\n")
    (d / "staged").write_text("theirs\n")
    other = "NOTES.md" if profile != "nfd" else "notes.md"
    with pytest.raises(FileExistsError):
        renameat2(d / "staged", d / other, RENAME_NOREPLACE)
    renameat2(d / "staged", d / other, RENAME_EXCHANGE)
    assert sorted(os.listdir(d)) == ["notes.md", "staged"]  # stored names stay where they were
    assert (d / "notes.md").read_text() == "theirs\n" and (d / "staged").read_text() == "mine\n"
    renameat2(d / "staged", d / "fresh", RENAME_NOREPLACE)
    assert sorted(os.listdir(d)) == ["fresh", "notes.md"]
    with pytest.raises(FileNotFoundError):
        renameat2(d / "fresh", d / "absent", RENAME_EXCHANGE)


def test_renaming_a_hard_link_over_its_twin_does_nothing(mac_dir):
    d = mac_dir("apfs")
    (d / "a").write_text("x")
    os.link(d / "a", d / "b")
    os.rename(d / "a", d / "B")
    assert sorted(os.listdir(d)) == ["a", "b"]


@pytest.mark.parametrize("profile", CASE_INSENSITIVE)
def test_moved_directories_keep_their_contents_findable(mac_dir, profile):
    d = mac_dir(profile)
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "b" / "file.md").write_text("deep\n")
    (d / "elsewhere").mkdir()
    os.rename(d / "A", d / "Elsewhere" / "Moved")
    assert os.listdir(d / "elsewhere") == ["Moved"]
    assert (d / "ELSEWHERE" / "moved" / "B" / "FILE.md").read_text() == "deep\n"
    os.mkdir(d / "a")  # the old name is free again
    assert sorted(os.listdir(d)) == ["a", "elsewhere"]


# -- removal, metadata, links -----------------------------------------------------------------------------

@pytest.mark.parametrize("profile", CASE_INSENSITIVE)
def test_unlink_and_rmdir_through_any_spelling(mac_dir, profile):
    d = mac_dir(profile)
    (d / "notes.md").write_text("x")
    (d / "dir" / "sub").mkdir(parents=True)
    os.unlink(d / "NOTES.MD")
    with pytest.raises(OSError) as err:
        os.rmdir(d / "DIR")
    assert err.value.errno == errno.ENOTEMPTY
    os.rmdir(d / "Dir" / "SUB")
    os.rmdir(d / "DIR")
    assert os.listdir(d) == []
    with pytest.raises(FileNotFoundError):
        os.unlink(d / "notes.md")


@pytest.mark.parametrize("profile", ["apfs", "hfs"])
def test_permissions_owners_and_times(mac_dir, profile):
    d = mac_dir(profile)
    f = d / "script.sh"
    f.write_text("#!/bin/sh\n")
    os.chmod(d / "SCRIPT.sh", 0o751)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o751
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o640)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o640
    finally:
        os.close(fd)
    os.chown(f, 1234, 5678)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 5678)
    os.utime(f, ns=(1_000_000_001, 1_700_000_000_123_456_789))
    assert os.stat(f).st_mtime_ns == 1_700_000_000_123_456_789  # nanoseconds kept
    assert os.stat(f).st_atime_ns == 1_000_000_001
    subprocess.run(["touch", "-m", "-d", "@1600000000", str(f)], check=True)  # atime: UTIME_OMIT
    assert (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) == (1_000_000_001, 1_600_000_000 * 10**9)
    subprocess.run(["touch", "-a", "-d", "@1500000000", str(f)], check=True)  # mtime: UTIME_OMIT
    assert (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) == (1_500_000_000 * 10**9, 1_600_000_000 * 10**9)
    before = os.stat(f).st_ctime_ns
    os.chmod(f, 0o600)
    assert os.stat(f).st_ctime_ns >= before
    (d / "new").write_text("x")
    assert stat.S_IMODE(os.stat(d / "new").st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("profile", ["apfs", "hfs"])
def test_symlinks(mac_dir, profile):
    d = mac_dir(profile)
    (d / "target dir").mkdir()
    (d / "target dir" / "x.md").write_text("x\n")
    os.symlink(f"target dir/{NFC}", d / "to-cafe")  # a link's target is data: never normalised
    os.symlink("target dir", d / "Link")
    os.symlink("../../nowhere", d / "dangling")
    assert os.readlink(d / "TO-CAFE") == f"target dir/{NFC}"
    assert stat.S_ISLNK(os.lstat(d / "link").st_mode)
    assert (d / "LINK" / "X.md").read_text() == "x\n"
    assert not (d / "dangling").exists() and os.path.lexists(d / "dangling")
    os.utime(d / "Link", ns=(5 * 10**9, 6 * 10**9), follow_symlinks=False)
    assert os.lstat(d / "link").st_mtime_ns == 6 * 10**9
    os.unlink(d / "LINK")
    assert (d / "target dir" / "x.md").exists()


@pytest.mark.parametrize("profile", ["apfs", "hfs"])
def test_hard_links(mac_dir, profile):
    d = mac_dir(profile)
    (d / "a.md").write_text("one\n")
    os.link(d / "A.md", d / "b.md")
    assert os.stat(d / "a.md").st_nlink == 2
    assert os.stat(d / "a.md").st_ino == os.stat(d / "B.md").st_ino
    with open(d / "b.md", "a") as f:
        f.write("two\n")
    assert (d / "a.md").read_text() == "one\ntwo\n"
    os.unlink(d / "a.md")
    assert os.stat(d / "b.md").st_nlink == 1 and (d / "b.md").read_text() == "one\ntwo\n"
    (d / "dir").mkdir()
    with pytest.raises(PermissionError):  # no hard links to directories, as everywhere
        os.link(d / "dir", d / "dir2")


@pytest.mark.parametrize("profile", ["apfs", "nfd"])
def test_statfs(mac_dir, mac_volumes, profile):
    d = mac_dir(profile)
    sv = os.statvfs(d)
    assert sv.f_namemax == 255 and sv.f_blocks > 0 and sv.f_bsize > 0
    assert os.stat(d).st_dev != os.stat(mac_volumes[profile].backing).st_dev


# -- file data ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["apfs", "hfs"])
def test_a_large_file_round_trips(mac_dir, mac_volumes, profile):
    d = mac_dir(profile)
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(d / "big.bin", "wb") as f:
        for i in range(48):
            block = chunk[i:] + chunk[:i]
            f.write(block)
            digest.update(block)
    assert os.stat(d / "BIG.bin").st_size == 48 << 20
    with open(d / "big.bin", "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()
    with open(backing_of(d, mac_volumes) / "big.bin", "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()


@pytest.mark.parametrize("profile, holes", [("apfs", True), ("casefold", True), ("hfs", False), ("nfd", False)])
def test_holes_only_where_the_mac_volume_keeps_them(mac_dir, profile, holes):
    d = mac_dir(profile)
    size = 8 << 20
    fd = os.open(d / "sparse.img", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"end", size - 3)
        data_at = os.lseek(fd, 0, os.SEEK_DATA)
        hole_at = os.lseek(fd, 0, os.SEEK_HOLE)
        allocated = os.fstat(fd).st_blocks * 512
    finally:
        os.close(fd)
    if holes:  # APFS: a hole stays a hole and SEEK_DATA skips it
        assert data_at > 0 and hole_at == 0 and allocated < 1 << 20
    else:  # HFS+ has no sparse files: all data, all allocated
        assert data_at == 0 and hole_at == size and allocated >= size


def test_appends_land_at_the_end(mac_dir):
    d = mac_dir("apfs")
    path = d / "log.jsonl"
    a, b = open(path, "a"), open(d / "LOG.jsonl", "a")
    try:
        for i in range(20):
            (a if i % 2 else b).write(f"{i}\n")
            (a if i % 2 else b).flush()
    finally:
        a.close(), b.close()
    assert path.read_text() == "".join(f"{i}\n" for i in range(20))


def test_an_unlinked_open_file_stays_usable(mac_dir):
    """Under the spelling it was opened with (libfuse tracks open files per spelling: fstat(2) of a
    file unlinked under another spelling fails with ENOENT; read, write and the rest still work)."""
    d = mac_dir("hfs")
    f = open(d / "gone.md", "w+")
    try:
        os.unlink(d / "gone.md")
        f.write("still here\n")
        f.flush()
        os.ftruncate(f.fileno(), 5)
        f.seek(0)
        assert f.read() == "still"
        assert os.fstat(f.fileno()).st_nlink == 0
    finally:
        f.close()
    assert os.listdir(d) == []


def test_truncate_through_a_path(mac_dir):
    d = mac_dir("apfs")
    (d / "t").write_text("0123456789")
    os.truncate(d / "T", 4)
    assert (d / "t").read_text() == "0123"


@pytest.mark.parametrize("profile", ["apfs", "hfs"])
def test_many_files(mac_dir, profile):
    d = mac_dir(profile)
    for i in range(1500):
        (d / f"Note-{i:04}.md").write_text(f"{i}\n")
    names = os.listdir(d)
    assert len(names) == 1500 and "Note-0042.md" in names
    for i in range(0, 1500, 97):
        assert (d / f"NOTE-{i:04}.MD").read_text() == f"{i}\n"
    if profile == "hfs":  # HFS+ lists in catalog order (case-insensitive)
        assert names == sorted(names, key=str.casefold)
    for name in names:
        os.unlink(d / name.lower())
    assert os.listdir(d) == []


# -- mounting --------------------------------------------------------------------------------------------

def test_the_volume_is_unmounted_even_when_the_test_body_fails(tmp_path):
    where = tmp_path / "m"
    with pytest.raises(RuntimeError, match="boom"):
        with mounted("apfs", tmp_path / "b", where) as volume:
            (volume.path / "x").write_text("x")
            assert _is_ours(str(where))
            raise RuntimeError("boom")
    assert not _is_ours(str(where))
    assert (tmp_path / "b" / "x").read_text() == "x"  # the data stays in the backing directory


def test_a_busy_volume_is_still_unmounted(tmp_path):
    where = tmp_path / "m"
    with mounted("hfs", tmp_path / "b", where) as volume:
        held = open(volume.path / "held", "w")  # keeps the mount busy past the end of the block
    assert not _is_ours(str(where))
    with pytest.raises(OSError) as err:  # its server is gone
        held.write("x")
        held.close()
    assert err.value.errno == errno.ENOTCONN


def test_a_server_that_cannot_mount_is_reported_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSE_LIBRARY_PATH", str(tmp_path / "no-libfuse.so"))
    with pytest.raises(MountError, match="did not mount") as err:
        with mounted("apfs", tmp_path / "b", tmp_path / "m"):
            pass
    assert "no-libfuse.so: cannot open shared object file" in str(err.value)  # the server's own words
    assert not _is_ours(str(tmp_path / "m"))


def test_an_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'ntfs'"):
        with mounted("ntfs", tmp_path / "b", tmp_path / "m"):
            pass
