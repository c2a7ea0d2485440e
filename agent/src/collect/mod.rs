//! The inventory: what this machine is and what is installed on it, one facet a module.
//!
//! **Promise:** a facet that fails leaves its fields empty and adds one line to
//! `inventory.warnings` (and a WARN log); it never fails the report. A value the agent cannot
//! learn is `None`, never guessed.
//!
//! Every reader takes a [`Root`], the directory that stands for `/`, so tests run the parsers
//! on fixture trees under `agent/fixtures/` instead of on the machine that runs them.

pub mod cpu;
pub mod filesystems;
pub mod hardware;
pub mod host;
pub mod memory;
pub mod network;
pub mod os;
pub mod software;

use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use census_common::Inventory;
use time::OffsetDateTime;
use tracing::warn;

use crate::health::Baseline;

/// The directory that stands for `/` when reading system files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    base: PathBuf,
}

impl Root {
    /// The running machine.
    pub fn host() -> Root {
        Root {
            base: PathBuf::from("/"),
        }
    }

    /// A fixture tree laid out like `/`.
    pub fn at(base: impl Into<PathBuf>) -> Root {
        Root { base: base.into() }
    }

    /// Whether this is the running machine, where commands such as `rpm` may be run.
    pub fn is_host(&self) -> bool {
        self.base == Path::new("/")
    }

    /// `absolute` (such as `/etc/os-release`) under this root.
    pub fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        self.base
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }
}

/// What the kernel says about itself (`uname`), passed in so facets can be tested with any
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub nodename: String,
    pub release: String,
    pub machine: String,
}

impl Kernel {
    pub fn current() -> Kernel {
        let uname = rustix::system::uname();
        Kernel {
            nodename: uname.nodename().to_string_lossy().into_owned(),
            release: uname.release().to_string_lossy().into_owned(),
            machine: uname.machine().to_string_lossy().into_owned(),
        }
    }
}

/// Degraded facets of one collection, one readable line each.
#[derive(Debug, Default)]
pub struct Warnings {
    lines: Vec<String>,
}

impl Warnings {
    pub fn add(&mut self, facet: &'static str, message: impl Display) {
        let message = message.to_string();
        warn!(facet, %message, "inventory facet incomplete");
        self.lines.push(format!("{facet}: {message}"));
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub fn into_vec(self) -> Vec<String> {
        self.lines
    }
}

/// Why a facet, or part of one, could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FacetError {
    #[error("could not read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{program} failed: {message}")]
    Command { program: String, message: String },
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
}

