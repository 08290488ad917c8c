#!/usr/bin/env bash
# Starts a real MLflow tracking server for the tests (PyPI `mlflow`, SQLite backend, 127.0.0.1
# only); it stops by itself after STAGEWISE_MLFLOW_LIFETIME seconds (default 5400). Prints the
# variables the tests read (`eval "$(.ci/mlflow.sh)"`); exits 1 when it cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$(pwd)/$TARGET" ;; esac
TOOLS="$TARGET/tools"
mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/mlflow/bin/mlflow" ]; then
  rm -rf "$TOOLS/mlflow"
  python3 -m venv "$TOOLS/mlflow" >&2 && "$TOOLS/mlflow/bin/pip" install --quiet --disable-pip-version-check mlflow >&2 || exit 1
fi
PORT="${STAGEWISE_MLFLOW_PORT:-15050}"
D="$(mktemp -d)"
timeout "${STAGEWISE_MLFLOW_LIFETIME:-5400}" "$TOOLS/mlflow/bin/mlflow" server \
  --backend-store-uri "sqlite:///$D/mlflow.db" --default-artifact-root "$D/artifacts" \
  --host 127.0.0.1 --port "$PORT" --workers 1 > "$D/mlflow.log" 2>&1 &
SERVER=$!
# Ready when /health answers (database migrations take a minute on a busy 2-core machine).
for _ in $(seq 240); do
  if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; then
    echo "export STAGEWISE_TEST_MLFLOW=http://127.0.0.1:$PORT"
    echo "export STAGEWISE_TEST_MLFLOW_PID=$SERVER"
    echo "export STAGEWISE_TEST_MLFLOW_PYTHON=$TOOLS/mlflow/bin/python"
    exit 0
  fi
  kill -0 "$SERVER" 2>/dev/null || break
  sleep 1
done
echo "MLflow did not start; its log:" >&2
tail -20 "$D/mlflow.log" >&2
kill "$SERVER" 2>/dev/null || true
exit 1
