#!/usr/bin/env bash
# handler.sh — the clawdbot-sync command shim: `handler.sh [-w WORKSPACE] COMMAND [ARGS…] [WORKSPACE]`.
# As in clawdbot-sync the workspace may come LAST; it is taken as the workspace only when it is a
# path (it has a '/'), which a peer name, a conflict id or a number never is.  Without one,
# peersync finds it: $WORKSPACE, then the workspace OpenClaw's config gives the agent, then the
# current directory.  All logic lives in the Python CLI (peersync); the OpenClaw plugin calls this.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: handler.sh [-w WORKSPACE] COMMAND [ARGS…] [WORKSPACE]
  status | now [peer…] | sync [peer…] | push [peer] | pull [peer] | diff [peer]
  add <name> <host[:port]> [user] [path] | remove <name> | peers | history [n]
  auto [on|off|status] | heartbeat | conflicts [list|show|diff|restore|drop] [id]
  trash [list|restore|empty] [batch]
  discover [--add] | setup | backup [status|now|list|restore|verify] | help
A workspace given last must be a path with a '/' (e.g. ./clawd or "$WORKSPACE").
USAGE
}

workspace=""
if [ "${1:-}" = "-w" ]; then
  [ "$#" -ge 2 ] || { usage >&2; exit 2; }
  workspace=$2; shift 2
fi
cmd=${1:-status}
[ "$#" -gt 0 ] && shift
args=("$@")
n=${#args[@]}
if [ -z "$workspace" ] && [ "$n" -gt 0 ]; then
  last=${args[$((n - 1))]}
  case "$cmd" in
    # add takes up to four values itself (its path has a '/' too): the workspace is a fifth
    # value, or a third one with a '/' (a user name has none), or — after options such as
    # --remote-command CMD — a last one that is a directory here.
    add) if [ "$n" -eq 5 ] || { [ "$n" -eq 3 ] && [[ "$last" == */* ]]; } \
            || { [ "$n" -gt 5 ] && [[ "$last" == */* ]] && [ -d "$last" ]; }; then is_ws=1; else is_ws=0; fi ;;
    # trash restore takes workspace-relative paths (with a '/'): the workspace is a directory.
    trash) if [[ "$last" == */* ]] && [ -d "$last" ]; then is_ws=1; else is_ws=0; fi ;;
    *) if [[ "$last" == */* ]] || [ "$last" = "." ]; then is_ws=1; else is_ws=0; fi ;;
  esac
  if [ -z "$last" ]; then
    unset 'args[n-1]'            # "$WORKSPACE" while it is unset: no workspace given
  elif [ "$is_ws" -eq 1 ]; then
    workspace=$last; unset 'args[n-1]'
  fi
fi

if [ -n "${PEERSYNC:-}" ]; then
  read -r -a ps <<<"$PEERSYNC"
elif command -v peersync >/dev/null 2>&1; then
  ps=(peersync)
elif [ -x "$HOME/.local/bin/peersync" ]; then
  ps=("$HOME/.local/bin/peersync")
else
  ps=(python3 -P -m peersync)  # -P: a peersync/ folder in the current directory is not peersync
fi
[ -n "$workspace" ] && ps+=(-w "$workspace")

run() { exec "${ps[@]}" "$@"; }
set -- ${args[@]+"${args[@]}"}

case "$cmd" in
  status|"")        run status "$@" ;;
  sync|now)         run sync "$@" ;;
  push|pull|diff)   run "$cmd" "$@" ;;
  add)
    [ "$#" -ge 2 ] || { echo "usage: handler.sh add <name> <host[:port]> [user] [path] [WORKSPACE]" >&2; exit 2; }
    extra=()
    [ "$#" -ge 3 ] && extra+=(--user "$3")
    [ "$#" -ge 4 ] && extra+=(--path "$4")
    run peers add "$1" "$2" ${extra[@]+"${extra[@]}"} "${@:5}" ;;
  remove)           run peers remove "$@" ;;
  peers)            run peers list ;;
  history)          if [ "$#" -ge 1 ] && [[ "$1" =~ ^[0-9]+$ ]]; then run history --limit "$1"; else run history "$@"; fi ;;
  auto)             run auto "$@" ;;
  heartbeat)        run heartbeat "$@" ;;
  conflicts)        run conflicts "$@" ;;
  trash)            run trash "$@" ;;
  setup)            run init "$@" ;;
  backup)           if [ "$#" -eq 0 ]; then run backup status; else run backup "$@"; fi ;;
  init|discover|cloud|watch) run "$cmd" "$@" ;;
  help|-h|--help)   usage ;;
  *) echo "handler.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
