#!/usr/bin/env bash
# handler.sh — the clawdbot-sync command shim: `handler.sh COMMAND [ARGS…] $WORKSPACE`.
# The workspace is always the LAST argument. All logic lives in the Python CLI (peersync).
set -euo pipefail

usage() {
  cat >&2 <<'USAGE'
usage: handler.sh COMMAND [ARGS…] WORKSPACE
  status | sync [peer] | now [peer] | push [peer] | pull [peer] | diff [peer]
  add <name> <host[:port]> [user] [path] | remove <name> | peers | history
  auto <on|off|status> | heartbeat | conflicts [list|show|restore|drop] [id] | trash [list|restore|empty]
  init | discover
USAGE
  exit 2
}

[ "$#" -ge 2 ] || usage
cmd=$1; shift
workspace=${!#}                      # last argument
args=("${@:1:$#-1}")                 # everything between the command and the workspace

if [ -n "${PEERSYNC:-}" ]; then
  read -r -a ps <<<"$PEERSYNC"
elif command -v peersync >/dev/null 2>&1; then
  ps=(peersync)
elif [ -x "$HOME/.local/bin/peersync" ]; then
  ps=("$HOME/.local/bin/peersync")
else
  ps=(python3 -m peersync)
fi

run() { exec "${ps[@]}" -w "$workspace" "$@"; }

case "$cmd" in
  status)           run status ${args[@]+"${args[@]}"} ;;
  sync|now)         run sync ${args[@]+"${args[@]}"} ;;
  push|pull|diff)   run "$cmd" ${args[@]+"${args[@]}"} ;;
  add)
    [ "${#args[@]}" -ge 2 ] || { echo "usage: handler.sh add <name> <host[:port]> [user] [path] WORKSPACE" >&2; exit 2; }
    extra=()
    [ "${#args[@]}" -ge 3 ] && extra+=(--user "${args[2]}")
    [ "${#args[@]}" -ge 4 ] && extra+=(--path "${args[3]}")
    run peers add "${args[0]}" "${args[1]}" ${extra[@]+"${extra[@]}"} ${args[4]+"${args[@]:4}"} ;;
  remove)           run peers remove ${args[@]+"${args[@]}"} ;;
  peers)            run peers list ;;
  history)          run history ${args[@]+"${args[@]}"} ;;
  auto)             run auto ${args[@]+"${args[@]}"} ;;
  heartbeat)        run heartbeat ${args[@]+"${args[@]}"} ;;
  conflicts)        run conflicts ${args[@]+"${args[@]}"} ;;
  trash)            run trash ${args[@]+"${args[@]}"} ;;
  init|discover|backup|cloud|watch) run "$cmd" ${args[@]+"${args[@]}"} ;;
  *) echo "handler.sh: unknown command '$cmd'" >&2; usage ;;
esac
