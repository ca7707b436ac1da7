"""peersync between a Linux workspace and one on a Mac-like volume (FUSE: peersync/testing/fusefs.py).

Smoke tests, then the issue-14 cases: items 3 (case-insensitive volumes: name clashes, folders
that differ only in case, case-only renames) and 4 (Unicode normalisation: NFD-storing volumes).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from peersync.sync.runner import run_sync
from peersync.testing.pair import WorkspacePair, wire_pair
from peersync.testing.trees import selection_files

NFC = unicodedata.normalize("NFC", "café.md")
NFD = unicodedata.normalize("NFD", "café.md")


def mac_pair(tmp_path: Path, sshd, fuse_volume, profile: str, *, mac: str = "remote") -> WorkspacePair:
    """A Linux workspace (tmp_path/linux) and a Mac one inside a fresh `profile` volume; `mac`
    says which of them is the pair's remote side (run over SSH by the agent)."""
    volume = fuse_volume(profile)
    linux_root, mac_root = tmp_path / "linux", volume.path / "ws"
    if mac == "remote":
        return wire_pair(linux_root, mac_root, sshd)
    return wire_pair(mac_root, linux_root, sshd)


def write(root: Path, rel: str, data: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def sync(pair: WorkspacePair):
    [report] = run_sync(pair.local)
    assert report.ok, report.error
    return report


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def trashed(root: Path) -> list[str]:
    """Files sync moved to the trash of the workspace at `root`."""
    trash = root / "memory" / "clawdbot-sync" / "trash"
    return sorted(str(p.relative_to(trash)) for p in trash.rglob("*") if p.is_file()) if trash.exists() else []


def report_text(report) -> str:
    return "\n".join([report.error or ""] + [f"{p.path}: {p.message}" for p in report.problems]
                     + [str(c) for c in report.conflicts])


# -- smoke: ordinary names sync both ways, whichever side the Mac volume is -------------------------

@pytest.mark.parametrize("profile", ["apfs", "hfs", "casefold", "nfd"])
@pytest.mark.parametrize("mac", ["remote", "local"])
def test_ordinary_workspace_syncs_both_ways_with_a_mac_volume(tmp_path, sshd, fuse_volume, profile, mac):
    pair = mac_pair(tmp_path, sshd, fuse_volume, profile, mac=mac)
    L, R = pair.local.root, pair.remote.root
    for i in range(40):
        write(L, f"memory/notes/day-{i:02}.md", f"note {i}\n" * (i + 1))
    write(L, "MEMORY.md", "# memory\n")
    write(R, "memory/skills/prefs.json", '{"a": 1}\n')
    write(R, "USER.md", "user\n")
    big = os.urandom(3 << 20)  # past the inline limit: travels through rsync
    write(L, "memory/blobs/big.bin", big)
    first = sync(pair)
    assert first.pushed and first.pulled
    assert selection_files(pair.local) == selection_files(pair.remote)
    assert (R / "memory/blobs/big.bin").read_bytes() == big

    write(L, "memory/notes/day-03.md", "edited on the left\n")
    write(R, "memory/notes/day-07.md", "edited on the right\n")
    (R / "memory/notes/day-09.md").unlink()
    write(L, "memory/2026-01-26.md", "- left line\n")
    second = sync(pair)
    assert sorted(second.pushed) == ["memory/2026-01-26.md", "memory/notes/day-03.md"]
    assert second.pulled == ["memory/notes/day-07.md"]
    assert second.deleted_local == ["memory/notes/day-09.md"]
    assert selection_files(pair.local) == selection_files(pair.remote)
    assert not (L / "memory/notes/day-09.md").exists()
    assert (L / "memory/notes/day-07.md").read_text() == "edited on the right\n"
    assert not sync(pair).changed


def test_a_few_thousand_files_sync_onto_a_mac_volume(tmp_path, sshd, fuse_volume):
    """The volumes are fast enough for realistic workspaces (no timing asserted)."""
    from peersync.testing.workspace_gen import generate

    pair = mac_pair(tmp_path, sshd, fuse_volume, "apfs")
    generate(pair.local.root, files=2000, seed=3)
    sync(pair)
    assert selection_files(pair.local) == selection_files(pair.remote)
    assert not sync(pair).changed


# -- issue 14, item 3: case-insensitive volumes -------------------------------------------------------

def md_names(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".md"))


@pytest.mark.parametrize("profile", ["casefold", "apfs"])
def test_two_names_differing_only_in_case_are_a_reported_name_clash(tmp_path, sshd, fuse_volume, profile):
    pair = mac_pair(tmp_path, sshd, fuse_volume, profile)
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/Notes.md", "upper\n")
    write(L, "memory/notes.md", "lower\n")
    write(L, "memory/other.md", "other\n")
    for _ in range(2):  # every sync: the rest syncs, the clash is reported, Linux keeps both
        report = sync(pair)
        assert (R / "memory/other.md").read_text() == "other\n"
        assert (L / "memory/Notes.md").read_text() == "upper\n"
        assert (L / "memory/notes.md").read_text() == "lower\n"
        text = report_text(report)
        assert "clash" in text.lower() and "memory/Notes.md" in text and "memory/notes.md" in text
        assert "created here during the sync" not in text
    assert not trashed(L)


