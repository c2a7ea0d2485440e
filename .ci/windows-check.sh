#!/usr/bin/env bash
# Checks that the agent compiles for Windows (x86_64-pc-windows-gnu, cross-compiled with
# MinGW), the Windows service entry point included, and that clippy finds nothing there. It only
# compiles: nothing here runs on Windows.
#
# Installs what it needs when missing: the Rust target (rustup) and the MinGW C compiler
# (apt-get; ring builds C code). When those, or the crates only Windows uses, cannot be had (no
# network, no rustup, not root), it prints a NOTICE saying why and exits 0: such a machine can
# tell us nothing about Windows. A failing check, or a Cargo.lock that needs updating, exits
# non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-gnu
MINGW_CC=x86_64-w64-mingw32-gcc

skip() {
  echo "NOTICE: the Windows build check was skipped because $*" >&2
  exit 0
}

echo "== windows check ($TARGET)"
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  command -v rustup >/dev/null || skip "rustup is missing, so the $TARGET target cannot be added"
  rustup target add "$TARGET" || skip "rustup could not add the $TARGET target (offline?)"
fi
if ! command -v "$MINGW_CC" >/dev/null; then
  command -v apt-get >/dev/null || skip "$MINGW_CC is missing and there is no apt-get to install it"
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64; } ||
    skip "apt-get could not install gcc-mingw-w64-x86-64 (offline, or not root?)"
fi

# Windows-only crates may not be in the cargo cache yet. Fetching them can fail for want of a
# network (a skip) or because Cargo.lock is stale (a failure).
if ! fetch_log=$(cargo fetch --locked --target "$TARGET" 2>&1); then
  echo "$fetch_log" >&2
  if grep -q "needs to be updated" <<<"$fetch_log"; then
    echo "error: Cargo.lock is out of date; run cargo check -p census-agent --target $TARGET" >&2
    exit 1
  fi
  skip "cargo could not fetch the crates the Windows build needs (offline?)"
fi

cargo check -p census-agent --target "$TARGET" --locked
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy -p census-agent --target "$TARGET" --locked -- -D warnings
else
  echo "NOTICE: clippy is not installed; the Windows lints were skipped" >&2
fi
echo "== windows check passed (compiled, not run)"
