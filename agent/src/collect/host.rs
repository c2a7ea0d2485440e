//! Host identity: hostname, fully qualified name, domain and machine id.
//!
//! The FQDN is the kernel's host name when that already has a dot; otherwise the canonical name
//! that `/etc/hosts` gives it (the first name on a line that lists the host name), which is
//! where `hostname -f` finds it on most machines. DNS is deliberately not asked: a collection
//! must not hang on a slow resolver, and a name learned from whichever server answered is not
//! this machine's configuration. When neither source has a dotted name, `fqdn` and `domain`
//! are `None`.

use census_common::Host;

use super::{Kernel, Root, Warnings, non_empty, read_optional};

pub fn collect(root: &Root, kernel: &Kernel, warnings: &mut Warnings) -> Host {
    let hostname = non_empty(&kernel.nodename);
    let hosts = match read_optional(&root.path("/etc/hosts")) {
        Ok(text) => text,
        Err(e) => {
            warnings.add("host", e);
            None
        }
    };
    let fqdn = hostname
        .as_deref()
        .and_then(|name| fqdn(name, hosts.as_deref().unwrap_or("")));
    let domain = fqdn
        .as_deref()
        .and_then(|f| f.split_once('.'))
        .map(|(_, domain)| domain.to_owned());
    Host {
        hostname,
        fqdn,
        machine_id: machine_id(root, warnings),
        domain,
    }
}

/// The fully qualified name of `hostname`, from the name itself or from `/etc/hosts`.
pub fn fqdn(hostname: &str, etc_hosts: &str) -> Option<String> {
    if hostname.contains('.') {
        return Some(hostname.trim_end_matches('.').to_owned());
    }
    let prefix = format!("{hostname}.");
    etc_hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let _address = fields.next()?;
        let names: Vec<&str> = fields.collect();
        let canonical = *names.first()?;
        let lists_host = names.iter().any(|n| n.eq_ignore_ascii_case(hostname));
        let qualifies = canonical.len() > prefix.len()
            && canonical[..prefix.len()].eq_ignore_ascii_case(&prefix);
        (lists_host && qualifies).then(|| canonical.trim_end_matches('.').to_owned())
    })
}

/// `/etc/machine-id`, or D-Bus's copy on systems without systemd. Containers often have an
/// empty file, which means "none", not an error.
fn machine_id(root: &Root, warnings: &mut Warnings) -> Option<String> {
    for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        match read_optional(&root.path(path)) {
            Ok(None) => continue,
            Ok(Some(text)) => {
                let id = text.trim();
                if id.is_empty() {
                    continue;
                }
                if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Some(id.to_ascii_lowercase());
                }
                warnings.add(
                    "host",
                    format!("{path} does not hold a machine id: `{}`", id.escape_debug()),
                );
                return None;
            }
            Err(e) => {
                warnings.add("host", e);
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    fn kernel(nodename: &str) -> Kernel {
        Kernel {
            nodename: nodename.to_owned(),
            release: "6.1.0".to_owned(),
            machine: "x86_64".to_owned(),
        }
    }

    #[test]
    fn fqdn_from_dotted_hostname() {
        assert_eq!(
            fqdn("web1.example.org", ""),
            Some("web1.example.org".to_owned())
        );
    }

    #[test]
    fn fqdn_from_etc_hosts_canonical_name() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 web1.wrong.example web1\n\
                     127.0.1.1\tweb1.corp.example.com web1 # set by installer\n";
        assert_eq!(
            fqdn("web1", hosts),
            Some("web1.corp.example.com".to_owned())
        );
        // A line that does not list the host, or a canonical name of another host, is not used.
        assert_eq!(fqdn("web2", hosts), None);
        assert_eq!(fqdn("web1", "10.0.0.1 db.example.com web1\n"), None);
        assert_eq!(fqdn("web1", "127.0.1.1 web1\n"), None);
    }

    #[test]
    fn host_facet_on_fixture_root() {
        let root = Root::at(fixture("roots/kvm-server"));
        let mut warnings = Warnings::default();
        let host = collect(&root, &kernel("db1"), &mut warnings);
        assert_eq!(host.hostname.as_deref(), Some("db1"));
        assert_eq!(host.fqdn.as_deref(), Some("db1.lab.example.net"));
        assert_eq!(host.domain.as_deref(), Some("lab.example.net"));
        assert_eq!(
            host.machine_id.as_deref(),
            Some("5f1c0a3e9b7d4c2a8e6f0b1d3c5a7e90")
        );
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    }

    #[test]
    fn container_with_empty_machine_id_has_none_and_no_warning() {
        let root = Root::at(fixture("roots/alpine-container"));
        let mut warnings = Warnings::default();
        let host = collect(&root, &kernel("3f2a9c1b7d4e"), &mut warnings);
        assert_eq!(host.machine_id, None);
        assert_eq!(host.fqdn, None);
        assert_eq!(host.domain, None);
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    }

    #[test]
    fn malformed_machine_id_is_none_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/machine-id"), "uninitialized\n").unwrap();
        let mut warnings = Warnings::default();
        let host = collect(&Root::at(dir.path()), &kernel("h"), &mut warnings);
        assert_eq!(host.machine_id, None);
        assert!(
            warnings.lines()[0].contains("uninitialized"),
            "{:?}",
            warnings.lines()
        );
    }
}