@pytest.mark.parametrize("mac", ["remote", "local"])
def test_a_directory_differing_only_in_case_never_costs_linux_a_file(tmp_path, sshd, fuse_volume, mac):
    pair = mac_pair(tmp_path, sshd, fuse_volume, "casefold", mac=mac)
    linux, macws = (pair.local.root, pair.remote.root) if mac == "remote" else (pair.remote.root, pair.local.root)
    write(macws, "memory/Projects/a.md", "a on the mac\n")
    write(linux, "memory/projects/b.md", "b on linux\n")
    reports = [sync(pair) for _ in range(3)]
    assert (linux / "memory/projects/b.md").read_text() == "b on linux\n"
    assert (linux / "memory/Projects/a.md").read_text() == "a on the mac\n"
    assert (macws / "memory/Projects/a.md").read_text() == "a on the mac\n"
    # b.md is either beside a.md on the Mac (the only folder it can be in) or reported as a clash
    assert (macws / "memory/Projects/b.md").exists() or "clash" in report_text(reports[-1]).lower()
    assert not trashed(linux) and not trashed(macws)
    assert not sync(pair).changed


@pytest.mark.parametrize("where", ["linux", "mac"])
def test_a_case_only_rename_converges_in_one_sync(tmp_path, sshd, fuse_volume, where):
    pair = mac_pair(tmp_path, sshd, fuse_volume, "casefold")
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/notes.md", "v1\n")
    sync(pair)
    renamer = L if where == "linux" else R
    os.rename(renamer / "memory/notes.md", renamer / "memory/Notes.md")
    report = sync(pair)
    assert not report.problems
    for root in (L, R):
        assert md_names(root / "memory") == ["Notes.md"]
        assert (root / "memory/Notes.md").read_text() == "v1\n"
    write(R, "memory/Notes.md", "v2 written on the mac\n")
    sync(pair)
    assert md_names(L / "memory") == ["Notes.md"]
    assert (L / "memory/Notes.md").read_text() == "v2 written on the mac\n"
    assert not sync(pair).changed


def test_a_write_after_a_case_only_rename_does_not_split_the_file(tmp_path, sshd, fuse_volume):
    pair = mac_pair(tmp_path, sshd, fuse_volume, "casefold")
    L, R = pair.local.root, pair.remote.root
    write(L, "memory/notes.md", "v1\n")
    sync(pair)
    os.rename(L / "memory/notes.md", L / "memory/Notes.md")
    write(R, "memory/notes.md", "v2 written on the mac\n")  # before the rename reached it
    for _ in range(2):
        report = sync(pair)
    assert not report.problems
    assert md_names(L / "memory") == md_names(R / "memory")  # one file, one spelling, both sides
    [name] = md_names(L / "memory")
    assert (L / "memory" / name).read_text() == (R / "memory" / name).read_text() == "v2 written on the mac\n"
    assert not sync(pair).changed


# -- issue 14, item 4: Unicode normalisation ----------------------------------------------------------

@pytest.mark.parametrize("profile", ["nfd", "hfs", "apfs"])
def test_an_nfc_name_keeps_its_form_on_linux_and_edits_flow_both_ways(tmp_path, sshd, fuse_volume, profile):
    pair = mac_pair(tmp_path, sshd, fuse_volume, profile)
    L, R = pair.local.root, pair.remote.root
    stored_on_mac = NFC if profile == "apfs" else NFD  # APFS keeps the form it is given
    write(L, f"memory/{NFC}", "v1\n")
    sync(pair)
    assert md_names(R / "memory") == [stored_on_mac]
    sync(pair)
    assert md_names(L / "memory") == [NFC]  # no NFD twin on Linux
    write(L, f"memory/{NFC}", "v2 from linux\n")
    sync(pair)
    assert (R / "memory" / stored_on_mac).read_text() == "v2 from linux\n"
    write(R, f"memory/{stored_on_mac}", "v3 from the mac\n")
    report = sync(pair)
    assert not report.problems
    assert (L / "memory" / NFC).read_text() == "v3 from the mac\n"
    assert md_names(L / "memory") == [NFC]
    assert not trashed(L) and not trashed(R)
    assert not sync(pair).changed


def test_nfc_and_nfd_twins_from_linux_are_a_reported_name_clash_on_apfs(tmp_path, sshd, fuse_volume):
    pair = mac_pair(tmp_path, sshd, fuse_volume, "apfs")
    L, R = pair.local.root, pair.remote.root
    write(L, f"memory/{NFC}", "composed\n")
    write(L, f"memory/{NFD}", "decomposed\n")
    write(L, "memory/other.md", "other\n")
    for _ in range(2):
        report = sync(pair)
        assert (R / "memory/other.md").read_text() == "other\n"
        assert (L / "memory" / NFC).read_text() == "composed\n"
        assert (L / "memory" / NFD).read_text() == "decomposed\n"
        text = report_text(report)
        assert "clash" in text.lower() and "created here during the sync" not in text
    assert not trashed(L)
