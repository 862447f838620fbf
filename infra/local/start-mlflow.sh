#!/usr/bin/env bash
# An MLflow tracking server on 127.0.0.1 with a SQLite backend and a proxied local artifact store.
#   infra/local/start-mlflow.sh      then   export MLFLOW_TRACKING_URI=http://127.0.0.1:${MLFLOW_PORT:-5000}
source "$(dirname "$0")/common.sh"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
mkdir -p "$DPT_LOCAL_DIR/mlflow"
export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
start_server mlflow "$VENV_BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "sqlite:///$DPT_LOCAL_DIR/mlflow/mlflow.db" \
  --artifacts-destination "$DPT_LOCAL_DIR/mlflow/artifacts"
wait_http mlflow "http://127.0.0.1:$MLFLOW_PORT/health" 120
echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
