#!/usr/bin/env bash
# install.sh — set peersync up from this folder (the skill's own folder), on macOS or Linux:
#   1. the `peersync` CLI, built from this folder (uv, else pipx, else a private venv);
#   2. OpenClaw's peersync plugin (/sync without an LLM turn, syncs at session start/end),
#      linked from ./openclaw-plugin and told where peersync is;
#   3. `peersync init` for the agent's workspace: the cron job that runs auto-sync.
# Nothing is downloaded except peersync's Python dependencies (from PyPI).  Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${PEERSYNC_BIN_DIR:-$HOME/.local/bin}
say() { printf '==> %s\n' "$*"; }

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

say "peersync CLI from $here"
if command -v uv >/dev/null 2>&1 && [ -z "${PEERSYNC_PYTHON:-}" ]; then
  uv tool install --force --quiet "$here"
  peersync="$(uv tool dir --bin)/peersync"
elif command -v pipx >/dev/null 2>&1 && [ -z "${PEERSYNC_PYTHON:-}" ]; then
  pipx install --force "$here" >/dev/null
  peersync="$(pipx environment --value PIPX_BIN_DIR)/peersync"
else
  python=${PEERSYNC_PYTHON:-}
  if [ -z "$python" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then python=$candidate; break; fi
    done
  fi
  if [ -z "$python" ] || ! python_ok "$python"; then
    echo "install.sh: peersync needs Python 3.11 or newer, or uv (macOS: brew install uv; Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  venv=${PEERSYNC_VENV:-$HOME/.local/share/peersync/venv}
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here"
  mkdir -p "$bin_dir"
  ln -sf "$venv/bin/peersync" "$bin_dir/peersync"
  peersync="$bin_dir/peersync"
fi
"$peersync" --version

if ! command -v openclaw >/dev/null 2>&1; then
  say "OpenClaw's CLI is not on PATH: skipped the plugin and the cron job."
  echo "    Chat commands: the agent runs handler.sh from this folder (see SKILL.md)."
  exit 0
fi

say "OpenClaw plugin (linked from $here/openclaw-plugin)"
openclaw plugins install --link --force --accept-capabilities "$here/openclaw-plugin" >/dev/null
openclaw config set plugins.entries.peersync.config.peersync "$peersync" >/dev/null
openclaw config set plugins.entries.peersync.config.openclaw "$(command -v openclaw)" >/dev/null

say "Workspace: peersync init"
"$peersync" init || true   # it says itself what is missing (ssh, rsync, a running Gateway…)

say "Done. Restart OpenClaw's Gateway to load the plugin: openclaw gateway restart"
