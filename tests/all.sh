#!/usr/bin/env bash
# Every test Census has, in the order CI runs them (CI runs `cargo fmt --check` and clippy
# first). Works on a fresh Debian machine: each step installs what it needs when it is missing
# (apt-get as root; schemathesis in a venv under /tmp; cargo-deb with cargo install; the
# Windows target with rustup).
#
#   1. cargo test --workspace --locked: unit, property and end-to-end tests (real binaries,
#      real SQLite files, real HTTP on 127.0.0.1).
#   2. .ci/schemathesis.sh: a running collector fuzzed against its own OpenAPI document.
#   3. tests/packaging.sh: systemd-analyze verify and security on both units, the .deb
#      packages built, installed with dpkg -i, checked, and purged without a trace (the
#      install part needs root and a machine without Census installed; otherwise it says so).
#   4. .ci/windows-check.sh: the agent compiles for Windows (skipped with a NOTICE when the
#      target or MinGW cannot be installed).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in cc curl python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need[*]}; install gcc, curl, python3 and python3-venv (needs root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc curl python3 python3-venv
fi

# The install tests create the agent's user with systemd-sysusers on a temporary root; they
# skip (with a note in their output) where it is missing, so make sure it is not.
if ! command -v systemd-sysusers >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi

echo "== cargo test"
cargo test --workspace --locked
echo "== schemathesis: the running collector against its OpenAPI document"
.ci/schemathesis.sh
echo "== packaging: systemd units, .deb install and purge"
tests/packaging.sh
echo "== windows: the agent compiles for x86_64-pc-windows-gnu"
.ci/windows-check.sh
