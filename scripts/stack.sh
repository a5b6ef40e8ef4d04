#!/usr/bin/env bash
# The docker-compose stack without Docker: `ballast serve`, one
# `ballast-worker run` agent per node of examples/stack-topology.json with
# drifting synthetic traffic, and Prometheus (Debian's `prometheus` package)
# with prometheus/prometheus.yml and its alert rules, its targets rewritten
# to loopback ports. Grafana is not packaged for Debian: point one at
# http://127.0.0.1:9090 with dashboards/ provisioned, or query Prometheus.
#
#   bash scripts/stack.sh [--database-url URL] [--release]
#
# Ports: service 8420, agents 9100.., Prometheus 9090 (BALLAST_STACK_*_PORT
# to move them). Logs and the SQLite file go to a temporary directory,
# printed at start. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=$(sed -n 's/.*"num_nodes": \([0-9]*\).*/\1/p' examples/stack-topology.json)
database_url=""
profile=debug
while (($#)); do
    case $1 in
        --database-url) database_url=$2; shift 2 ;;
        --release) profile=release; shift ;;
        *) echo "usage: $0 [--database-url URL] [--release]" >&2; exit 2 ;;
    esac
done
service_port=${BALLAST_STACK_SERVICE_PORT:-8420}
agent_port=${BALLAST_STACK_AGENT_PORT:-9100}
prometheus_port=${BALLAST_STACK_PROMETHEUS_PORT:-9090}

command -v prometheus >/dev/null || {
    echo "error: prometheus not installed (apt-get install prometheus)" >&2
    exit 2
}
cargo_flags=(-p ballast -p ballast-worker)
[[ $profile == release ]] && cargo_flags+=(--release)
cargo build "${cargo_flags[@]}"
bin=target/$profile

dir=$(mktemp -d /tmp/ballast-stack.XXXXXX)
echo "stack: logs and data in $dir"
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$bin/ballast" serve --listen "127.0.0.1:$service_port" \
    --database-url "${database_url:-sqlite:$dir/ballast.db}" \
    --window 5s --plan-interval 15s --gain-threshold 0.02 2>"$dir/ballast.log" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$service_port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS -X PUT "http://127.0.0.1:$service_port/v1/clusters/demo" \
    -H 'content-type: application/json' --data-binary @examples/stack-topology.json >/dev/null

targets=()
for node in $(seq 0 $((nodes - 1))); do
    port=$((agent_port + node))
    "$bin/ballast-worker" run --service "http://127.0.0.1:$service_port" --cluster demo \
        --node "$node" --metrics-listen "127.0.0.1:$port" --window 5s \
        --step-interval 50ms --drift-per-step 0.003 2>"$dir/worker-$node.log" &
    pids+=($!)
    targets+=("\"127.0.0.1:$port\"")
done

# prometheus.yml with its docker-compose host names replaced by loopback
# ports; the rules are the shipped ones.
mkdir -p "$dir/prometheus"
cp -r prometheus/rules "$dir/prometheus/"
agents=$(IFS=,; echo "${targets[*]}")
sed -e "s/\"ballast:8420\"/\"127.0.0.1:$service_port\"/" \
    -e "s/targets: \[\"worker-0:9100\".*\]/targets: [$agents]/" \
    prometheus/prometheus.yml >"$dir/prometheus/prometheus.yml"
prometheus --config.file="$dir/prometheus/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" 2>"$dir/prometheus.log" &
pids+=($!)

echo "stack: service http://127.0.0.1:$service_port, agents on ports $agent_port.., Prometheus http://127.0.0.1:$prometheus_port"
echo "stack: try curl -s 'http://127.0.0.1:$prometheus_port/api/v1/query?query=ballast_observed_model_imbalance_ratio'"
wait -n "${pids[@]}" || true
echo "stack: a process exited; see $dir/*.log" >&2
