#!/usr/bin/env bash
# The test command of the README: runs the whole suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif command -v python >/dev/null 2>&1; then
  PY=python
else
  PY=python3
fi

status=0
"$PY" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests — counted as a failure" >&2
  exit 1
fi
exit "$status"
