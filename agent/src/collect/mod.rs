//! The inventory: what this machine is and what is installed on it, one facet a module.
//!
//! **Promise:** a facet that fails leaves its fields empty and adds one line to
//! `inventory.warnings` (and a WARN log); it never fails the report. A value the agent cannot
//! learn is `None`, never guessed.
//!
//! **Promise: no facet holds the agent up.** Each facet runs on a helper thread under a time
//! budget ([`Budgets`]: 30 s for software, 5 s for the others); past it the facet is
//! abandoned, its fields stay empty, its name is listed in `inventory.incomplete`, and
//! `"<facet>: did not finish within <N>s; skipped"` is added to the warnings. A thread cannot be
//! killed, so an abandoned facet's thread runs on until whatever it is stuck in returns; while
//! it does, later collections skip that facet at once (`"<facet>: still hung since <time>;
//! skipped"`) instead of stacking one more stuck thread per collection. The filesystems facet
//! is budgeted per mount point instead (the part that hangs, on a dead network filesystem):
//! such a mount stays listed with its size unknown. Commands a facet runs (`rpm`) are killed,
//! with everything they started, after their own timeout, below the facet's budget.
//!
//! Every reader takes a [`Root`], the directory that stands for `/`, so tests run the parsers
//! on fixture trees under `agent/fixtures/` instead of on the machine that runs them.

pub mod budget;
#[cfg(unix)]
pub mod command;
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
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use census_common::Inventory;
use time::OffsetDateTime;
use tracing::warn;

pub use self::budget::Budgets;
use self::budget::{HungThreads, Outcome};
use crate::health::Baseline;

