#!/usr/bin/env bash
# The collector's figures for BENCHMARKS.md, against a fleet already seeded into DATA_DIR:
#
#   tests/bench/collector.sh DATA_DIR [AGENTS] [REPEATS]
#
# DATA_DIR holds a collector database seeded by census-fleet-sim (`--mode seed --seed 1
# --state DATA_DIR/../fleet-1.json`, see BENCHMARKS.md) plus `secret` (an enrollment secret) and
# `token` (an admin token) beside it. AGENTS (default 100000) is the seeded fleet's size.
# Runs, each against a fresh start of the release collector on 127.0.0.1 with the load-test
# config (rate limits off):
#   1. census-query-bench: CI list with a filter, CI detail, the openssl walk, REPEATS times
#      (default 3), with the collector's RSS and the database size per computer;
#   2. health at 5,000 reports/s (AGENTS agents at AGENTS/5000 s) for 5 minutes after a ramp of
#      one interval, then the same fleet against census-bare-sink for 2 minutes;
#   3. the same health load for 60 s with the default rules, then with every rule disabled:
#      the collector's CPU per report (from /proc/PID/stat) for each;
#   4. 300 known inventories/s (10 % of packages changed) for 90 s;
#   5. 150 first-time inventories/s (new agents, each enrolling first) for 60 s.
# Every tool prints JSON; the figures are collected into OUT (default /tmp/census-bench).
set -euo pipefail
data=$(readlink -f "${1:?usage: collector.sh DATA_DIR [AGENTS] [REPEATS]}")
agents=${2:-100000}
repeats=${3:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/census-bench}
mkdir -p "$out"
bin=$here/target/release
base=$(dirname "$data")
secret=$(cat "$base/secret")
token=$(cat "$base/token")
port=18090
url=http://127.0.0.1:$port
interval=$((agents / 5000))
printf 'enroll_rate_per_minute = 0\nreports_rate_per_minute = 0\n' >"$base/bench-collector.toml"

start() {
  "$bin/census-collector" --config "$base/bench-collector.toml" --data-dir "$data" serve \
    --listen 127.0.0.1:$port >>"$out/collector.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "$url/livez" >/dev/null && return; sleep 0.1; done
  echo "the collector did not start" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sim() { "$bin/census-fleet-sim" --url "$1" "${@:2}" --json 2>>"$out/sim.log"; }

start
for r in $(seq 1 "$repeats"); do
  "$bin/census-query-bench" --url $url --token "$token" --duration 15s --concurrency 4 \
    --collector-pid "$pid" --db "$data/census.db" --json >"$out/query-$r.json"
done

# Health at 5,000/s against the collector, then the bare sink.
cp "$base/fleet-1.json" "$out/health-state.json"
sim $url --agents "$agents" --interval ${interval}s --ramp ${interval}s \
  --duration $((interval + 300))s --seed 1 --state "$out/health-state.json" >"$out/health-collector.json"
grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" >"$out/health-collector-rss.txt"

# Rules on, then every rule off: the collector's CPU per report at the same load.
for variant in rules-on rules-off; do
  if [ $variant = rules-off ]; then
    for id in $(curl -s -H "Authorization: Bearer $token" "$url/api/v1/rules?enabled=true" | jq -r '.items[].id'); do
      curl -s -X PATCH -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"enabled": false}' "$url/api/v1/rules/$id" >/dev/null
    done
  fi
  t0=$(cpu_ticks "$pid")
  sim $url --agents "$agents" --interval ${interval}s --ramp ${interval}s \
    --duration $((interval + 60))s --seed 1 --state "$out/health-state.json" >"$out/health-$variant.json"
  echo "$(( $(cpu_ticks "$pid") - t0 ))" >"$out/health-$variant.ticks"
done
for id in $(curl -s -H "Authorization: Bearer $token" "$url/api/v1/rules?enabled=false" | jq -r '.items[].id'); do
  curl -s -X PATCH -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"enabled": true}' "$url/api/v1/rules/$id" >/dev/null
done

# Inventories: a known fleet with 10 % changed, then first-time agents.
cp "$base/fleet-1.json" "$out/inventory-state.json"
sim $url --mode inventory --agents 18000 --interval 60s --ramp 30s --duration 120s --churn 0.1 \
  --seed 1 --state "$out/inventory-state.json" >"$out/inventory-known.json"
sim $url --mode inventory --agents 9000 --interval 60s --duration 60s --seed 7 \
  --enroll-secret "$secret" >"$out/inventory-first.json"
grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" >"$out/collector-rss-end.txt"
stop

# The bare sink, same fleet and rate.
"$bin/census-bare-sink" --threads 1 >"$out/sink.addr" &
sink=$!
sleep 1
cp "$base/fleet-1.json" "$out/sink-state.json"
sim "http://$(head -n 1 "$out/sink.addr")" --agents "$agents" --interval ${interval}s \
  --ramp ${interval}s --duration $((interval + 120))s --seed 1 --state "$out/sink-state.json" \
  --enroll-secret x >"$out/health-sink.json"
kill "$sink"
echo "figures in $out"
