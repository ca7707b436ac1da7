"""Headless Debian Chromium for tests and screenshots, driven through Playwright (no browser download:
the system's /usr/bin/chromium, a fresh profile directory, nothing phoning home)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--no-default-browser-check", "--metrics-recording-only"]


def chromium_path() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("chromium")


@contextlib.contextmanager
def browser(profile_dir: Path | str):
    """A Playwright browser context on Debian's Chromium with its own, fresh --user-data-dir."""
    from playwright.sync_api import (
        sync_playwright,  # lazy: only the browser tests need it (test extra)
    )

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("Chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh does it)")
    profile = Path(profile_dir)
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 800}, device_scale_factor=1, service_workers="block")
        try:
            yield context
        finally:
            context.close()
