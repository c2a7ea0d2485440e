//! Alpine's package database, `/lib/apk/db/installed`: blank-line separated records of
//! `X:value` lines (`P` name, `V` version, `A` arch, `m` maintainer). Every record in it is an
//! installed package.

use census_common::Software;

pub const INSTALLED: &str = "/lib/apk/db/installed";

pub fn parse_installed(text: &str) -> Vec<Software> {
    let mut packages = Vec::new();
    let mut current = Record::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(pkg) = std::mem::take(&mut current).into_software() {
                packages.push(pkg);
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        match key {
            "P" => current.name = value,
            "V" => current.version = value,
            "A" => current.arch = value,
            "m" => current.maintainer = value,
            _ => {}
        }
    }
    packages
}

#[derive(Default)]
struct Record {
    name: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    maintainer: Option<String>,
}

impl Record {
    fn into_software(self) -> Option<Software> {
        Some(Software {
            name: self.name?,
            version: self.version,
            arch: self.arch,
            vendor: self.maintainer,
            source: "apk".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn alpine_installed_db() {
        let text = std::fs::read_to_string(fixture("roots/alpine-container/lib/apk/db/installed"))
            .unwrap();
        let packages = parse_installed(&text);
        assert_eq!(
            packages.len(),
            text.lines().filter(|l| l.starts_with("P:")).count()
        );
        let musl = packages.iter().find(|p| p.name == "musl").unwrap();
        assert_eq!(musl.version.as_deref(), Some("1.2.5-r0"));
        assert_eq!(musl.arch.as_deref(), Some("x86_64"));
        assert_eq!(
            musl.vendor.as_deref(),
            Some("Natanael Copa <ncopa@alpinelinux.org>")
        );
        assert!(packages.iter().all(|p| p.source == "apk"));
    }

    #[test]
    fn record_without_name_is_skipped_and_last_record_needs_no_blank_line() {
        let text = "V:1.0\nA:x86_64\n\nP:last\nV:2.0-r1";
        let packages = parse_installed(text);
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].name, "last");
        assert_eq!(packages[0].vendor, None);
    }
}
