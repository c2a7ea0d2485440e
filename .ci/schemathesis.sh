#!/usr/bin/env bash
# Fuzzes a running collector against its own OpenAPI document (GET /api/v1/openapi.json) with
# schemathesis: no answer may be a server error, and every answer must be a status, media type
# and body the document declares. Exits non-zero on any failure.
#
# Steps: install schemathesis (pinned, in a venv), build the collector, create an admin token
# and an enrollment secret (when this build has those commands), start `serve` on port 0 with a
# temp data dir, ingest a small batch so the lists are not empty, run schemathesis on the admin
# and probe routes with the admin token, then on the agent routes with an agent token, stop the
# collector.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 200 per operation and phase),
# SCHEMATHESIS_SEED (default fixed, so a failure reproduces), SCHEMATHESIS_VENV (default
# /tmp/census-schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-/tmp/census-schemathesis}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-200}
SEED=${SCHEMATHESIS_SEED:-20261125}
AGENT_ID=0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11

echo "== schemathesis $SCHEMATHESIS_VERSION"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "== build"
cargo build --locked -p census-collector --bin census-collector
BIN=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/census-collector

TMP=$(mktemp -d)
DATA=$TMP/data
# A config file of its own, so the run never reads the host's /etc/census/collector.toml. Rate
# limits are off: schemathesis sends thousands of requests a minute from one address and one
# agent, and answers that are all 429 would test nothing else.
printf 'enroll_rate_per_minute = 0\nreports_rate_per_minute = 0\n' >"$TMP/collector.toml"
collector() { "$BIN" --config "$TMP/collector.toml" --data-dir "$DATA" "$@"; }
has_command() { collector "$@" --help >/dev/null 2>&1; }

PID=
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    wait "$PID" || echo "the collector did not stop cleanly" >&2
  fi
  rm -rf "$TMP"
}
trap stop EXIT

# Tokens and secrets are made before `serve` starts, so the collector is the database's only
# writer while it runs. Each command prints what it creates alone on its last line.
ADMIN_TOKEN=
if has_command token create; then
  ADMIN_TOKEN=$(collector token create --role admin --name schemathesis | tail -n1)
else
  echo "note: this build has no \`token\` command; the admin API is fuzzed without a token"
fi
SECRET=
if has_command enroll-secret create; then
  SECRET=$(collector enroll-secret create --name ci | tail -n1)
else
  echo "note: this build has no \`enroll-secret\` command; reports are posted without a token"
fi

echo "== serve"
# The binary itself, not through `collector`: a backgrounded function is a subshell, and $!
# would be the subshell's pid, which SIGTERM would not stop the collector through.
"$BIN" --config "$TMP/collector.toml" --data-dir "$DATA" serve --listen 127.0.0.1:0 \
  2>"$TMP/collector.log" &
