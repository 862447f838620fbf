# Shared by the start/stop scripts: where state lives, and how a server is started and stopped by pid.
# Every server listens on 127.0.0.1 only and is stopped by the pid recorded when it started (never by name).
set -euo pipefail
DPT_LOCAL_DIR="${DPT_LOCAL_DIR:-$PWD/runs/local-services}"
VENV_BIN="${VENV_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin}"
mkdir -p "$DPT_LOCAL_DIR"

# start_server NAME COMMAND...: run COMMAND in its own session (so it leads its own process group),
# output to NAME.log, pid to NAME.pid. Refuses if a recorded pid is still alive.
start_server() {
  local name=$1; shift
  local pidfile="$DPT_LOCAL_DIR/$name.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$pidfile")); stop it with infra/local/stop.sh $name" >&2
    return 1
  fi
  setsid "$@" >"$DPT_LOCAL_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$pidfile"
  echo "$name started (pid $!, log $DPT_LOCAL_DIR/$name.log)"
}

# wait_http NAME URL [SECONDS]: wait until URL answers 2xx (or 401: up, but asks for a token).
wait_http() {
  local name=$1 url=$2 limit=${3:-120} code
  for ((i = 0; i < limit; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
    if [[ $code == 2* || $code == 401 ]]; then echo "$name ready at $url"; return 0; fi
    if ! kill -0 "$(cat "$DPT_LOCAL_DIR/$name.pid")" 2>/dev/null; then
      echo "$name exited; see $DPT_LOCAL_DIR/$name.log" >&2; return 1
    fi
    sleep 1
  done
  echo "$name not ready after ${limit}s; see $DPT_LOCAL_DIR/$name.log" >&2
  return 1
}
