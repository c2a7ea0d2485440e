//! RPM packages, through the `rpm` command (its database format changed between releases, so
//! the command is the stable interface). It runs only when `rpm` is on `PATH`, and is killed
//! after [`TIMEOUT`]: a stuck rpm database lock must not stall the agent.

use std::path::PathBuf;
use std::time::Duration;

use census_common::Software;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Name, epoch-version-release, arch and vendor, tab-separated. The epoch and its colon
/// appear only when the package has one, as rpm itself writes versions.
pub const QUERY_FORMAT: &str =
    "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{VENDOR}\\n";

pub fn find_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("rpm"))
        .find(|candidate| candidate.is_file())
}

#[cfg(unix)]
pub fn query(
    program: &std::path::Path,
    timeout: Duration,
) -> Result<Vec<Software>, crate::collect::FacetError> {
    let mut command = std::process::Command::new(program);
    command.args(["-qa", "--queryformat", QUERY_FORMAT]);
    let stdout = crate::collect::command::run_with_timeout(&mut command, timeout)?;
    Ok(parse_query_output(&stdout))
}

/// rpm writes `(none)` for a tag that is not set.
pub fn parse_query_output(text: &str) -> Vec<Software> {
    let field = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|v| !v.is_empty() && *v != "(none)")
            .map(str::to_owned)
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let name = field(parts.next())?;
            Some(Software {
                name,
                version: field(parts.next()),
                arch: field(parts.next()),
                vendor: field(parts.next()),
                source: "rpm".to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn parses_rpm_query_output_fixture() {
        let text = std::fs::read_to_string(fixture("rpm/qa-rocky9.txt")).unwrap();
        let packages = parse_query_output(&text);
        assert_eq!(packages.len(), text.lines().count());
        let bash = packages.iter().find(|p| p.name == "bash").unwrap();
        assert_eq!(bash.version.as_deref(), Some("5.1.8-9.el9"));
        assert_eq!(bash.arch.as_deref(), Some("x86_64"));
        assert_eq!(
            bash.vendor.as_deref(),
            Some("Rocky Enterprise Software Foundation")
        );
        let openssl = packages.iter().find(|p| p.name == "openssl").unwrap();
        assert_eq!(openssl.version.as_deref(), Some("1:3.0.7-28.el9_4"));
        // gpg-pubkey entries have no arch and no vendor.
        let key = packages.iter().find(|p| p.name == "gpg-pubkey").unwrap();
        assert_eq!(key.arch, None);
        assert_eq!(key.vendor, None);
    }
}
