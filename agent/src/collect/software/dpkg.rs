//! dpkg's own database, `/var/lib/dpkg/status`, read directly rather than through
//! `dpkg-query`: no process to start, and the format is stable (deb822 paragraphs).
//!
//! A package counts as installed when its `Status` state (the third word) is `installed`,
//! whatever the selection: `install ok installed` and also `hold ok installed` (a held package
//! is on disk) and `deinstall ok installed` / `purge ok installed` (marked for removal, not
//! removed yet). This is exactly the set whose `dpkg-query -W -f '${db:Status-Abbrev}'` has
//! `i` as its second letter (`ii`, `hi`, `ri`, `pi`), which the on-this-machine test checks.
//! Packages in any other state (`config-files`, `half-installed`, `unpacked`,
//! `half-configured`, `triggers-awaited`, `triggers-pending`, `not-installed`) are not.

use census_common::Software;

pub const STATUS: &str = "/var/lib/dpkg/status";

pub fn parse_status(text: &str) -> Vec<Software> {
    paragraphs(text).filter_map(|p| package(&p)).collect()
}

#[derive(Default)]
struct Paragraph<'a> {
    package: Option<&'a str>,
    status: Option<&'a str>,
    version: Option<&'a str>,
    architecture: Option<&'a str>,
    maintainer: Option<&'a str>,
}

fn paragraphs(text: &str) -> impl Iterator<Item = Paragraph<'_>> {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || {
        // Skip blank lines between paragraphs.
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        lines.peek()?;
        let mut paragraph = Paragraph::default();
        for line in lines.by_ref() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                break;
            }
            // Continuation lines (Description, Conffiles, ...) start with a space or a tab.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Package" => paragraph.package = Some(value),
                "Status" => paragraph.status = Some(value),
                "Version" => paragraph.version = Some(value),
                "Architecture" => paragraph.architecture = Some(value),
                "Maintainer" => paragraph.maintainer = Some(value),
                _ => {}
            }
        }
        Some(paragraph)
    })
}

fn package(p: &Paragraph<'_>) -> Option<Software> {
    let installed = p
        .status?
        .split_whitespace()
        .nth(2)
        .is_some_and(|state| state == "installed");
    if !installed {
        return None;
    }
    let some = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
    Some(Software {
        name: some(p.package)?,
        version: some(p.version),
        arch: some(p.architecture),
        vendor: some(p.maintainer),
        source: "dpkg".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::command::run_with_timeout;
    use crate::collect::{FacetError, fixture};
    use std::process::Command;
    use std::time::Duration;

    fn fixture_text(name: &str) -> String {
        std::fs::read_to_string(fixture(name)).unwrap()
    }

    #[test]
    fn real_debian_status_chunk() {
        let text = fixture_text("dpkg/status-debian12");
        let packages = parse_status(&text);
        let paragraphs =
            text.matches("\nPackage: ").count() + usize::from(text.starts_with("Package: "));
        assert_eq!(
            packages.len(),
            paragraphs,
            "every package in the chunk is installed"
        );
        let libc = packages.iter().find(|p| p.name == "libc6").unwrap();
        assert_eq!(libc.version.as_deref(), Some("2.36-9+deb12u14"));
        assert_eq!(libc.arch.as_deref(), Some("amd64"));
        assert_eq!(
            libc.vendor.as_deref(),
            Some("GNU Libc Maintainers <debian-glibc@lists.debian.org>")
        );
        assert!(
            packages
                .iter()
                .all(|p| p.source == "dpkg" && p.version.is_some())
        );
        // Epochs are kept as dpkg writes them.
        assert!(
            packages
                .iter()
                .any(|p| p.version.as_deref().is_some_and(|v| v.contains(':')))
        );
    }

    #[test]
    fn odd_cases() {
        let packages = parse_status(&fixture_text("dpkg/status-odd-cases"));
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "multi-line",
                "epoch-pkg",
                "held-pkg",
                "marked-for-removal",
                "libfoo1",
                "libfoo1",
                "no-newline-at-end"
            ]
        );
        let epoch = packages.iter().find(|p| p.name == "epoch-pkg").unwrap();
        assert_eq!(epoch.version.as_deref(), Some("1:2.3-4"));
        assert_eq!(epoch.vendor, None);
        let multi = &packages[0];
        assert_eq!(multi.version.as_deref(), Some("0.9-1"));
        assert_eq!(multi.vendor.as_deref(), Some("Jane Doe <jane@example.org>"));
        let arches: Vec<_> = packages
            .iter()
            .filter(|p| p.name == "libfoo1")
            .map(|p| p.arch.as_deref().unwrap())
            .collect();
        assert_eq!(arches, vec!["amd64", "i386"]);
        assert_eq!(packages.last().unwrap().version.as_deref(), Some("3.0"));
    }

    #[test]
    fn empty_status_has_no_packages() {
        assert!(parse_status("").is_empty());
        assert!(parse_status("\n\n").is_empty());
    }

    /// On this machine, the parser must agree with dpkg itself: the same packages (name,
    /// architecture, version) as those whose `db:Status-Abbrev` has `i` as its second letter.
    #[test]
    fn packages_match_dpkg_query_on_this_machine() {
        let Ok(text) = std::fs::read_to_string(STATUS) else {
            eprintln!("skipped: {STATUS} is absent on this machine");
            return;
        };
        let mut query = Command::new("dpkg-query");
        query.args([
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}\t${Architecture}\t${Version}\n",
        ]);
        // Killed like every command the agent runs, should dpkg's lock be stuck.
        let output = match run_with_timeout(&mut query, Duration::from_secs(60)) {
            Ok(output) => output,
            Err(FacetError::Command { message, .. }) if message.starts_with("could not start") => {
                eprintln!("skipped: dpkg-query is absent on this machine");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // The abbreviation's second letter is the state; `i` is installed, whatever the
        // selection (`ii`, `hi`, `ri`, `pi`): the same rule as the parser's.
        let mut expected: Vec<(String, String, String)> = output
            .lines()
            .filter(|l| l.as_bytes().get(1) == Some(&b'i'))
            .filter_map(|l| {
                let mut fields = l.split('\t').skip(1).map(str::to_owned);
                Some((fields.next()?, fields.next()?, fields.next()?))
            })
            .collect();
        let mut parsed: Vec<(String, String, String)> = parse_status(&text)
            .into_iter()
            .map(|p| {
                (
                    p.name,
                    p.arch.unwrap_or_default(),
                    p.version.unwrap_or_default(),
                )
            })
            .collect();
        expected.sort();
        parsed.sort();
        assert!(!expected.is_empty());
        assert_eq!(parsed, expected);
    }
}
