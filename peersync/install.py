"""Where this peersync was installed from, so that install hints name a real directory.

No package registry holds peersync: it is installed from a checkout or the skill's folder
(`pipx install DIR`, `uv tool install DIR`, or `pip install DIR` in a venv — README "Install").
"""

from __future__ import annotations

# Lazy imports: only hints (error paths) need importlib.metadata and json.
import os
from pathlib import Path
from urllib.parse import unquote, urlparse


def source_dir() -> str | None:
    """The directory peersync was installed from, if it still exists: what pip/pipx/uv recorded
    (PEP 610's direct_url.json), or the checkout this code runs from."""
    try:
        import json  # lazy: error paths only
        from importlib import metadata  # lazy: error paths only

        raw = metadata.distribution("peersync").read_text("direct_url.json")
        url = json.loads(raw).get("url", "") if raw else ""
        if url.startswith("file://"):
            path = unquote(urlparse(url).path)
            if _is_source(Path(path)):
                return path
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    checkout = Path(__file__).resolve().parent.parent
    return str(checkout) if _is_source(checkout) else None


def _is_source(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "peersync" / "__init__.py").is_file()


def local_hint() -> str:
    """How to put `peersync` on this machine's PATH."""
    src = source_dir() or "/path/to/peersync"
    return (f"install it with `pipx install {src}` (or `uv tool install {src}`), then `pipx ensurepath`; "
            "see the README's Install section")


def remote_hint(peer: str) -> str:
    """How to install peersync on a peer: copy the source there, then install it the same way."""
    src = source_dir() or "/path/to/peersync"
    name = os.path.basename(src.rstrip("/")) or "peersync"
    return (f"Install it on {peer} from a copy of {src} (e.g. `rsync -a --exclude .venv {src}/ HOST:{name}/`, "
            f"then on {peer}: `pipx install ~/{name}`)")
