#!/usr/bin/env bash
# The packaging, checked for real on this machine:
#   1. systemd-analyze security --offline scores both units at or below 2.5 (lower is safer);
#   2. the macOS launchd plist is a well-formed property list (all that can be checked here);
#   3. the .deb packages build (release) with cargo-deb;
#   4. systemd-analyze verify accepts both units, with the real binaries in place;
#   5. as root: each .deb installs with dpkg -i (binary, unit, sysusers file, conffile, system
#      user, state dir, enabled unit, the binary run as its user), and dpkg --purge leaves
#      nothing;
#   6. with cargo-generate-rpm installed (CENSUS_RPM=1 installs it): the .rpm packages build,
#      and their file lists and scriptlets are read back with `rpm -qp` when rpm is installed.
#
# Runs where systemd is not PID 1 (CI containers): nothing here needs a running systemd. Where
# systemd does run, installing a .deb also starts its service (the agent stops at once, exit
# status 2, as no collector is configured); the purge stops and removes it.
#
# Step 4 refuses to run on a machine that already has a census package, user, state or config
# (it would overwrite or purge them), and is skipped with a notice when not run as root.
# Missing tools are installed when possible: systemd and dpkg-dev with apt-get, cargo-deb
# with cargo install.
#
#   tests/packaging.sh                  # from anywhere; CARGO_TARGET_DIR is honoured
#   CENSUS_RPM=1 tests/packaging.sh     # also install cargo-generate-rpm and rpm, build RPMs
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
max_exposure=2.5
# The cargo-deb this script was written against; a newer one is an upgrade to review.
cargo_deb_version=3.8.0
cargo_generate_rpm_version=0.21.1
started=$SECONDS
failures=0

