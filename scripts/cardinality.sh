#!/usr/bin/env bash
# Counts the Prometheus series a decode-scale cluster (DeepSeek-V3 decode:
# 58 MoE layers, 256 experts, 40 nodes x 8 GPUs) costs: the service's own
# after a published plan and a planner cycle over it, plus one worker
# agent's times the 40 nodes (every agent exports the same families, for
# its own 8 GPUs). The workers' windows are real; only node 0 runs, which
# is enough to count, since the service's series do not grow with the
# number of reporting workers. Series grow with layers and GPUs, never with
# experts, so the cluster keeps decode's 58 layers and 40 x 8 GPUs but
# 16 experts: an agent then builds its FP8 weights in seconds, even in a
# debug build, instead of 256 x 58 of them.
#
#   bash scripts/cardinality.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
[[ ${1:-} == --release ]] && profile=release
flags=(-p ballast -p ballast-worker)
[[ $profile == release ]] && flags+=(--release)
cargo build "${flags[@]}" >&2
bin=target/$profile
dir=$(mktemp -d /tmp/ballast-cardinality.XXXXXX)
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT

port=${BALLAST_CARDINALITY_PORT:-18420}
metrics_port=$((port + 1))
"$bin/ballast" serve --listen "127.0.0.1:$port" --database-url "sqlite:$dir/ballast.db" \
    --window 1s --window-grace 200ms --plan-interval 2s 2>"$dir/ballast.log" &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
topology=$(sed -e 's/"num_logical_experts": *[0-9]*/"num_logical_experts": 16/' data/topologies/decode.json)
curl -fsS -X PUT "http://127.0.0.1:$port/v1/clusters/decode" \
    -H 'content-type: application/json' --data-binary "$topology" >/dev/null
"$bin/ballast-worker" run --service "http://127.0.0.1:$port" --cluster decode --node 0 \
    --metrics-listen "127.0.0.1:$metrics_port" --window 1s 2>"$dir/worker.log" &
pids+=($!)

series() { curl -fsS "$1" | grep -cv '^#'; }
# The agent builds its weights and steps; the service publishes the first
# plan and a planner cycle scores it on a closed window.
ready=""
for _ in $(seq 1 300); do
    sleep 1
    if curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q '^ballast_worker_gpu_expert_assignments_total' &&
        curl -fsS "http://127.0.0.1:$port/metrics" | grep -q '^ballast_observed_gpu_load_ratio'; then
        ready=1
        break
    fi
done
if [[ -z $ready ]]; then
    echo "error: no plan scored or no agent step within 300 s; logs:" >&2
    tail -n 5 "$dir/ballast.log" "$dir/worker.log" >&2
    exit 1
fi
service=$(series "http://127.0.0.1:$port/metrics")
worker=$(series "http://127.0.0.1:$metrics_port/metrics")
nodes=$(sed -n 's/.*"num_nodes": *\([0-9]*\).*/\1/p' data/topologies/decode.json)
echo "service: $service series; one agent: $worker series; $nodes agents: $((worker * nodes)); cluster: $((service + worker * nodes))"
