#!/usr/bin/env bash
# Stop local servers by the pid recorded at start: SIGTERM, then after a grace period SIGKILL to what is
# left of that server's own process group. Usage: infra/local/stop.sh [ray|mlflow|s3 ...] (default: all)
source "$(dirname "$0")/common.sh"
names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=(ray mlflow s3)
for name in "${names[@]}"; do
  pidfile="$DPT_LOCAL_DIR/$name.pid"
  [[ -f "$pidfile" ]] || { echo "$name: not started here"; continue; }
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true   # anything its group left behind
    rm -f "$pidfile"
    echo "$name: was not running (pid $pid had exited; see $DPT_LOCAL_DIR/$name.log)"
    continue
  fi
  kill -TERM "$pid"
  for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true   # the server's own process group (setsid made it leader)
  rm -f "$pidfile"
  echo "$name stopped (pid $pid)"
done
