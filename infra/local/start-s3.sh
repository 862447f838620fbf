#!/usr/bin/env bash
# An S3-compatible endpoint on 127.0.0.1 for S3 work without AWS (moto's standalone server, in memory:
# its buckets vanish when it stops). Needs the test extras (`make install-test`).
#   infra/local/start-s3.sh          then   source runs/local-services/s3.env
source "$(dirname "$0")/common.sh"
S3_PORT="${S3_PORT:-9000}"
start_server s3 "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT"
cat >"$DPT_LOCAL_DIR/s3.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=local-s3
export AWS_SECRET_ACCESS_KEY=local-s3-secret
export AWS_DEFAULT_REGION=us-east-1
ENV
wait_http s3 "http://127.0.0.1:$S3_PORT/moto-api/" 60
echo "client settings: source $DPT_LOCAL_DIR/s3.env"
