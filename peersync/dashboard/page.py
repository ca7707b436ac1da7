"""Render the dashboard document as one self-contained HTML page (styles, scripts and data inlined).

The page fetches nothing: uPlot and the page's own script are inlined, and a Content-Security-Policy
allows only those two scripts (by hash), inline styles and data: images — no network at all for a
static page, and only its own origin (the api/ endpoints) for a served one.  The data travels as
JSON in a non-executed script element, with `<`, `>` and `&` escaped so that no file name or
content can end that element early.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from html import escape
from importlib import resources

STATIC = "static"


@cache
def _asset(name: str) -> str:
    return resources.files("peersync.dashboard").joinpath(STATIC, name).read_text(encoding="utf-8")


def _json_for_html(value) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _sha256(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def render(doc: dict, *, live: dict | None = None) -> str:
    """The page.  `live` (served mode): {"refresh": seconds} — the page then polls api/data and
    shows the action buttons; without it the page is a snapshot for file://."""
    scripts = [_asset("uPlot.iife.min.js"), _asset("dashboard.js")]
    connect = "'self'" if live else "'none'"
    csp = (f"default-src 'none'; script-src {' '.join(_sha256(s) for s in scripts)}; "
           f"style-src 'unsafe-inline'; img-src data:; connect-src {connect}; base-uri 'none'; form-action 'none'")
    title = f"peersync · {doc.get('host') or ''}"
    config = {"live": bool(live), "refresh": (live or {}).get("refresh", 0)}
    return "\n".join([
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{escape(title)}</title>",
        f"<style>{_asset('uPlot.min.css')}</style>",
        f"<style>{_asset('dashboard.css')}</style>",
        "</head>",
        "<body>",
        '<div id="app"><noscript>This page needs JavaScript (nothing is fetched: it is all in this file).</noscript></div>',
        f'<script type="application/json" id="peersync-data">{_json_for_html(doc)}</script>',
        f'<script type="application/json" id="peersync-config">{_json_for_html(config)}</script>',
        *(f"<script>{s}</script>" for s in scripts),
        "</body>",
        "</html>",
        "",
    ])
