"""The checkout runs anywhere: no test, script or doc names a path that only one machine has.

CI clones main into a new directory on a new machine.  A test that ran the CLI from a virtualenv
outside the checkout passed where it was written and failed there; this check fails first.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Absolute paths that belong to one machine's set-up: a virtualenv or site-packages anywhere, a
# user's checkout or home tree, this very checkout.  System paths (/usr, /etc, /tmp…) and the
# example paths of the docs (/home/clawdbot/clawd, /Users/…) are fine.
MACHINE_PATH = re.compile(r"""(?<![\w.$}])(/[\w.+-]+)+/(\.?venv|site-packages|dist-packages)/"""
                          r"""|(?<![\w.$}~])/(work|root)/[\w.+-]+""")
CHECKED = ("tests", "scripts", ".ci", "docs", "README.md", "SKILL.md", "handler.sh", "openclaw")
ALLOWED = {
    # attack inputs and recorded tool output, not paths the code uses
    ("tests/test_sync_e2e.py", "/root/.ssh/"),
    ("tests/test_backup_rclone.py", "/root/.config/rclone/rclone.conf"),
}


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--", *CHECKED], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def test_no_file_names_a_path_of_one_machine():
    here = str(ROOT)
    found = []
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        rel = str(path.relative_to(ROOT))
        for number, line in enumerate(text.splitlines(), 1):
            hits = [m.group(0) for m in MACHINE_PATH.finditer(line)]
            if here in line:
                hits.append(here)
            hits = [h for h in hits if not any(rel == f and h in a for f, a in ALLOWED)]
            if hits:
                found.append(f"{rel}:{number}: {', '.join(hits)}")
    assert not found, ("paths that exist only on one machine (resolve them from the checkout, sys.executable "
                       "or the environment):\n" + "\n".join(found))


def test_the_check_catches_a_virtualenv_path():
    assert MACHINE_PATH.search('subprocess.run(["/work/venv/bin/peersync", "discover"])')
    assert MACHINE_PATH.search("cmd = '/home/dev/project/.venv/bin/python'")
    assert not MACHINE_PATH.search('Path("/usr/bin/rrsync")')
    assert not MACHINE_PATH.search("--path /home/clawdbot/clawd")
