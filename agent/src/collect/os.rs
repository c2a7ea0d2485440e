//! The operating system: distribution name and version from `os-release`, kernel release,
//! architecture and boot time.
//!
//! `name` is `NAME` and `version` is `VERSION_ID` (absent on rolling releases such as Arch,
//! where it stays `None`).

use census_common::Os;
use time::OffsetDateTime;

use super::{Kernel, Root, Warnings, non_empty, read_optional};

pub fn collect(root: &Root, kernel: &Kernel, warnings: &mut Warnings) -> Os {
    let mut os = Os {
        family: Some("linux".to_owned()),
        kernel: non_empty(&kernel.release),
        arch: non_empty(&kernel.machine),
        ..Os::default()
    };

    // The os-release(5) lookup order: /etc first, then the vendor's copy.
    let release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| match read_optional(&root.path(path)) {
            Ok(text) => text,
            Err(e) => {
                warnings.add("os", e);
                None
            }
        });
    match release {
        Some(text) => {
            let fields = parse_os_release(&text);
            let get = |key: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| non_empty(v))
            };
            os.name = get("NAME");
            os.version = get("VERSION_ID");
        }
        None => warnings.add("os", "no /etc/os-release or /usr/lib/os-release"),
    }

    match read_optional(&root.path("/proc/stat")) {
        Ok(Some(stat)) => os.boot_time = boot_time(&stat),
        Ok(None) => warnings.add("os", "no /proc/stat; boot time unknown"),
        Err(e) => warnings.add("os", e),
    }
    os
}

/// The operating system as sysinfo sees it, where there is no `os-release` and no
/// `/proc/stat` (macOS, Windows). `family` is Rust's name for the OS (`macos`, `windows`).
pub fn from_system(kernel: &Kernel) -> Os {
    let known = |value: Result<String, sysinfo::Error>| value.ok().as_deref().and_then(non_empty);
    Os {
        family: Some(std::env::consts::OS.to_owned()),
        name: known(sysinfo::System::name()),
        version: known(sysinfo::System::os_version()),
        kernel: non_empty(&kernel.release),
        arch: non_empty(&kernel.machine),
        boot_time: sysinfo::System::boot_time()
            .ok()
            .and_then(|secs| i64::try_from(secs).ok())
            .filter(|secs| *secs > 0)
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok()),
    }
}

/// How far a boot time read again in the same process may move and still count as the same
/// reading. Within one process there has been no reboot (a reboot restarts the agent), so a
/// different `btime` only means the clock was adjusted: the kernel derives `btime` from the
/// wall clock minus the time since boot, and it wobbles by a second between reads.
pub const BOOT_TIME_JITTER_SECS: i64 = 5;

/// The boot time to report: the first reading this process made (`kept`) while new readings
/// stay within [`BOOT_TIME_JITTER_SECS`] of it, otherwise the new reading, which is kept from
/// then on. The inventory digest sees the boot time to 10 minutes; without this, a boot time
/// that wobbles across a 10-minute boundary would change the digest (and resend the whole
/// inventory) on every other collection. Across an agent restart the first reading may still
/// land on the other side of a boundary: one extra inventory, once. An unreadable boot time is
/// `None`, never the kept value.
pub fn steady_boot_time(
    kept: &mut Option<OffsetDateTime>,
    read: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    let read = read?;
    match *kept {
        Some(k) if (read - k).whole_seconds().abs() <= BOOT_TIME_JITTER_SECS => Some(k),
        _ => {
            *kept = Some(read);
            Some(read)
        }
    }
}

/// `KEY=value` lines as os-release(5) defines them: values may be double- or single-quoted,
/// with backslash escapes inside double quotes; `#` lines are comments.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (key, raw) = line.split_once('=')?;
            Some((key.trim().to_owned(), unquote(raw.trim())))
        })
        .collect()
}

