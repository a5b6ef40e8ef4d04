#!/usr/bin/env bash
# Contract check: schemathesis (pinned) against a live `ballast serve`, with
# every check (its default; none is turned off in schemathesis.toml), over
# `src/api/openapi.json`. Fails on any 5xx, a response
# that breaks its schema, a spec-valid request refused or an invalid one
# accepted. Bounded: BALLAST_SCHEMATHESIS_SECONDS (default 120). The SSE
# stream is left out: it never ends, so every case would time out.
# schemathesis.toml pins the path's cluster to the seeded one.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=${BALLAST_SCHEMATHESIS_VENV:-.venv-schemathesis}
seconds=${BALLAST_SCHEMATHESIS_SECONDS:-120}
seed=${BALLAST_SCHEMATHESIS_SEED:-1}

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==$version"
fi

cargo build -p ballast --bin ballast

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
admin=schemathesis-admin
BALLAST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/ballast" serve --listen "127.0.0.1:$port" \
    --database-url "sqlite:$dir/ballast.db" \
    --worker-token schemathesis-worker --admin-token "$admin" \
    --max-wait 1s --window 1s --window-grace 100ms >"$dir/service.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
    curl -fsS -m 1 "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

# A cluster with a plan, so that requests which name it reach the handlers.
auth=(-H "authorization: Bearer $admin")
curl -fsS "${auth[@]}" -X PUT "$base/v1/clusters/demo" -H 'content-type: application/json' \
    --data @data/topologies/small.json >/dev/null
python3 - "$base" "$admin" <<'EOF'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
for gpu in range(8):
    body = {"worker": f"node{gpu // 4}-gpu{gpu % 4}", "seq": 1,
            "logical_load": [[100 + (e * l) % 13 for e in range(64)] for l in range(26)]}
    req = urllib.request.Request(f"{base}/v1/clusters/demo/telemetry", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    urllib.request.urlopen(req).read()
EOF
sleep 1.5
curl -fsS "${auth[@]}" -X POST "$base/v1/clusters/demo/rebalance" >/dev/null

# One run; its output also goes to $dir/run.log for the retry rule below.
run_schemathesis() {
    "$venv/bin/schemathesis" run src/api/openapi.json --url "$base" \
        -H "Authorization: Bearer $admin" \
        --max-time "$seconds" --request-timeout 10 --seed "$seed" \
        --workers 2 --exclude-path '/v1/clusters/{cluster}/plans/stream' 2>&1 | tee "$dir/run.log"
    return "${PIPESTATUS[0]}"
}

started=$(date +%s)
status=0
run_schemathesis || status=$?
# schemathesis can crash inside itself (seen once: CPython's "SystemError: AST
# constructor recursion depth mismatch" while it built a case). A run that
# failed with such an error and reported no API failure is run once more; an
# API failure is never retried.
if [ "$status" -ne 0 ] && ! grep -q '^Failures:' "$dir/run.log" \
    && grep -Eq 'SystemError|Internal Error|Runtime Error|Traceback' "$dir/run.log"; then
    echo "schemathesis: crashed without an API failure; running it once more" >&2
    status=0
    run_schemathesis || status=$?
fi
echo "schemathesis: exit $status after $(($(date +%s) - started)) s" >&2
if [ "$status" -ne 0 ]; then
    tail -n 50 "$dir/service.log" >&2
fi
exit "$status"
