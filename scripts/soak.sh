#!/usr/bin/env bash
# Soak test (not in CI; docs/soak.md): 320 workers at 1 Hz against `ballast
# serve` on PostgreSQL for 10 minutes, with `kill -9` of the service every
# 30 s (a supervisor loop restarts it at once, as systemd would) and a
# PostgreSQL restart every 2 minutes. Reports windows acknowledged vs
# counted, p99 ingest latency outside the fault seconds, and the service's
# RSS at the start and the end.
#
#   bash scripts/soak.sh                       # the full run, about 12 minutes
#   bash scripts/soak.sh --minutes 2 --debug   # a trial
#
# PostgreSQL is a cluster of its own (`soak`, port 5439), created on first
# use, so its restarts leave other databases on the machine alone.
#
# Flags: --minutes N (10), --kill-every S (30), --pg-restart-every S (120),
# --port P (8421, the service), --pg-port P (5439), --settle S (5: seconds after a fault left out of the
# calm p99), --debug (debug build instead of release).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10 kill_every=30 pg_every=120 port=8421 pg_port=5439 settle=5 profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --kill-every) kill_every=$2; shift 2 ;;
        --pg-restart-every) pg_every=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --pg-port) pg_port=$2; shift 2 ;;
        --settle) settle=$2; shift 2 ;;
        --debug) profile=debug; shift ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
seconds=$((minutes * 60))
cargo_profile=$([ "$profile" = release ] && echo --release || true)

# A PostgreSQL cluster of its own (port $pg_port), so restarting it does
# not disturb anyone else's database on this machine.
bash scripts/postgres.sh >/dev/null # installs PostgreSQL if absent
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version soak"; then
    pg_createcluster "$version" soak --port "$pg_port" >&2
fi
pg_ctlcluster "$version" soak start >&2 || true
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$pg_port" && break; sleep 1; done
as_postgres() { su postgres -c "psql -p $pg_port -qtAc \"$1\""; }
[ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'ballast'")" = 1 ] ||
    as_postgres "CREATE ROLE ballast LOGIN PASSWORD 'ballast' CREATEDB" >&2
database="ballast_soak_$(date +%s)"
as_postgres "CREATE DATABASE $database OWNER ballast"
database_url="postgres://ballast:ballast@127.0.0.1:$pg_port/$database"

cargo build $cargo_profile -p ballast --bin ballast
cargo build $cargo_profile -p ballast-worker --example soak

out=$(mktemp -d /tmp/ballast-soak.XXXXXX)
# Copies, so a rebuild during the run cannot swap the binary under the supervisor.
cp "target/$profile/ballast" "target/$profile/examples/soak" "$out/"
echo "soak: $minutes min, kill -9 every ${kill_every}s, PostgreSQL restart every ${pg_every}s; files in $out" >&2
base="http://127.0.0.1:$port"

# The supervisor: restarts the service whenever it dies, until told to stop.
(
    while [ ! -e "$out/stop" ]; do
        BALLAST_LOG=warn "$out/ballast" serve --listen "127.0.0.1:$port" \
            --database-url "$database_url" --admin-token soak-admin --worker-token soak-worker \
            >>"$out/service.log" 2>&1 &
        echo $! >"$out/pid"
        wait $! || true
        sleep 0.2 # a start that fails at once (database restarting) is not a hot loop
    done
) &
supervisor=$!

healthy() {
    for _ in $(seq 1 300); do
        curl -fsS -m 1 "$base/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

healthy || { echo "the service did not start; see $out/service.log" >&2; exit 1; }
# 40 nodes x 8 GPUs = 320 workers; a small model keeps the driver's JSON cheap.
curl -fsS -X PUT "$base/v1/clusters/soak" -H 'authorization: Bearer soak-admin' \
    -H 'content-type: application/json' \
    -d '{"num_layers": 4, "num_logical_experts": 64, "num_groups": 8,
         "num_nodes": 40, "gpus_per_node": 8, "slots_per_gpu": 2}' >/dev/null
sleep 2
rss_start=$(rss_of "$(cat "$out/pid")")

"$out/soak" --service "$base" --cluster soak --token soak-worker \
    --seconds "$seconds" --faults "$out/faults" --settle "$settle" >"$out/report.txt" 2>"$out/driver.log" &
driver=$!

started=$(date +%s)
next_kill=$kill_every next_pg=$pg_every
incarnation_end_rss=()
# Deadlines rather than `elapsed % period`: a slow loop turn skips no fault.
while :; do
    sleep 0.5
    elapsed=$(($(date +%s) - started))
    [ "$elapsed" -ge "$seconds" ] && break
    if [ "$elapsed" -ge "$next_pg" ]; then
        next_pg=$((next_pg + pg_every))
        # A kill due at the same second waits for the next turn.
        [ "$next_kill" -le "$elapsed" ] && next_kill=$((elapsed + 1))
        date +%s%3N >>"$out/faults"
        pg_ctlcluster "$version" soak restart
        echo "t=${elapsed}s PostgreSQL restarted" >&2
    elif [ "$elapsed" -ge "$next_kill" ]; then
        next_kill=$((next_kill + kill_every))
        pid=$(cat "$out/pid")
        incarnation_end_rss+=("$(rss_of "$pid")")
        date +%s%3N >>"$out/faults"
        kill -9 "$pid" 2>/dev/null || true
        echo "t=${elapsed}s kill -9 $pid (RSS before: ${incarnation_end_rss[-1]} kB)" >&2
    fi
done
rss_end=$(rss_of "$(cat "$out/pid")")
wait "$driver" && driver_ok=0 || driver_ok=$?

touch "$out/stop"
kill -TERM "$(cat "$out/pid")" 2>/dev/null || true
wait "$supervisor" 2>/dev/null || true
as_postgres "DROP DATABASE IF EXISTS $database" || true

cat "$out/report.txt"
echo "service RSS: ${rss_start} kB at the start, ${rss_end} kB at the end;" \
    "before each kill -9: ${incarnation_end_rss[*]:-none} kB"
echo "service restarts: $(grep -c . "$out/faults" 2>/dev/null || echo 0) faults; logs in $out"
exit "$driver_ok"
