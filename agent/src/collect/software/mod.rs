//! Installed software, from every package database present on the machine, in this order:
//! dpkg (`/var/lib/dpkg/status`), rpm (the `rpm` command, when on `PATH`), apk
//! (`/lib/apk/db/installed`). A source that is absent adds nothing; a source that fails adds a
//! warning and leaves the others intact.
//!
//! Not collected yet: pacman, snap, flatpak, Homebrew, macOS applications and the Windows
//! uninstall registry keys.

pub mod apk;
pub mod dpkg;
pub mod rpm;

use std::time::Duration;

use census_common::Software;

use super::{NOT_SUPPORTED, Root, Warnings, read_optional};

pub fn collect(root: &Root, rpm_timeout: Duration, warnings: &mut Warnings) -> Vec<Software> {
    if !cfg!(target_os = "linux") {
        warnings.add("software", NOT_SUPPORTED);
        return Vec::new();
    }
    let mut software = Vec::new();

    match read_optional(&root.path(dpkg::STATUS)) {
        Ok(Some(text)) => software.extend(dpkg::parse_status(&text)),
        Ok(None) => {}
        Err(e) => warnings.add("software", e),
    }

    software.extend(from_rpm(root, rpm_timeout, warnings));

    match read_optional(&root.path(apk::INSTALLED)) {
        Ok(Some(text)) => software.extend(apk::parse_installed(&text)),
        Ok(None) => {}
        Err(e) => warnings.add("software", e),
    }
    software
}

/// rpm is a program, not a file: it can only answer for the running machine.
#[cfg(unix)]
fn from_rpm(root: &Root, timeout: Duration, warnings: &mut Warnings) -> Vec<Software> {
    let Some(program) = rpm::find_on_path().filter(|_| root.is_host()) else {
        return Vec::new();
    };
    rpm::query(&program, timeout)
        .inspect_err(|e| warnings.add("software", e))
        .unwrap_or_default()
}

#[cfg(not(unix))]
fn from_rpm(_root: &Root, _timeout: Duration, _warnings: &mut Warnings) -> Vec<Software> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn alpine_fixture_root_lists_apk_packages_only() {
        let mut warnings = Warnings::default();
        let software = collect(
            &Root::at(fixture("roots/alpine-container")),
            Duration::from_secs(1),
            &mut warnings,
        );
        assert!(!software.is_empty());
        assert!(software.iter().all(|s| s.source == "apk"));
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    }

    #[test]
    fn unreadable_database_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read, even by root.
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg/status")).unwrap();
        let mut warnings = Warnings::default();
        let software = collect(&Root::at(dir.path()), Duration::from_secs(1), &mut warnings);
        assert!(software.is_empty());
        assert!(
            warnings.lines()[0].contains("dpkg/status"),
            "{:?}",
            warnings.lines()
        );
    }
}
