#!/usr/bin/env bash
# The agent's figures for BENCHMARKS.md, beside its peers', in one run:
#
#   tests/bench/agent.sh [REPEATS] [CYCLES]
#
# Builds the release binaries, then REPEATS times (default 3):
#   1. shared/bench/peers.sh: census-agent inventory vs fusioninventory-agent and ocsinventory-agent
#      (wall, peak RSS), node_exporter's and zabbix_agentd's idle RSS;
#   2. zabbix_agentd's main process alone (the target compares with it, not with all processes);
#   3. `census-agent run` against a release collector on 127.0.0.1, health every 60 s (the default):
#      idle RSS after 10 s (as the peers), then over CYCLES health cycles (default 3): CPU time per
#      cycle and between cycles (nanoseconds from /proc/PID/schedstat, sampled every 0.5 s; a
#      sample is "in a cycle" when it is within 5 s of a health report), and the bytes the agent's
#      TCP connections sent (tcp_info bytes_sent from `ss`), i.e. the wire per minute in steady
#      state, HTTP headers included.
# Prints every run's figures, then min / median / max of each.
set -euo pipefail
repeats=${1:-3}
cycles=${2:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
peers=${PEERS:-$here/../shared/bench/peers.sh}
cd "$here"
cargo build --release --locked -p census-agent -p census-collector >/dev/null 2>&1
bin=$here/target/release
work=$(mktemp -d)
port=18081
cleanup() { pkill -f "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/census-collector" --data-dir "$work/c" enroll-secret create --name bench >"$work/secret" 2>/dev/null
secret=$(grep -o 'ces_[A-Za-z0-9_-]*' "$work/secret" | head -n 1)
"$bin/census-collector" --data-dir "$work/c" serve --listen 127.0.0.1:$port >"$work/c.log" 2>&1 &

zabbix_main() {
  mkdir -p "$work/zbx"
  printf 'LogType=console\nPidFile=%s/zbx/pid\nListenIP=127.0.0.1\nListenPort=20051\nServer=127.0.0.1\nAllowRoot=1\n' "$work" >"$work/zbx/conf"
  zabbix_agentd -f -c "$work/zbx/conf" >/dev/null 2>&1 &
  local zb=$!
  sleep 10
  awk '/^VmRSS/ {print $2}' "/proc/$zb/status"
  kill "$zb"; wait "$zb" 2>/dev/null || true
}

agent_run() { # prints: idle_rss_kb cpu_ms_per_cycle cpu_ms_between_cycles bytes_per_minute
  local state=$work/a$1
  mkdir -p "$state"
  CENSUS_ENROLL_SECRET=$secret CENSUS_STATE_DIR=$state \
    "$bin/census-agent" --server http://127.0.0.1:$port run >"$state/log" 2>&1 &
  local pid=$!
  sleep 10
  local rss
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  # Past the start-up inventory: measure whole cycles from here.
  local sent0 end=$((SECONDS + 60 * cycles))
  sent0=$(ss -tinH state established "( dport = :$port )" | grep -o 'bytes_sent:[0-9]*' | cut -d: -f2 | paste -sd+ | bc)
  : >"$state/sched"
  while [ $SECONDS -lt $end ]; do
    echo "$(date +%s.%N) $(cut -d' ' -f1 "/proc/$pid/schedstat")" >>"$state/sched"
    sleep 0.5
  done
  local sent1
  sent1=$(ss -tinH state established "( dport = :$port )" | grep -o 'bytes_sent:[0-9]*' | cut -d: -f2 | paste -sd+ | bc)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Cycle times: when the collector filed a health report (the agent's log says nothing per cycle),
  # so take the jumps in CPU time: a sample whose step is over 0.3 ms opens a 5 s cycle window.
  python3 - "$state/sched" "$rss" "$sent0" "$sent1" "$cycles" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
steps = [(rows[i][0], rows[i][1] - rows[i - 1][1]) for i in range(1, len(rows))]
starts = [t for t, d in steps if d > 300_000]
# Merge starts closer than 5 s into one cycle.
cycles = []
for t in starts:
    if not cycles or t - cycles[-1] > 5:
        cycles.append(t)
in_cycle = lambda t: any(0 <= t - c <= 5 for c in cycles) or any(0 <= c - t <= 4 for c in cycles)
cycle_ns = sum(d for t, d in steps if in_cycle(t))
idle_ns = sum(d for t, d in steps if not in_cycle(t))
n = max(len(cycles), 1)
minutes = (rows[-1][0] - rows[0][0]) / 60
print(int(sys.argv[2]), "%.2f" % (cycle_ns / n / 1e6), "%.3f" % (idle_ns / 1e6),
      int((float(sys.argv[4]) - float(sys.argv[3])) / minutes), len(cycles))
PY
}

for r in $(seq 1 "$repeats"); do
  echo "== run $r"
  "$peers" "$bin/census-agent" 10 | tee "$work/peers$r"
  echo "zabbix_agentd main process RSS KB: $(zabbix_main | tee "$work/zbx$r")"
  agent_run "$r" | tee "$work/agent$r"
  echo "(census-agent run: idle RSS KB, CPU ms per health cycle, CPU ms between cycles over all, wire bytes per minute, cycles seen)"
done

echo
echo "== min / median / max over $repeats runs"
python3 - "$work" "$repeats" <<'PY'
import re, statistics, sys
work, n = sys.argv[1], int(sys.argv[2])
def peers(i, label, col):
    for line in open(f"{work}/peers{i}"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return float(cells[col])
series = {
    "census-agent inventory wall s": [peers(i, "census-agent inventory", 1) for i in range(1, n + 1)],
    "fusioninventory-agent wall s": [peers(i, "fusioninventory-agent --local", 1) for i in range(1, n + 1)],
    "census-agent inventory peak RSS KB": [peers(i, "census-agent inventory", 2) for i in range(1, n + 1)],
    "fusioninventory-agent peak RSS KB": [peers(i, "fusioninventory-agent --local", 2) for i in range(1, n + 1)],
    "node_exporter idle RSS KB": [peers(i, "prometheus-node-exporter", 2) for i in range(1, n + 1)],
    "zabbix_agentd main process RSS KB": [float(open(f"{work}/zbx{i}").read()) for i in range(1, n + 1)],
}
agent = [list(map(float, open(f"{work}/agent{i}").read().split())) for i in range(1, n + 1)]
for k, name in enumerate(["census-agent run idle RSS KB", "census-agent CPU ms per health cycle",
                          "census-agent CPU ms between cycles (whole run)", "census-agent wire bytes per minute"]):
    series[name] = [a[k] for a in agent]
series["inventory wall ratio (fusion / census)"] = [f / c for f, c in zip(series["fusioninventory-agent wall s"], series["census-agent inventory wall s"])]
series["inventory peak RSS ratio (fusion / census)"] = [f / c for f, c in zip(series["fusioninventory-agent peak RSS KB"], series["census-agent inventory peak RSS KB"])]
for name, values in series.items():
    print(f"| {name} | {min(values):g} | {statistics.median(values):g} | {max(values):g} |")
PY
