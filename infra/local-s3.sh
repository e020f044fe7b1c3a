#!/usr/bin/env bash
# A local S3-compatible server for development: moto's standalone server on 127.0.0.1.
#
#   bash infra/local-s3.sh [PORT] [BUCKET ...]      (default port 9000, bucket "corpus")
#
# Then point corpus-embed at it with `storage: {endpoint_url: http://127.0.0.1:PORT}` and any
# non-empty AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${1:-9000}"
shift || true
BUCKETS=("${@:-corpus}")
PY=".venv/bin/python"
[ -x "$PY" ] || PY=python3
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
"$PY" -m moto.server -H 127.0.0.1 -p "$PORT" &
server=$!
trap 'kill $server 2>/dev/null' EXIT INT TERM
"$PY" - "$PORT" "${BUCKETS[@]}" <<'PYEOF'
import sys, time
import boto3, botocore.exceptions
port, buckets = sys.argv[1], sys.argv[2:]
client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
for attempt in range(100):
    try:
        client.list_buckets()
        break
    except botocore.exceptions.EndpointConnectionError:
        time.sleep(0.1)
for bucket in buckets:
    client.create_bucket(Bucket=bucket)
print(f"S3 server on http://127.0.0.1:{port}; buckets: {', '.join(buckets)}")
print(f"  storage: {{endpoint_url: http://127.0.0.1:{port}}}")
PYEOF
wait $server