PID=$!
for _ in $(seq 300); do
  [ -s "$DATA/collector.addr" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/collector.log"; echo "collector exited" >&2; exit 1; }
  sleep 0.1
done
[ -s "$DATA/collector.addr" ] || { cat "$TMP/collector.log"; echo "no collector.addr" >&2; exit 1; }
ADDR=$(head -n1 "$DATA/collector.addr")
BASE=http://$ADDR
echo "collector on $BASE"

# `curl -f` fails on an error status; `-sS` keeps errors visible.
post_json() { curl -sSf -X POST -H 'content-type: application/json' "$@"; }

AGENT_TOKEN=
if [ -n "$SECRET" ]; then
  AGENT_TOKEN=$(post_json "$BASE/agent/v1/enroll" \
    -d "{\"secret\":\"$SECRET\",\"agent_id\":\"$AGENT_ID\",\"hostname\":\"ci-1\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
fi

echo "== ingest"
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
BATCH=$(cat <<EOF
{"protocol": 1, "agent_id": "$AGENT_ID", "reports": [
  {"seq": 1, "kind": "inventory", "schema": 1, "agent_id": "$AGENT_ID", "collected_at": "$NOW",
   "host": {"hostname": "ci-1", "fqdn": "ci-1.example.test"},
   "hardware": {"vendor": "QEMU", "serial": "SN-1", "virtualization": "kvm"},
   "os": {"family": "linux", "name": "Debian GNU/Linux", "version": "12", "arch": "x86_64"},
   "cpu": {"model": "vCPU", "logical_cores": 2},
   "memory": {"total_bytes": 8589934592},
   "filesystems": [{"mount": "/", "device": "/dev/vda1", "fs_type": "ext4",
                    "total_bytes": 21474836480, "removable": false}],
   "network_interfaces": [{"name": "eth0", "mac": "52:54:00:12:34:56",
                           "addresses": ["192.0.2.5/24"], "virtual": false}],
   "software": [{"name": "openssl", "version": "3.0.11", "arch": "amd64",
                 "vendor": "Debian", "source": "dpkg"},
                {"name": "bash", "version": "5.2", "arch": "amd64", "vendor": null,
                 "source": "dpkg"}]},
  {"seq": 2, "kind": "health", "agent_id": "$AGENT_ID", "collected_at": "$NOW",
   "cpu_percent": 12.5, "load": [0.5, 0.25, 0.1], "memory_used_percent": 40.0,
   "filesystems": [{"mount": "/", "used_percent": 51.0, "inodes_used_percent": null}]}
]}
EOF
)
post_json "$BASE/agent/v1/reports" ${AGENT_TOKEN:+-H "authorization: Bearer $AGENT_TOKEN"} \
  -d "$BATCH"
echo

# The checks: no 5xx; every status, media type, header and body as the document declares it;
# a request the document rules out is refused; an unsupported method answers 405. With a token,
# also: a route that declares a token refuses a request without one or with a wrong one.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
CHECKS=$CHECKS,response_headers_conformance,response_schema_conformance,negative_data_rejection
CHECKS=$CHECKS,unsupported_method
AUTH_CHECKS=ignored_auth,missing_required_header
st() {
  local token=$1
  shift
  if [ -n "$token" ]; then
    set -- "$@" --checks "$CHECKS,$AUTH_CHECKS" --header "Authorization: Bearer $token"
  else
    # No token in this build: leave the Authorization header out of the generated cases too.
    set -- "$@" --checks "$CHECKS" --generation-with-security-parameters false
  fi
  # From the temp dir: schemathesis keeps a cache of failures in `.schemathesis/` under the
  # working directory, which must not land in the checkout.
  # One worker: with two, schemathesis 4.32.5 once failed a CI run with an internal KeyError in
  # hypothesis' lambda-description cache (two threads building coverage cases at once), not a
  # finding about the collector.
  (cd "$TMP" && "$VENV/bin/schemathesis" run "$TMP/openapi.json" --url "$BASE" \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 1 \
    --generation-database none --no-color --request-timeout 10 "$@")
}

# The document itself needs a token, like every /api/v1 route.
curl -sSf ${ADMIN_TOKEN:+-H "authorization: Bearer $ADMIN_TOKEN"} "$BASE/api/v1/openapi.json" \
  -o "$TMP/openapi.json"

failed=0
echo "== schemathesis: admin API and probes"
st "$ADMIN_TOKEN" --exclude-path-regex '^/agent/' || failed=1
echo "== schemathesis: agent routes"
# Without `enroll-secret` this build has no enrollment route to test.
agent_paths='^/agent/v1/reports$'
[ -n "$SECRET" ] && agent_paths='^/agent/'
st "$AGENT_TOKEN" --include-path-regex "$agent_paths" || failed=1

if ! kill -0 "$PID" 2>/dev/null; then
  echo "the collector died during the run" >&2
  failed=1
fi
if [ "$failed" -ne 0 ]; then
  echo "== collector log (last 50 lines)"
  tail -n 50 "$TMP/collector.log"
  exit 1
fi
echo "== schemathesis: no failures"
