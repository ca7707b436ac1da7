#!/usr/bin/env python3
"""Screenshots of the dashboard for the README: a lived-in workspace (real syncs over a loopback
sshd, real backups) rendered as the static page and as the served page, at 1280×800 and at a
phone's 390×844, in headless Chromium.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs]

Needs Debian's chromium (scripts/setup.sh installs it) and the test extras (playwright).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PEERSYNC_KEEP_CONNECTION", "0")

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="directory for the PNG files")
    parser.add_argument("--full", action="store_true", help="whole pages instead of the first screen")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from peersync.dashboard import write_dashboard
    from peersync.dashboard.server import Dashboard
    from peersync.testing import LoopbackSSHD, wire_pair
    from peersync.testing.browser import browser
    from peersync.testing.dashboard_scene import build

    with tempfile.TemporaryDirectory(prefix="peersync-demo-") as tmp:
        base = Path(tmp)
        with LoopbackSSHD(base / "sshd") as sshd:
            pair = wire_pair(base / "clawd", base / "mac-mini" / "clawd", sshd, peer_name="mac-mini",
                             back_name="laptop")
            build(pair, base / "backups", base / "nas")
            static = write_dashboard(pair.local).path
            board = Dashboard(pair.local, probe=False).start()
            try:
                with browser(base / "chromium-profile") as context:
                    for mode, url in (("static", static.as_uri()), ("served", board.url)):
                        for size, (width, height) in SIZES.items():
                            page = context.new_page()
                            page.set_viewport_size({"width": width, "height": height})
                            page.goto(url)
                            page.wait_for_selector("#sync-chart canvas")
                            if mode == "served":  # the live page: show a conflict with its buttons
                                page.evaluate("document.getElementById('conflicts').scrollIntoView({block: 'start', behavior: 'instant'});"
                                              "window.scrollBy(0, -12)")
                            target = out / f"dashboard-{mode}-{size}.png"
                            page.screenshot(path=str(target), full_page=args.full)
                            page.close()
                            print(target)
            finally:
                board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