/// What facets on other operating systems than the one they read say.
pub const NOT_SUPPORTED: &str = "not supported on this OS";

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
    #[cfg(unix)]
    pub fn current() -> Kernel {
        let uname = rustix::system::uname();
        Kernel {
            nodename: uname.nodename().to_string_lossy().into_owned(),
            release: uname.release().to_string_lossy().into_owned(),
            machine: uname.machine().to_string_lossy().into_owned(),
        }
    }

    /// Without `uname`, sysinfo asks the OS for the same three values.
    #[cfg(not(unix))]
    pub fn current() -> Kernel {
        Kernel {
            nodename: sysinfo::System::host_name().unwrap_or_default(),
            release: sysinfo::System::kernel_version().unwrap_or_default(),
            machine: sysinfo::System::cpu_arch(),
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

    /// Takes over lines already logged (by a facet on its helper thread).
    fn append(&mut self, other: Warnings) {
        self.lines.extend(other.lines);
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

/// A sysinfo handle shared with the facet threads. Whoever holds it may be a facet thread that
/// overran its budget, so the health sample only ever tries to take it ([`try_hold`]).
pub(crate) type Shared<T> = Arc<Mutex<T>>;

/// Takes `shared` now, or `None` when a stuck facet thread holds it. A thread that panicked
/// while holding it left plain data behind, still fit to read.
pub(crate) fn try_hold<T>(shared: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match shared.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn hold<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Owns the OS handles (sysinfo's `System` and `Networks`) for the agent's whole life, so each
/// collection only refreshes what it reads, and keeps the previous health sample's counters as
/// the baseline for rates.
pub struct Collector {
    pub(crate) root: Root,
    pub(crate) system: Option<Shared<sysinfo::System>>,
    pub(crate) networks: Option<Shared<sysinfo::Networks>>,
    pub(crate) baseline: Baseline,
    pub(crate) rpm_timeout: Duration,
    pub(crate) budgets: Budgets,
    /// Facets and mount points whose helper thread overran its budget and still runs.
    pub(crate) hung: HungThreads,
    /// The boot time this process reported first; see [`os::steady_boot_time`].
    pub(crate) boot_time: Option<OffsetDateTime>,
}

/// What every facet thread may read.
struct Sources {
    root: Root,
    kernel: Kernel,
    system: Option<Shared<sysinfo::System>>,
    networks: Option<Shared<sysinfo::Networks>>,
    rpm_timeout: Duration,
}

/// One inventory's warnings and skipped facets, and the runner of its facets.
struct Facets<'a> {
    sources: Arc<Sources>,
    hung: &'a mut HungThreads,
    warnings: Warnings,
    incomplete: Vec<String>,
}

impl Facets<'_> {
    /// Runs `facet` on a helper thread under `budget`; on overrun, or while an earlier run is
    /// still stuck, its value is the empty default and the facet is listed as incomplete.
    fn run<T: Default + Send + 'static>(
        &mut self,
        name: &'static str,
        budget: Duration,
        facet: impl FnOnce(&Sources, &mut Warnings) -> T + Send + 'static,
    ) -> T {
        let sources = Arc::clone(&self.sources);
        let outcome = self.hung.run(name, budget, move || {
            let mut warnings = Warnings::default();
            let value = facet(&sources, &mut warnings);
            (value, warnings)
        });
        let skipped = match outcome {
            Outcome::Finished((value, warnings)) => {
                self.warnings.append(warnings);
                return value;
            }
            Outcome::Overran => format!("did not finish within {}; skipped", budget::Shown(budget)),
            Outcome::StillHung { since } => {
                format!("still hung since {}; skipped", budget::since(since))
            }
            Outcome::Failed(reason) => format!("failed: {reason}"),
        };
        self.warnings.add(name, skipped);
        self.incomplete.push(name.to_owned());
        T::default()
    }
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
            system: system.map(|s| Arc::new(Mutex::new(s))),
            networks: networks.map(|n| Arc::new(Mutex::new(n))),
            baseline: Baseline::default(),
            rpm_timeout: software::rpm::TIMEOUT,
            budgets: Budgets::DEFAULT,
            hung: HungThreads::default(),
            boot_time: None,
        };
        collector.baseline = collector.take_baseline();
        collector
    }

    /// Collects the inventory, normalised (lists in canonical order) so that its digest only
    /// changes when the machine does.
    pub fn inventory(&mut self, agent_id: &str) -> Inventory {
        let mut inventory = Inventory::new(agent_id, OffsetDateTime::now_utc());
        let budgets = self.budgets;
        let mut facets = Facets {
            sources: Arc::new(Sources {
                root: self.root.clone(),
                // A system call answered from memory: nothing to wait for.
                kernel: Kernel::current(),
                system: self.system.clone(),
                networks: self.networks.clone(),
                rpm_timeout: self.rpm_timeout,
            }),
            hung: &mut self.hung,
            warnings: Warnings::default(),
            incomplete: Vec::new(),
        };
        inventory.host = facets.run("host", budgets.facet, |s, w| {
            host::collect(&s.root, &s.kernel, w)
        });
        inventory.hardware = facets.run("hardware", budgets.facet, |s, w| {
            if cfg!(target_os = "linux") {
                hardware::collect(&s.root, w)
            } else {
                w.add("hardware", NOT_SUPPORTED);
                census_common::Hardware::default()
            }
        });
        inventory.os = facets.run("os", budgets.facet, |s, w| {
            if cfg!(target_os = "linux") {
                os::collect(&s.root, &s.kernel, w)
            } else {
                os::from_system(&s.kernel)
            }
        });
        inventory.cpu = facets.run("cpu", budgets.facet, |s, w| {
            let system = s.system.as_deref().map(hold);
            cpu::collect(&s.root, system.as_deref(), w)
        });
        inventory.memory = facets.run("memory", budgets.facet, |s, w| {
            let mut system = s.system.as_deref().map(hold);
            memory::collect(system.as_deref_mut(), w)
        });
        inventory.network_interfaces = facets.run("network_interfaces", budgets.facet, |s, w| {
            let mut networks = s.networks.as_deref().map(hold);
            network::collect(&s.root, networks.as_deref_mut(), w)
        });
        inventory.software = facets.run("software", budgets.software, |s, w| {
            software::collect(&s.root, s.rpm_timeout, w)
        });
        let Facets {
            hung,
            mut warnings,
            incomplete,
            ..
        } = facets;
        inventory.filesystems = filesystems_facet(&self.root, hung, budgets.mount, &mut warnings);
        inventory.os.boot_time = os::steady_boot_time(&mut self.boot_time, inventory.os.boot_time);
        inventory.warnings = warnings.into_vec();
        inventory.incomplete = incomplete;
        inventory.normalize();
        inventory
    }
}