fn unquote(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return raw.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
pub fn boot_time(proc_stat: &str) -> Option<OffsetDateTime> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    fn kernel() -> Kernel {
        Kernel {
            nodename: "h".to_owned(),
            release: "6.1.0-26-amd64".to_owned(),
            machine: "x86_64".to_owned(),
        }
    }

    #[test]
    fn without_os_release_the_os_comes_from_sysinfo() {
        let os = from_system(&kernel());
        assert_eq!(os.family.as_deref(), Some(std::env::consts::OS));
        assert_eq!(os.kernel.as_deref(), Some("6.1.0-26-amd64"));
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
        assert!(os.boot_time.is_some());
    }

    #[test]
    fn os_release_quoting() {
        let text = "# comment\nNAME=\"Red Hat Enterprise Linux\"\nVERSION_ID='9.4'\n\
                    ID=rhel\nPRETTY_NAME=\"Say \\\"hi\\\"\"\n\n";
        let fields = parse_os_release(text);
        assert_eq!(
            fields[0],
            ("NAME".to_owned(), "Red Hat Enterprise Linux".to_owned())
        );
        assert_eq!(fields[1], ("VERSION_ID".to_owned(), "9.4".to_owned()));
        assert_eq!(fields[2], ("ID".to_owned(), "rhel".to_owned()));
        assert_eq!(fields[3].1, "Say \"hi\"");
    }

    #[test]
    fn debian_fixture() {
        let mut warnings = Warnings::default();
        let os = collect(
            &Root::at(fixture("roots/kvm-server")),
            &kernel(),
            &mut warnings,
        );
        assert_eq!(os.family.as_deref(), Some("linux"));
        assert_eq!(os.name.as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(os.version.as_deref(), Some("12"));
        assert_eq!(os.kernel.as_deref(), Some("6.1.0-26-amd64"));
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
        assert_eq!(os.boot_time.unwrap().unix_timestamp(), 1_732_100_000);
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    }

    #[test]
    fn alpine_fixture_uses_vendor_os_release() {
        let mut warnings = Warnings::default();
        let os = collect(
            &Root::at(fixture("roots/alpine-container")),
            &kernel(),
            &mut warnings,
        );
        assert_eq!(os.name.as_deref(), Some("Alpine Linux"));
        assert_eq!(os.version.as_deref(), Some("3.20.3"));
    }

    #[test]
    fn boot_time_wobble_keeps_the_first_reading_a_clock_step_does_not() {
        let at = |secs| OffsetDateTime::from_unix_timestamp(secs).ok();
        // 1_732_100_400 is a multiple of 600: the digest's 10-minute boundary.
        let mut kept = None;
        assert_eq!(
            steady_boot_time(&mut kept, at(1_732_100_399)),
            at(1_732_100_399)
        );
        assert_eq!(
            steady_boot_time(&mut kept, at(1_732_100_400)),
            at(1_732_100_399)
        );
        assert_eq!(
            steady_boot_time(&mut kept, at(1_732_100_398)),
            at(1_732_100_399)
        );
        // Unreadable this time: unknown, not the kept value; the kept one stays for later.
        assert_eq!(steady_boot_time(&mut kept, None), None);
        assert_eq!(
            steady_boot_time(&mut kept, at(1_732_100_401)),
            at(1_732_100_399)
        );
        // The clock was stepped by an hour: the new reading is taken and kept.
        assert_eq!(
            steady_boot_time(&mut kept, at(1_732_103_999)),
            at(1_732_103_999)
        );
        assert_eq!(
            steady_boot_time(&mut kept, at(1_732_104_000)),
            at(1_732_103_999)
        );
    }

    #[test]
    fn missing_os_release_is_a_warning_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut warnings = Warnings::default();
        let os = collect(&Root::at(dir.path()), &kernel(), &mut warnings);
        assert_eq!(os.name, None);
        assert_eq!(os.kernel.as_deref(), Some("6.1.0-26-amd64"));
        assert_eq!(warnings.lines().len(), 2, "{:?}", warnings.lines());
    }
}
