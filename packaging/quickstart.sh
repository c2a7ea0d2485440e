#!/usr/bin/env bash
# Census on this machine in one command: builds the release binaries, starts a collector on a
# fresh data directory, runs an agent on this machine against it, and prints the curl commands
# that show what the CMDB now knows. Ctrl-C stops both.
#
#   packaging/quickstart.sh            # collector on 127.0.0.1:8080
#   CENSUS_PORT=9090 packaging/quickstart.sh
set -euo pipefail

cd "$(dirname "$0")/.."
port=${CENSUS_PORT:-8080}
interval=${CENSUS_HEALTH_INTERVAL:-15s}
run_dir=$(pwd)/target/quickstart/$(date +%Y%m%d-%H%M%S)
data_dir=$run_dir/census-data
state_dir=$run_dir/agent-state
mkdir -p "$data_dir" "$state_dir"

echo "== building census-collector and census-agent (release)"
cargo build --release --locked -p census-collector -p census-agent
bin=$(pwd)/target/release

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "== stopping Census"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "data kept in $run_dir"
}
trap stop INT TERM EXIT

# Credentials first: an enrollment secret the agent trades for its own token, and a viewer
# token for the curl examples. Each command prints the secret alone on its last line.
secret=$("$bin/census-collector" --data-dir "$data_dir" enroll-secret create --name quickstart --expires 1d | tail -n 1)
token=$("$bin/census-collector" --data-dir "$data_dir" token create --role viewer --name quickstart | tail -n 1)

echo "== starting census-collector on 127.0.0.1:$port (data in $data_dir)"
"$bin/census-collector" --data-dir "$data_dir" serve --listen "127.0.0.1:$port" &
pids+=($!)

url=http://127.0.0.1:$port
for _ in $(seq 1 100); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "census-collector did not start" >&2; exit 1; }
  sleep 0.1
done

echo "== starting census-agent on this machine (health every $interval, state in $state_dir)"
CENSUS_ENROLL_SECRET=$secret CENSUS_HEALTH_INTERVAL=$interval \
  "$bin/census-agent" --state-dir "$state_dir" --server "$url" run &
pids+=($!)

for _ in $(seq 1 100); do
  id=$(curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/cis?class=computer" 2>/dev/null | sed -n 's/.*"id":\([0-9]*\).*/\1/p' | head -n 1)
  [ -n "$id" ] && break
  sleep 0.2
done

cat <<MSG

Census is running. The API needs a token; this viewer token was made for you:

  export CENSUS_TOKEN=$token

Then try:

  curl -s -H "Authorization: Bearer \$CENSUS_TOKEN" '$url/api/v1/cis?class=computer'           # this machine's computer CI
  curl -s -H "Authorization: Bearer \$CENSUS_TOKEN" '$url/api/v1/cis/${id:-ID}'                    # attributes, latest health, relationships
  curl -s -H "Authorization: Bearer \$CENSUS_TOKEN" '$url/api/v1/cis/${id:-ID}/software?limit=20'  # installed software
  curl -s -H "Authorization: Bearer \$CENSUS_TOKEN" '$url/api/v1/cis/${id:-ID}/health'             # health samples, one every $interval
  curl -s -H "Authorization: Bearer \$CENSUS_TOKEN" '$url/api/v1/software?name=openssl'        # which computers run openssl

(pipe any of them into jq for readable output). Ctrl-C stops Census.
MSG
wait
