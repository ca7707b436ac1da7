#!/usr/bin/env python3
"""Benchmark peersync backups against the seed plugin's `tar | rclone rcat`, first and incremental, on one local target."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

CHANGED = 10  # files edited between the first and the incremental backup


def bench_backup(workdir: Path | str, files: int = 10_000, *, encrypt: bool = False) -> dict:
    """Back up a generated `files`-file workspace twice (before and after CHANGED realistic edits)
    with peersync and with `tar | rclone rcat`, each to its own directory under `workdir`.

    Returns times (seconds) and bytes uploaded for both methods; with `encrypt`, both go through
    rclone crypt (peersync's way; the seed would pipe through openssl instead)."""
    from peersync.backup import restore, take_snapshot
    from peersync.testing import generate, mutate, selection_files
    from peersync.transport.rclone import Rclone, crypt_env
    from peersync.workspace.workspace import Workspace

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-backup-{files}-", dir=workdir))  # fresh, even on a rerun
    root = workdir / "ws"
    generate(root, files=files, seed=0)
    ws = Workspace(root)
    selected = selection_files(ws)
    env_before = os.environ.pop("PEERSYNC_BACKUP_PASSPHRASE", None)
    if encrypt:
        os.environ["PEERSYNC_BACKUP_PASSPHRASE"] = "benchmark passphrase"
    try:
        ours = {}
        for phase in ("first", "incremental"):
            if phase == "incremental":
                mutate(root, seed=1, n=CHANGED)
            started = time.monotonic()
            result = take_snapshot(ws, target=str(workdir / "peersync-target"), prune_after=False)
            ours[phase] = {"seconds": round(time.monotonic() - started, 3),
                           "uploaded_objects": result.uploaded_objects,
                           "uploaded_bytes": result.uploaded_bytes + result.manifest_bytes,
                           "sent_bytes": result.sent_bytes + result.manifest_bytes}
        started = time.monotonic()
        restore(ws, target=str(workdir / "peersync-target"), to=workdir / "restored")
        ours["restore_seconds"] = round(time.monotonic() - started, 3)
    finally:
        if env_before is None:
            os.environ.pop("PEERSYNC_BACKUP_PASSPHRASE", None)
        else:
            os.environ["PEERSYNC_BACKUP_PASSPHRASE"] = env_before

    rclone = Rclone()
    tar_target = workdir / "tar-target"
    tar_target.mkdir()
    if encrypt:
        rclone = rclone.with_env(crypt_env(rclone, "benchcrypt", str(tar_target), "benchmark passphrase", "salt"))
    theirs = {}
    generate(workdir / "ws-tar", files=files, seed=0)  # the same tree, so both start alike
    for phase in ("first", "incremental"):
        if phase == "incremental":
            mutate(workdir / "ws-tar", seed=1, n=CHANGED)
        listing = workdir / "tar-files"
        listing.write_text("".join(p + "\n" for p in sorted(selection_files(workdir / "ws-tar"))))
        name = f"backup-{phase}.tar"
        dest = f"benchcrypt:{name}" if encrypt else str(tar_target / name)
        started = time.monotonic()
        tar = subprocess.Popen(["tar", "-C", str(workdir / "ws-tar"), "-cf", "-", "-T", str(listing)],
                               stdout=subprocess.PIPE)
        rclone.run(["rcat", dest], stdin=tar.stdout)
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar failed")
        theirs[phase] = {"seconds": round(time.monotonic() - started, 3),
                         "uploaded_bytes": sum(p.stat().st_size for p in tar_target.rglob("*") if p.is_file())
                         - sum(v["uploaded_bytes"] for v in theirs.values())}
    return {
        "workdir": str(workdir),
        "files": files,
        "selected_files": len(selected),
        "selected_bytes": sum(len(v) for v in selected.values()),
        "changed_files": CHANGED,
        "encrypted": encrypt,
        "target": "local directory",
        "rclone": ".".join(map(str, rclone.version)),
        "peersync": ours,
        "tar_rclone_rcat": theirs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", nargs="?", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--encrypt", action="store_true", help="both methods through rclone crypt")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="peersync-bench-backup-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("XDG_DATA_HOME", str(workdir / "xdg"))
        result = bench_backup(workdir, args.files, encrypt=args.encrypt)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Backup of {result['selected_files']} files ({result['selected_bytes'] / 1e6:.1f} MB) in the selection"
          f" of a {result['files']}-file workspace, {result['changed_files']} changed in between"
          f"{', encrypted' if result['encrypted'] else ''}:")
    for name, key in (("peersync", "peersync"), ("tar | rclone rcat", "tar_rclone_rcat")):
        r = result[key]
        print(f"  {name:18} first {r['first']['seconds']:6.2f} s {r['first']['uploaded_bytes'] / 1e6:8.2f} MB   "
              f"incremental {r['incremental']['seconds']:6.2f} s {r['incremental']['uploaded_bytes'] / 1e6:8.3f} MB")
    print(f"  peersync restore of the latest snapshot: {result['peersync']['restore_seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
