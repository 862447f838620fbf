#!/usr/bin/env bash
# A single-machine Ray head on 127.0.0.1 with token authentication on.
#   infra/local/start-ray-head.sh            then   source runs/local-services/ray.env
# Ports: RAY_PORT (6379), RAY_DASHBOARD_PORT (8265); CPUs: RAY_NUM_CPUS (all).
source "$(dirname "$0")/common.sh"
RAY_PORT="${RAY_PORT:-6379}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
TOKEN="$DPT_LOCAL_DIR/ray/auth_token"

if [[ ! -s "$TOKEN" ]]; then
  # `ray get-auth-token --generate` writes ~/.ray/auth_token; keep it under our directory instead.
  # Its stdout is the token: never shown.
  env -u RAY_AUTH_TOKEN_PATH -u RAY_AUTH_TOKEN HOME="$DPT_LOCAL_DIR" RAY_AUTH_MODE=token \
    "$VENV_BIN/ray" get-auth-token --generate >/dev/null 2>&1
  mkdir -p "$(dirname "$TOKEN")"
  mv "$DPT_LOCAL_DIR/.ray/auth_token" "$TOKEN"
  rmdir "$DPT_LOCAL_DIR/.ray" 2>/dev/null || true
  chmod 600 "$TOKEN"
fi

export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$TOKEN"
# A job's entrypoint (`python -m training.train`, `dpt ...`) runs with the head's PATH: make it this venv's, as
# a cluster image puts its Python with the project's dependencies first on PATH.
export PATH="$VENV_BIN:$PATH"
# Without this Ray replaces 127.0.0.1 with the machine's routable address and binds every interface.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# On SIGTERM (stop.sh) a head drains for up to this long before it stops (Ray's default: 30 s); a machine's own
# head has no other nodes to hand work to.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-5}"
# Ray's internal servers default to fixed ports (dashboard agent 52365, client 10001, ...); another Ray instance on
# this machine (a `dpt` command's local one) would take them and the head would lose its job agent: free ones.
free_port() { "$VENV_BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
args=(start --head --block --node-ip-address=127.0.0.1 --port="$RAY_PORT"
      --dashboard-host=127.0.0.1 --dashboard-port="$RAY_DASHBOARD_PORT" --disable-usage-stats
      --dashboard-agent-listen-port="$(free_port)" --dashboard-agent-grpc-port="$(free_port)"
      --runtime-env-agent-port="$(free_port)" --metrics-export-port="$(free_port)"
      --ray-client-server-port="$(free_port)")
[[ -n "${RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus="$RAY_NUM_CPUS")
start_server ray "$VENV_BIN/ray" "${args[@]}"

cat >"$DPT_LOCAL_DIR/ray.env" <<ENV
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$TOKEN
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_ADDRESS=127.0.0.1:$RAY_PORT
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$RAY_DASHBOARD_PORT
ENV
wait_http ray "http://127.0.0.1:$RAY_DASHBOARD_PORT/api/version" 180
echo "client settings: source $DPT_LOCAL_DIR/ray.env   (then: ray job submit -- ...)"
