"""The dashboard in a real browser: headless Debian Chromium loads the page written from a real
workspace (real syncs over the loopback sshd, real backups) and the DOM is checked; the served
page's buttons restore and drop conflicts and restore a snapshot for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from peersync.testing.browser import browser, chromium_path
from peersync.testing.dashboard_scene import DOWN_PEER, build
from peersync.workspace.workspace import Workspace

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (scripts/setup.sh)")


def cli(ws: Workspace, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peersync", "-w", str(ws.root), *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=180, env={**os.environ, **(env or {})})


class Watched:
    """A page with everything it logged and every request it made."""

    def __init__(self, context, url: str):
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page = context.new_page()
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url)

    def problems(self) -> list:
        return [m for m in self.console if m[0] in ("error", "warning", "pageerror")]


def canvas_ink(page, selector: str) -> int:
    """Pixels that are not transparent in the chart's canvas: > 0 once something is drawn."""
    return page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        if (!c || !c.width) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;
    }""", selector)


def test_static_page_from_a_real_workspace(workspace_pair, tmp_path):
    scene = build(workspace_pair, tmp_path / "backups", tmp_path / "nas")
    L = workspace_pair.local
    done = cli(L, "--json", "dashboard")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    page_file = Path(written["path"])
    assert page_file == L.state / "dashboard.html" and not written["synced"]
    assert page_file.stat().st_mode & 0o777 == 0o600  # it holds conflict contents

    with browser(tmp_path / "chromium-profile") as chromium:
        check_static_page(Watched(chromium, page_file.as_uri()), page_file, scene)


def check_static_page(view: Watched, page_file: Path, scene) -> None:
    page = view.page
    page.wait_for_selector("#sync-chart canvas")
    # peers: every configured one, with what was seen of it
    cards = {card.get_attribute("data-peer"): card.inner_text() for card in page.query_selector_all("[data-peer]")}
    assert set(cards) == {"remote", DOWN_PEER, "nas"}
    assert "reachable" in cards["remote"] and "unreachable" not in cards["remote"]
    assert "unreachable" in cards[DOWN_PEER] and "Connection refused" in cards[DOWN_PEER]
    assert "cloud" in cards["nas"]
    # a conflict's diff against the live file, visible, with the restore command
    user_md = page.locator(".conflict", has=page.locator("h3", has_text="USER.md"))
    assert user_md.locator("pre.diff").is_visible()
    assert user_md.locator("pre.diff .ins").all_inner_texts() == ["+Name: Sam\n", "+Likes: jazz, hiking, chess\n"]
    assert user_md.locator("pre.diff .del").all_inner_texts() == ["−Name: Samantha\n", "−Likes: jazz, hiking\n"]
    assert f"conflicts restore {user_md.get_attribute('data-id')}" in user_md.inner_text()
    assert {c.get_attribute("data-id") for c in page.query_selector_all(".conflict")} == set(scene.conflict_ids)
    # the charts are drawn
    assert canvas_ink(page, "#sync-chart canvas") > 500
    assert canvas_ink(page, "#backup-chart canvas") > 500
    # the timeline lists every sync, the failed one too
    history = page.locator("table.history").first.inner_text()
    assert "failed" in history and "Connection refused" in history
    # trash and deletion records
    trash = page.locator("#trash").inner_text()
    assert "sync with remote" in trash and "memory/notes/old-plan.md" in trash
    page.locator("#trash summary").first.click()
    assert page.locator("#trash ul.paths").first.inner_text().strip() == "memory/notes/scratch.md"
    # backups: three snapshots, the oldest expiring under keep: {last: 2}, a verify recorded
    rows = page.locator("table.snapshots tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).locator(".pill").inner_text() for i in range(3)] == ["kept", "kept", "expires"]
    assert "intact" in page.locator("#backups").inner_text()
    assert "heartbeat" in page.locator("#auto").inner_text()
    # nothing went wrong, nothing left the file
    assert view.problems() == []
    assert view.requests == [page_file.as_uri()]
    assert not page.query_selector("button")  # a static page has no actions


def test_page_shows_file_names_and_contents_as_text_never_as_markup(tmp_path):
    from peersync.dashboard.page import render

    evil = '</script><script>alert("x")</script><img src="https://example.com/x.png" onerror="alert(1)">'
    doc = {"format": 1, "generated": "2026-01-26T10:00:00Z", "host": evil, "workspace": evil, "peersync": "0",
           "contents": True, "history": {"entries": [], "total": 0}, "peers": {"items": []},
           "conflicts": {"items": [{"id": "c-1", "path": evil, "time": None, "peer": evil, "reason": evil, "size": 1,
                                    "actions": True, "live": None, "diff_note": None,
                                    "diff": [["+", evil], ["-", "plain"]],
                                    "commands": {"show": evil, "restore": evil, "drop": evil}}]},
           "trash": {"batches": []}, "records": {"items": [], "total": 0}, "backups": {"available": False},
           "auto": {"mode": "off"}}
    html = render(doc)
    assert html.count("</script>") == 4  # two data blocks, two scripts: nothing closes one early
    target = tmp_path / "page.html"
    target.write_text(html)
    with browser(tmp_path / "chromium-profile") as chromium:
        view = Watched(chromium, target.as_uri())
        assert view.page.locator(".conflict h3").inner_text() == evil
        assert view.page.locator("pre.diff .ins").inner_text() == "+" + evil + "\n"
        assert view.dialogs == [] and view.problems() == []
        assert view.requests == [target.as_uri()]


def test_damaged_history_and_conflicts_index_show_a_notice(workspace_pair, tmp_path):
    L = workspace_pair.local
    L.config_file.write_text("sync:\n  merge: []\n")  # USER.md would merge three-way: a conflict here
    (L.root / "USER.md").write_text("base\n")
    from peersync.sync.runner import run_sync

    assert run_sync(L)[0].ok
    (L.root / "USER.md").write_text("mine\n")
    os.utime(L.root / "USER.md", (1, 1))  # older: the other side's edit wins, ours is kept aside
    (workspace_pair.remote.root / "USER.md").write_text("theirs\n")
    report = run_sync(L)[0]
    assert report.ok and report.conflicts[0].saved_as
    L.history_file.write_text('{"entries": [{"peer": "remote", "time": "2026-01-')
    (L.state / "conflicts" / "index.json").write_bytes(b"\x00\xff not json")

    done = cli(L, "dashboard", "--no-probe")
    assert done.returncode == 0, done.stderr
    assert "history.json" in done.stdout and "index.json" in done.stdout  # said on the terminal too
    with browser(tmp_path / "chromium-profile") as chromium:
        check_notices(Watched(chromium, (L.state / "dashboard.html").as_uri()))


def check_notices(view: Watched) -> None:
    page = view.page
    timeline = page.locator("#timeline .notice")
    assert timeline.is_visible() and "is not valid JSON" in timeline.inner_text()
    conflicts = page.locator("#conflicts .notice")
    assert conflicts.is_visible() and "none is lost" in conflicts.inner_text()
    kept = page.locator(".conflict")  # still listed from the disk, with its diff
    assert kept.count() == 1 and kept.locator("h3").inner_text() == "USER.md"
    assert kept.locator("pre.diff .ins").inner_text() == "+mine\n"
    assert page.locator("[data-peer]").count() == 1
    assert view.problems() == []


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


def http(url: str, *, method: str = "GET", headers: dict | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_served_page_restores_and_drops_conflicts_and_restores_a_snapshot(workspace_pair, tmp_path):
    scene = build(workspace_pair, tmp_path / "backups")
    L = workspace_pair.local
    server = subprocess.Popen([sys.executable, "-m", "peersync", "-w", str(L.root), "dashboard", "--serve"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        first = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/[\w-]+/", first)
        assert url, first + server.stderr.read()
        port = int(url.group(1))
        base = url.group(0)
        # only loopback listens, and nothing is served without the token
        assert listening_addresses(port) == {"0100007F"}
        assert http(f"http://127.0.0.1:{port}/") == 404
        assert http(f"http://127.0.0.1:{port}/not-the-token/api/data") == 404
        assert http(base + "api/data", headers={"Host": f"evil.example:{port}"}) == 400
        assert http(base + "api/data") == 200
        cid = scene.conflict_ids[0]
        assert http(base + f"api/conflicts/{cid}/drop", method="POST",
                    headers={"Origin": "https://evil.example"}) == 403
        assert (L.state / "conflicts" / cid).is_dir()

        with browser(tmp_path / "chromium-profile") as chromium:
            click_through(Watched(chromium, base), base, L, scene)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "stopped" in out


def click_through(view: Watched, base: str, L: Workspace, scene) -> None:
    page = view.page
    page.wait_for_selector("#sync-chart canvas")
    assert "Live" in page.locator("#live-badge").inner_text()
    user_md = page.locator(".conflict", has=page.locator("h3", has_text="USER.md"))
    user_cid = user_md.get_attribute("data-id")
    kept = (L.state / "conflicts" / user_cid / "USER.md").read_text()
    assert (L.root / "USER.md").read_text() != kept
    user_md.locator("button[data-action=restore]").click()
    page.wait_for_selector(f".conflict[data-id={user_cid}]", state="detached")
    assert "Restored USER.md" in page.locator("#toast").inner_text()
    assert (L.root / "USER.md").read_text() == kept  # the workspace holds the kept version again
    replaced = page.locator(".conflict", has=page.locator("h3", has_text="USER.md"))
    assert "replaced by restore of " + user_cid in replaced.inner_text()  # the other version kept in turn

    memory_md = page.locator(".conflict", has=page.locator("h3", has_text="MEMORY.md"))
    memory_cid = memory_md.get_attribute("data-id")
    drop = memory_md.locator("button[data-action=drop]")
    drop.click()
    assert (L.state / "conflicts" / memory_cid).is_dir()  # one click only arms it
    drop.click()
    page.wait_for_selector(f".conflict[data-id={memory_cid}]", state="detached")
    assert not (L.state / "conflicts" / memory_cid).exists()

    oldest = scene.snapshots[0]
    page.locator(f"button[data-action=snapshot-restore][data-id='{oldest}']").click()
    page.locator("#toast", has_text="files of").wait_for()  # (the page's CSP forbids wait_for_function's eval)
    staging = L.root.parent / f"{L.root.name}.restore-{oldest}"
    assert (staging / "memory" / "backup-day-0.md").read_text() == "day 0\n" * 200
    assert str(staging) in page.locator("#toast").inner_text()
    assert view.problems() == []
    assert view.requests and all(u.startswith(base) for u in view.requests)  # nothing but our own server