/// Filesystems are read from `/proc/self/mountinfo`, which only Linux has.
#[cfg(target_os = "linux")]
fn filesystems_facet(
    root: &Root,
    hung: &mut HungThreads,
    budget: Duration,
    warnings: &mut Warnings,
) -> Vec<census_common::Filesystem> {
    filesystems::collect(root, hung, budget, filesystems::look, warnings)
}

#[cfg(not(target_os = "linux"))]
fn filesystems_facet(
    _root: &Root,
    _hung: &mut HungThreads,
    _budget: Duration,
    warnings: &mut Warnings,
) -> Vec<census_common::Filesystem> {
    warnings.add("filesystems", NOT_SUPPORTED);
    Vec::new()
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

    /// A root whose `/etc/hosts` is a named pipe nobody writes to: reading it blocks until the
    /// test opens the pipe for writing, the way a read from a dead NFS server blocks.
    struct BlockingHosts {
        dir: tempfile::TempDir,
    }

    impl BlockingHosts {
        fn new() -> BlockingHosts {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("etc")).unwrap();
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            std::os::unix::fs::symlink(&fifo, dir.path().join("etc/hosts")).unwrap();
            BlockingHosts { dir }
        }

        /// Puts a plain file in the pipe's place and lets the blocked reader go (it reads an
        /// empty file).
        fn release(&self) {
            let hosts = self.dir.path().join("etc/hosts");
            std::fs::remove_file(&hosts).unwrap();
            std::fs::write(&hosts, "127.0.1.1 blocked.example.org blocked\n").unwrap();
            // Opening the write end waits for the reader, which is already there.
            drop(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.dir.path().join("fifo"))
                    .unwrap(),
            );
        }
    }

    #[test]
    fn a_hung_facet_is_skipped_with_a_warning_and_not_started_again_while_it_hangs() {
        let blocking = BlockingHosts::new();
        let mut collector = Collector::new(Root::at(blocking.dir.path()));
        // Long enough for the facets that do not block, on a loaded machine.
        collector.budgets.facet = Duration::from_millis(500);
        let id = "00000000-0000-4000-8000-000000000000";

        let first = collector.inventory(id);
        assert_eq!(first.host, census_common::Host::default());
        assert!(
            first
                .warnings
                .contains(&"host: did not finish within 500ms; skipped".to_owned()),
            "{:?}",
            first.warnings
        );
        assert_eq!(first.incomplete, vec!["host".to_owned()]);
        // The other facets did their work.
        assert!(first.memory.total_bytes.is_some());
        assert!(first.cpu.logical_cores.is_some());

        // Still stuck: skipped at once, no second thread.
        let second = collector.inventory(id);
        assert!(
            second
                .warnings
                .iter()
                .any(|w| w.starts_with("host: still hung since ") && w.ends_with("; skipped")),
            "{:?}",
            second.warnings
        );
        assert_eq!(second.incomplete, vec!["host".to_owned()]);
        assert_eq!(collector.hung.count(), 1);

        // Once the read returns, the facet runs again and is complete.
        blocking.release();
        while collector.hung.is_hung("host") {
            std::thread::yield_now();
        }
        collector.budgets.facet = Budgets::DEFAULT.facet;
        let third = collector.inventory(id);
        assert!(third.incomplete.is_empty(), "{:?}", third.warnings);
        assert!(third.host.hostname.is_some());
        assert_eq!(collector.hung.count(), 0);
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
