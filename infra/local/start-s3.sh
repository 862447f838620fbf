#!/usr/bin/env bash
# An S3-compatible endpoint on 127.0.0.1 for S3 work without AWS (moto's standalone server, in memory:
# its buckets vanish when it stops; installed with the project).
#   infra/local/start-s3.sh          then   source runs/local-services/s3.env
# Port: S3_PORT (9000); bucket created at start: S3_BUCKET (dpt).
source "$(dirname "$0")/common.sh"
S3_PORT="${S3_PORT:-9000}"
if [[ ! -x "$VENV_BIN/moto_server" ]]; then
  echo "s3: $VENV_BIN/moto_server not found: install the project first (make quickstart, or make install)" >&2
  exit 1
fi
start_server s3 "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT"
cat >"$DPT_LOCAL_DIR/s3.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=local-s3
export AWS_SECRET_ACCESS_KEY=local-s3-secret
export AWS_DEFAULT_REGION=us-east-1
ENV
wait_http s3 "http://127.0.0.1:$S3_PORT/moto-api/" 60
# One bucket to start with (the server starts empty); more with boto3 or any S3 client.
S3_BUCKET="${S3_BUCKET:-dpt}"
(source "$DPT_LOCAL_DIR/s3.env" && "$VENV_BIN/python" -c \
  "import boto3, sys; boto3.client('s3').create_bucket(Bucket=sys.argv[1])" "$S3_BUCKET")
echo "bucket s3://$S3_BUCKET ready; client settings: source $DPT_LOCAL_DIR/s3.env"
