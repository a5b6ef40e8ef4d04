#!/usr/bin/env bash
# Peak memory (VmHWM) of `ballast serve` refusing 32 MB JSON telemetry
# windows (issue 13, item 6): one window, then eight at once, for a
# DeepSeek-V3 prefill cluster. Not in CI. Usage:
#   cargo build --bin ballast && bash scripts/rss_refused_window.sh target/debug/ballast
set -euo pipefail
BIN=$1
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
PORT=$((20000 + RANDOM % 20000))
URL=http://127.0.0.1:$PORT
"$BIN" serve --listen 127.0.0.1:$PORT --database-url "sqlite:$DIR/b.db" >"$DIR/log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done
hwm() { awk '/VmHWM/ {print $2 " kB"}' "/proc/$PID/status"; }
curl -s -o /dev/null -X PUT -H 'content-type: application/json' \
    --data-binary @"$(dirname "$0")/../data/topologies/prefill.json" "$URL/v1/clusters/c1"
echo "started, cluster created: VmHWM $(hwm)"
# Just under 32 MiB: one row of ~16.7 million values `1,`.
python3 -c "
import sys
n = (32 << 20) // 2 - 100
sys.stdout.write('{\"worker\":\"node0-gpu0\",\"seq\":1,\"logical_load\":[[' + '1,' * n + '1]]}')
" >"$DIR/w.json"
post() { curl -s -o "$DIR/r$1" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @"$DIR/w.json" "$URL/v1/clusters/c1/telemetry"; }
echo "one $(stat -c %s "$DIR/w.json")-byte window: HTTP $(post 0) $(head -c 120 "$DIR/r0"); VmHWM $(hwm)"
pids=()
for i in $(seq 1 8); do post "$i" >/dev/null & pids+=($!); done
wait "${pids[@]}"
echo "eight more at once: VmHWM $(hwm)"
kill "$PID"
wait "$PID" 2>/dev/null || true