/// Reads a text file; `Ok(None)` when it does not exist, which for most system files just means
/// "not on this kind of machine".
pub fn read_optional(path: &Path) -> Result<Option<String>, FacetError> {
    match std::fs::read(path) {
        // System files are ASCII in practice; a stray byte must not cost the whole file.
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FacetError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Trims a value and turns an empty one into `None`.
pub fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Owns the OS handles (sysinfo's `System` and `Networks`) for the agent's whole life, so each
/// collection only refreshes what it reads, and keeps the previous health sample's counters as
/// the baseline for rates.
pub struct Collector {
    pub(crate) root: Root,
    pub(crate) system: Option<sysinfo::System>,
    pub(crate) networks: Option<sysinfo::Networks>,
    pub(crate) baseline: Baseline,
    pub(crate) rpm_timeout: Duration,
    /// The boot time this process reported first; see [`os::steady_boot_time`].
    pub(crate) boot_time: Option<OffsetDateTime>,
}

impl Collector {
    pub fn new(root: Root) -> Collector {
        // The CPU list (model, vendor, frequency) is read once here: it does not change while
        // the agent runs, and refreshing it later would disturb the CPU usage baseline.
        let system = sysinfo::System::new_with_specifics(
            sysinfo::RefreshKind::nothing()
                .with_cpu(sysinfo::CpuRefreshKind::nothing().with_frequency()),
        )
        .inspect_err(|e| warn!(error = %e, "could not open system information"))
        .ok();
        let networks = sysinfo::Networks::new_with_refreshed_list()
            .inspect_err(|e| warn!(error = %e, "could not list network interfaces"))
            .ok();
        let mut collector = Collector {
            root,
            system,
            networks,
            baseline: Baseline::default(),
            rpm_timeout: software::rpm::TIMEOUT,
            boot_time: None,
        };
        collector.baseline = collector.take_baseline();
        collector
    }

    /// Collects the inventory, normalised (lists in canonical order) so that its digest only
    /// changes when the machine does.
    pub fn inventory(&mut self, agent_id: &str) -> Inventory {
        let mut inventory = Inventory::new(agent_id, OffsetDateTime::now_utc());
        let mut warnings = Warnings::default();
        let kernel = Kernel::current();
        let root = &self.root;
        inventory.host = host::collect(root, &kernel, &mut warnings);
        inventory.hardware = hardware::collect(root, &mut warnings);
        inventory.os = os::collect(root, &kernel, &mut warnings);
        inventory.os.boot_time = os::steady_boot_time(&mut self.boot_time, inventory.os.boot_time);
        inventory.cpu = cpu::collect(root, self.system.as_ref(), &mut warnings);
        inventory.memory = memory::collect(self.system.as_mut(), &mut warnings);
        inventory.filesystems = filesystems::collect(root, &mut warnings);
        inventory.network_interfaces =
            network::collect(root, self.networks.as_mut(), &mut warnings);
        inventory.software = software::collect(root, self.rpm_timeout, &mut warnings);
        inventory.warnings = warnings.into_vec();
        inventory.normalize();
        inventory
    }
}

#[cfg(test)]
pub(crate) fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_maps_absolute_paths_under_its_base() {
        let root = Root::at("/tmp/fixture");
        assert_eq!(
            root.path("/etc/os-release"),
            PathBuf::from("/tmp/fixture/etc/os-release")
        );
        assert_eq!(
            Root::host().path("/etc/os-release"),
            PathBuf::from("/etc/os-release")
        );
        assert!(Root::host().is_host());
        assert!(!root.is_host());
    }

    #[test]
    fn digest_is_stable_across_two_collections_of_this_machine() {
        let mut collector = Collector::new(Root::host());
        let first = collector.inventory("00000000-0000-4000-8000-000000000000");
        let second = collector.inventory("00000000-0000-4000-8000-000000000000");
        assert_eq!(first.content_digest(), second.content_digest());
        // A fresh collector (a restarted agent) agrees too.
        let third = Collector::new(Root::host()).inventory("00000000-0000-4000-8000-000000000000");
        assert_eq!(first.content_digest(), third.content_digest());
        assert_eq!(first.schema, census_common::INVENTORY_SCHEMA);
        assert_eq!(first.os.family.as_deref(), Some("linux"));
    }

    #[test]
    fn boot_time_wobbling_across_the_digest_boundary_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        let stat = dir.path().join("proc/stat");
        let mut collector = Collector::new(Root::at(dir.path()));
        let id = "00000000-0000-4000-8000-000000000000";
        // 1_732_100_400 is on a 10-minute boundary; the kernel's btime moves by a second.
        std::fs::write(&stat, "cpu  1 2 3 4\nbtime 1732100399\n").unwrap();
        let first = collector.inventory(id);
        std::fs::write(&stat, "cpu  1 2 3 4\nbtime 1732100400\n").unwrap();
        let second = collector.inventory(id);
        assert_eq!(first.os.boot_time, second.os.boot_time);
        assert_eq!(first.content_digest(), second.content_digest());
        // A real move (the clock stepped by an hour) is seen.
        std::fs::write(&stat, "cpu  1 2 3 4\nbtime 1732104000\n").unwrap();
        let third = collector.inventory(id);
        assert_eq!(third.os.boot_time.unwrap().unix_timestamp(), 1_732_104_000);
        assert_ne!(first.content_digest(), third.content_digest());
    }
}