step() { echo; echo "== $* ($((SECONDS - started))s)"; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
notice() {
  echo >&2
  echo "NOTICE: $*" >&2
  echo >&2
}
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
  if ! is_root; then
    echo "missing $*: install it (apt-get install $*) or run as root" >&2
    exit 1
  fi
  echo "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

cargo_install() {
  local crate=$1 version=$2 t0=$SECONDS
  echo "installing $crate $version with cargo install --locked"
  cargo install "$crate" --version "$version" --locked --quiet
  echo "installed $crate in $((SECONDS - t0))s"
}

step "tools"
command -v systemd-analyze >/dev/null || apt_install systemd
# cargo-deb computes the shared library dependencies with dpkg-shlibdeps.
command -v dpkg-shlibdeps >/dev/null || apt_install dpkg-dev
cargo deb --version >/dev/null 2>&1 || cargo_install cargo-deb "$cargo_deb_version"
if [ "${CENSUS_RPM:-0}" = 1 ]; then
  cargo generate-rpm --version >/dev/null 2>&1 || cargo_install cargo-generate-rpm "$cargo_generate_rpm_version"
  command -v rpm >/dev/null || apt_install rpm
fi
echo "$(systemd-analyze --version | head -n 1); $(cargo deb --version)"

units=(packaging/systemd/census-agent.service packaging/systemd/census-collector.service)

step "systemd-analyze security --offline (at most $max_exposure)"
for unit in "${units[@]}"; do
  report=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || true
  line=$(grep -F 'Overall exposure level' <<<"$report" || true)
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")
  if [ -z "$score" ]; then
    echo "$report" >&2
    fail "$unit: no exposure level in the report"
  elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
    grep -F '✗' <<<"$report" >&2 || true
    fail "$unit: exposure $score is above $max_exposure"
  else
    echo "$unit: $score"
  fi
done

step "launchd plist (macOS; untested beyond being well-formed)"
plist=packaging/macos/org.census.agent.plist
if command -v python3 >/dev/null; then
  if python3 -c 'import plistlib, sys; d = plistlib.load(open(sys.argv[1], "rb")); assert d["Label"] == "org.census.agent" and d["ProgramArguments"][-1] == "run", d' "$plist"; then
    echo "$plist: well-formed"
  else
    fail "$plist is not a well-formed launchd property list"
  fi
else
  notice "python3 is not installed: SKIPPED reading $plist"
fi

step "building the .deb packages (release)"
deb_dir=$target_dir/packaging-test
rm -rf "$deb_dir"
mkdir -p "$deb_dir"
declare -A deb
for package in census-agent census-collector; do
  t0=$SECONDS
  cargo deb --locked -p "$package" -o "$deb_dir" --quiet >/dev/null
  deb[$package]=$(ls "$deb_dir"/"$package"_*.deb)
  echo "${deb[$package]} ($((SECONDS - t0))s)"
done

step "systemd-analyze verify"
# verify checks that ExecStart's binary exists. Rather than touch /usr/bin here, it runs on a
# throwaway root holding the real binaries at /usr/bin, the units in /etc/systemd/system, and
# the distribution's units (the targets the units name). It exits 0 on some problems (an
# unknown key is a warning), so any output is a failure too.
verify_root=$(mktemp -d)
trap 'rm -rf "$verify_root"' EXIT
mkdir -p "$verify_root/usr/bin" "$verify_root/usr/lib/systemd" "$verify_root/etc/systemd/system"
cp -a /usr/lib/systemd/system "$verify_root/usr/lib/systemd/"
for unit in "${units[@]}"; do
  name=$(basename "$unit" .service)
  cp "$target_dir/release/$name" "$verify_root/usr/bin/"
  cp "$unit" "$verify_root/etc/systemd/system/"
done
for unit in "${units[@]}"; do
  name=$(basename "$unit")
  if output=$(systemd-analyze verify --root="$verify_root" --man=no "$name" 2>&1) && [ -z "$output" ]; then
    echo "$unit: ok"
  else
    echo "$output" >&2
    fail "$unit: systemd-analyze verify"
  fi
done

# What a package may leave after `dpkg --purge`: nothing of these.
leftovers() {
  local package=$1 user=$2 state_dir=$3
  local unit=$package.service
  local paths=(
    "/usr/bin/$package"
    "/usr/lib/systemd/system/$unit"
    "/usr/lib/sysusers.d/$package.conf"
    "/etc/census/${package#census-}.toml"
    "/etc/systemd/system/multi-user.target.wants/$unit"
    "/etc/systemd/system/$unit"
    "/var/lib/systemd/deb-systemd-helper-enabled/$unit.dsh-also"
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/$unit"
    "/var/lib/systemd/deb-systemd-helper-masked/$unit"
    "/usr/share/doc/$package"
    "$state_dir"
  )
  [ "$package" = census-agent ] && paths+=(/etc/census/agent.env)
  for path in "${paths[@]}"; do
    if [ -e "$path" ] || [ -L "$path" ]; then echo "$path"; fi
  done
  getent passwd "$user" >/dev/null && echo "user $user"
  getent group "$user" >/dev/null && echo "group $user"
  dpkg-query -W "$package" >/dev/null 2>&1 && echo "dpkg knows $package: $(dpkg-query -W -f='${Status}' "$package")"
  return 0
}

# The binary run as the unit runs it (its user; the agent with its one capability), on the
# installed config and state dir. Appends to `problems`.
as_user() {
  local user=$1
  shift
  setpriv --reuid="$user" --regid="$user" --clear-groups "$@"
}
runs_as_its_user_agent() {
  local out
  out=$(as_user census-agent --inh-caps=+dac_read_search --ambient-caps=+dac_read_search \
    /usr/bin/census-agent print-config 2>&1) && grep -q '/etc/census/agent.toml' <<<"$out" \
    || problems+=("print-config as census-agent did not read /etc/census/agent.toml: $out")
  out=$(as_user census-agent --inh-caps=+dac_read_search --ambient-caps=+dac_read_search \
    /usr/bin/census-agent inventory 2>&1) && grep -q '"schema": 1' <<<"$out" \
    || problems+=("inventory as census-agent: $out")
}
runs_as_its_user_collector() {
  local flags=(--config /etc/census/collector.toml --data-dir /var/lib/census-collector) out
  # An admin token, as README says to make one: the database appears in the data dir.
  out=$(as_user census /usr/bin/census-collector "${flags[@]}" token create --role admin \
    --name packaging-test 2>&1) && tail -n 1 <<<"$out" | grep -q '^cat_' \
    || problems+=("token create as census: $out")
  [ -f /var/lib/census-collector/census.db ] || problems+=("no /var/lib/census-collector/census.db")
  out=$(as_user census /usr/bin/census-collector "${flags[@]}" print-config 2>&1) \
    && grep -q '^data_dir = "/var/lib/census-collector"' <<<"$out" \
    || problems+=("print-config as census: $out")
}

check_deb() {
  local package=$1 user=$2 state_dir=$3 config=$4
  local user_check=${package#census-}
  local file=${deb[$package]} unit=$package.service

  step "$package: dpkg -i, checks, dpkg --purge"
  local found
  found=$(leftovers "$package" "$user" "$state_dir")
  if [ -n "$found" ]; then
    printf '  %s\n' "${found//$'\n'/$'\n'  }" >&2
    fail "$package: refusing to install it here: this machine already has the above, which the \
install would overwrite and the purge would delete (a developer's agent state, a real \
installation); run this on a clean machine or container"
    return
  fi

  dpkg -i "$file"

  local -a problems=()
  [ -x "/usr/bin/$package" ] || problems+=("no executable /usr/bin/$package")
  cmp -s "packaging/systemd/$unit" "/usr/lib/systemd/system/$unit" \
    || problems+=("/usr/lib/systemd/system/$unit is not packaging/systemd/$unit")
  cmp -s "packaging/sysusers/$package.conf" "/usr/lib/sysusers.d/$package.conf" \
    || problems+=("/usr/lib/sysusers.d/$package.conf is not packaging/sysusers/$package.conf")
  cmp -s "packaging/$(basename "$config")" "$config" || problems+=("$config is not the packaged default")
  dpkg-query -W -f='${Conffiles}\n' "$package" | grep -q " $config " \
    || problems+=("$config is not a conffile")
  local entry
  entry=$(getent passwd "$user" || true)
  if [ -z "$entry" ]; then
    problems+=("no user $user")
  else
    [ "$(cut -d: -f6 <<<"$entry")" = "$state_dir" ] || problems+=("$user's home is not $state_dir: $entry")
    case $(cut -d: -f7 <<<"$entry") in
      */nologin | */false) ;;
      *) problems+=("$user has a login shell: $entry") ;;
    esac
    [ "$(cut -d: -f3 <<<"$entry")" -lt 1000 ] || problems+=("$user is not a system user: $entry")
  fi
  [ "$(stat -c '%U %a' "$state_dir" 2>/dev/null)" = "$user 700" ] \
    || problems+=("$state_dir is not owned by $user with mode 700: $(stat -c '%U %a' "$state_dir" 2>&1)")
  [ -L "/etc/systemd/system/multi-user.target.wants/$unit" ] || problems+=("$unit is not enabled")
  # The installed unit, with the installed binary, on the real root.
  local verify
  verify=$(systemd-analyze verify --man=no "/usr/lib/systemd/system/$unit" 2>&1) && [ -z "$verify" ] \
    || problems+=("systemd-analyze verify of the installed unit: $verify")
  "/usr/bin/$package" --version | grep -q "^$package " || problems+=("$package --version")
  "runs_as_its_user_$user_check"
  if [ "${#problems[@]}" -gt 0 ]; then
    printf '  %s\n' "${problems[@]}" >&2
    fail "$package: installed package is not as expected"
  else
    echo "$package: installed as expected"
  fi

  dpkg --purge "$package"
  found=$(leftovers "$package" "$user" "$state_dir")
  if [ -n "$found" ]; then
    printf '  %s\n' "${found//$'\n'/$'\n'  }" >&2
    fail "$package: dpkg --purge left the above behind"
  else
    echo "$package: purged, nothing left"
  fi
}

