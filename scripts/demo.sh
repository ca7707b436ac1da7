#!/usr/bin/env bash
# The README's demo: sets up what is missing, then syncs two agent workspaces on this machine
# over a real (loopback) SSH server with its own keys — a conflict and a log merge included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/python scripts/demo.py "$@"
