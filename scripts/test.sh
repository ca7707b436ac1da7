#!/usr/bin/env bash
# The README's test command: sets up what is missing (scripts/setup.sh), then runs the whole
# suite against a real loopback sshd, rsync, rclone and restic.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PATH="$PWD/.venv/bin:$PATH"
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests — counted as a failure" >&2
  exit 1
fi
exit "$status"