if is_root; then
  check_deb census-agent census-agent /var/lib/census /etc/census/agent.toml
  check_deb census-collector census /var/lib/census-collector /etc/census/collector.toml
  if [ -d /etc/census ] && [ -z "$(ls -A /etc/census)" ]; then
    fail "/etc/census is left behind, empty"
  fi
else
  notice "not root: SKIPPED installing and purging the .deb packages (dpkg -i / dpkg --purge); \
run tests/packaging.sh as root (in a container or VM) for those checks"
fi

if cargo generate-rpm --version >/dev/null 2>&1; then
  step "building the .rpm packages"
  for crate in agent collector; do
    package=census-$crate
    cargo generate-rpm -p "$crate" -o "$deb_dir/" >/dev/null
    rpm_file=$(ls "$deb_dir"/"$package"-*.rpm)
    echo "$rpm_file"
    if command -v rpm >/dev/null; then
      listed=$(rpm -qlp "$rpm_file" 2>/dev/null)
      for path in "/usr/bin/$package" "/usr/lib/systemd/system/$package.service" \
        "/usr/lib/sysusers.d/$package.conf" "/etc/census/$crate.toml"; do
        grep -qx "$path" <<<"$listed" || fail "$rpm_file does not hold $path"
      done
      rpm -qcp "$rpm_file" 2>/dev/null | grep -qx "/etc/census/$crate.toml" \
        || fail "$rpm_file: /etc/census/$crate.toml is not a config file"
      for scriptlet in preinstall postinstall preuninstall postuninstall; do
        rpm -qp --scripts "$rpm_file" 2>/dev/null | grep -q "^$scriptlet scriptlet" \
          || fail "$rpm_file has no $scriptlet scriptlet"
      done
      echo "$rpm_file: files, config file and scriptlets as expected"
    else
      notice "rpm is not installed: the RPMs are built but not read back (CENSUS_RPM=1 installs it)"
    fi
  done
else
  notice "cargo-generate-rpm is not installed: SKIPPED building the RPMs (CENSUS_RPM=1 installs it)"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "tests/packaging.sh: $failures failure(s) ($((SECONDS - started))s)" >&2
  exit 1
fi
echo "tests/packaging.sh: all packaging checks passed ($((SECONDS - started))s)"
