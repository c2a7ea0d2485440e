//! One health sample: how the machine is doing now.
//!
//! **Promises:** rates (CPU busy %, network bytes per second, the agent's own CPU %) are
//! measured over the interval since the previous sample, never from a single reading. The
//! first sample of a process waits until [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] has passed
//! since the collector was created, so it is never a meaningless 0; in the service loop the
//! previous cycle is the baseline and nothing waits. A value the OS does not offer is `None`;
//! swap use is `None` on a machine without swap (a percentage of nothing is not 0).
//!
//! Network rates add up every interface except loopback, whose traffic never leaves the
//! machine. Filesystems are the inventory's list (same filter), with use from `statvfs`.
//!
//! **Promise:** a hung filesystem never stops health samples. Each mount point is looked at on
//! a helper thread under [`Budgets::mount`](crate::collect::Budgets); one that overruns is left
//! out of the sample with a WARN log, and while its thread is still stuck later samples leave
//! it out at once, without starting another. sysinfo's handles held by a stuck inventory facet
//! leave their figures (CPU, memory, network) out of the sample the same way.
//!
//! Filesystems, the process count and the agent's resident size are read from `/proc` and so
//! are Linux only; the agent's CPU time is read on every Unix. Elsewhere they are `None`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use census_common::{FilesystemUsage, HealthSample};
use time::OffsetDateTime;
use tracing::warn;

use crate::collect::budget::HungThreads;
use crate::collect::{Collector, Root, filesystems, try_hold};

/// Counters at the previous sample.
#[derive(Debug, Default)]
pub struct Baseline {
    at: Option<Instant>,
    /// Total bytes (received, transmitted) per interface.
    net: HashMap<String, (u64, u64)>,
    /// CPU time this process had used.
    own_cpu: Option<Duration>,
}

impl Collector {
    pub(crate) fn take_baseline(&mut self) -> Baseline {
        Baseline {
            at: Some(Instant::now()),
            net: self.net_totals(),
            own_cpu: own_cpu_time(),
        }
    }

    fn net_totals(&mut self) -> HashMap<String, (u64, u64)> {
        let Some(mut networks) = self.networks.as_deref().and_then(try_hold) else {
            return HashMap::new();
        };
        networks.refresh(true);
        networks
            .iter()
            .filter(|(name, _)| name.as_os_str() != "lo")
            .map(|(name, data)| {
                let totals = (data.total_received(), data.total_transmitted());
                (name.to_string_lossy().into_owned(), totals)
            })
            .collect()
    }

    /// Takes one sample, measuring rates against the previous one (or against the collector's
    /// creation, waiting for the minimum interval if needed).
    pub fn health(&mut self, agent_id: &str) -> HealthSample {
        let started = self.baseline.at.unwrap_or_else(Instant::now);
        if let Some(wait) = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let mut sample = HealthSample::empty(agent_id, OffsetDateTime::now_utc());
        // The number of CPUs scales the agent's own CPU time; unknown, that share is unknown.
        let mut logical_cpus = None;
        let shared = self.system.clone();
        match shared.as_deref().map(try_hold) {
            Some(Some(mut system)) => {
                system.refresh_cpu_usage();
                sample.cpu_percent = Some(round2(
                    f64::from(system.global_cpu_usage()).clamp(0.0, 100.0),
                ));
                system.refresh_memory();
                sample.memory_used_percent = percent(system.used_memory(), system.total_memory());
                sample.swap_used_percent = percent(system.used_swap(), system.total_swap());
                logical_cpus = Some(system.cpus().len().max(1));
            }
            Some(None) => {
                warn!(
                    "system information is held by a stuck inventory facet; CPU and memory left out"
                );
            }
            None => {}
        }
        sample.uptime_secs = sysinfo::System::uptime().ok();
        sample.load = sysinfo::System::load_average()
            .ok()
            .map(|l| [l.one, l.five, l.fifteen]);
        if cfg!(target_os = "linux") {
            sample.process_count = count_processes(&self.root);
            sample.agent_rss_bytes = own_rss_bytes(&self.root);
        }
        sample.filesystems = filesystem_usage(&self.root, &mut self.hung, self.budgets.mount);

        let now = Instant::now();
        let elapsed = now.duration_since(started);
        let net = self.net_totals();
        if let Some((rx, tx)) = net_rates(&self.baseline.net, &net, elapsed) {
            sample.net_rx_bytes_per_sec = Some(round2(rx));
            sample.net_tx_bytes_per_sec = Some(round2(tx));
        }
        let own_cpu = own_cpu_time();
        sample.agent_cpu_percent = self
            .baseline
            .own_cpu
            .zip(own_cpu)
            .zip(logical_cpus)
            .and_then(|((before, now), cpus)| cpu_share(now.saturating_sub(before), elapsed, cpus))
            .map(round2);

        self.baseline = Baseline {
            at: Some(now),
            net,
            own_cpu,
        };
        sample
    }
}

/// `part` of `total` in percent; `None` when there is no total.
pub fn percent(part: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| round2(part.min(total) as f64 * 100.0 / total as f64))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Bytes per second received and sent between two readings of the per-interface totals.
/// Interfaces present in only one reading, or whose counter went backwards (a reset), are left
/// out rather than counted as a burst.
pub fn net_rates(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
    elapsed: Duration,
) -> Option<(f64, f64)> {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut compared = false;
    for (name, (rx_after, tx_after)) in after {
        let Some((rx_before, tx_before)) = before.get(name) else {
            continue;
        };
        if rx_after < rx_before || tx_after < tx_before {
            continue;
        }
        compared = true;
        rx += rx_after - rx_before;
        tx += tx_after - tx_before;
    }
    compared.then(|| (rx as f64 / secs, tx as f64 / secs))
}

/// CPU time used over wall time, as a share of all CPUs (0 to 100).
pub fn cpu_share(used: Duration, elapsed: Duration, cpus: usize) -> Option<f64> {
    let wall = elapsed.as_secs_f64() * cpus as f64;
    (wall > 0.0).then(|| (used.as_secs_f64() * 100.0 / wall).clamp(0.0, 100.0))
}

#[cfg(unix)]
fn own_cpu_time() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Some(Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    ))
}

#[cfg(not(unix))]
fn own_cpu_time() -> Option<Duration> {
    None
}

/// Resident set size from `/proc/self/statm` (second field, in pages).
#[cfg(unix)]
fn own_rss_bytes(root: &Root) -> Option<u64> {
    let statm = std::fs::read_to_string(root.path("/proc/self/statm")).ok()?;
    rss_from_statm(&statm, rustix::param::page_size() as u64)
}

#[cfg(not(unix))]
fn own_rss_bytes(_root: &Root) -> Option<u64> {
    None
}

pub fn rss_from_statm(statm: &str, page_size: u64) -> Option<u64> {
    statm
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|pages| pages * page_size)
}

/// Processes are the numeric entries of `/proc` (threads live below them).
pub fn count_processes(root: &Root) -> Option<u64> {
    let entries = std::fs::read_dir(root.path("/proc"))
        .inspect_err(|e| warn!(error = %e, "could not list /proc"))
        .ok()?;
    let count = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    Some(count as u64)
}

#[cfg(target_os = "linux")]
fn filesystem_usage(root: &Root, hung: &mut HungThreads, budget: Duration) -> Vec<FilesystemUsage> {
    filesystem_usage_with(root, hung, budget, filesystems::look)
}

#[cfg(not(target_os = "linux"))]
fn filesystem_usage(
    _root: &Root,
    _hung: &mut HungThreads,
    _budget: Duration,
) -> Vec<FilesystemUsage> {
    Vec::new()
}

/// Use of each mount point `look` answers for in time; see the module doc.
pub fn filesystem_usage_with<L>(
    root: &Root,
    hung: &mut HungThreads,
    budget: Duration,
    look: L,
) -> Vec<FilesystemUsage>
where
    L: Fn(&std::path::Path) -> filesystems::Look + Clone + Send + 'static,
{
    let looked = match filesystems::look_at_mounts(root, hung, budget, look) {
        Ok(looked) => looked,
        Err(e) => {
            warn!(error = %e, "could not list filesystems");
            return Vec::new();
        }
    };
    looked
        .into_iter()
        .filter_map(|(m, seen)| {
            let (used_percent, inodes_used_percent) = match seen {
                filesystems::Seen::Space(s) => usage(
                    s.blocks,
                    s.blocks_free,
                    s.blocks_available,
                    s.inodes,
                    s.inodes_free,
                ),
                filesystems::Seen::Failed(reason) => {
                    warn!(mount = %m.mount_point, %reason, "filesystem use unknown");
                    (None, None)
                }
                filesystems::Seen::Hung(reason) => {
                    warn!(mount = %m.mount_point, %reason, "filesystem left out of the health sample");
                    return None;
                }
            };
            Some(FilesystemUsage {
                mount: m.mount_point,
                used_percent,
                inodes_used_percent,
            })
        })
        .collect()
}

/// Used space the way `df` shows it: used over what users can have (used + available), so
/// the blocks reserved for root do not hide a full disk. Filesystems without a fixed inode
/// table (btrfs, some network ones) report 0 inodes: their inode use is `None`.
pub fn usage(
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
) -> (Option<f64>, Option<f64>) {
    let used = blocks.saturating_sub(bfree);
    let space = percent(used, used.saturating_add(bavail));
    let inodes = percent(files.saturating_sub(ffree), files);
    (space, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_nothing_is_none() {
        assert_eq!(percent(0, 0), None);
        assert_eq!(percent(1, 4), Some(25.0));
        assert_eq!(percent(1, 3), Some(33.33));
        assert_eq!(percent(5, 4), Some(100.0));
    }

    #[test]
    fn filesystem_usage_like_df() {
        // 1000 blocks, 100 free of which 50 are reserved for root: 900 used of 950 usable.
        assert_eq!(usage(1000, 100, 50, 200, 150), (Some(94.74), Some(25.0)));
        assert_eq!(usage(1000, 1000, 1000, 0, 0), (Some(0.0), None));
        assert_eq!(usage(0, 0, 0, 0, 0), (None, None));
    }

    #[test]
    fn net_rates_over_the_interval() {
        let before: HashMap<String, (u64, u64)> = [
            ("eth0".to_owned(), (1000, 500)),
            ("wlan0".to_owned(), (0, 0)),
        ]
        .into();
        let after: HashMap<String, (u64, u64)> = [
            ("eth0".to_owned(), (3000, 1500)),
            // Counter reset: left out, not a burst of 2^64 bytes.
            ("wlan0".to_owned(), (0, 0)),
            // New interface: no baseline yet.
            ("veth1".to_owned(), (10_000, 10_000)),
        ]
        .into();
        assert_eq!(
            net_rates(&before, &after, Duration::from_secs(2)),
            Some((1000.0, 500.0))
        );
        let reset: HashMap<String, (u64, u64)> = [("eth0".to_owned(), (10, 10))].into();
        assert_eq!(net_rates(&before, &reset, Duration::from_secs(2)), None);
        assert_eq!(net_rates(&before, &after, Duration::ZERO), None);
    }

    #[test]
    fn cpu_share_of_all_cpus() {
        assert_eq!(
            cpu_share(Duration::from_secs(1), Duration::from_secs(2), 1),
            Some(50.0)
        );
        assert_eq!(
            cpu_share(Duration::from_secs(1), Duration::from_secs(2), 4),
            Some(12.5)
        );
        assert_eq!(cpu_share(Duration::from_secs(1), Duration::ZERO, 4), None);
    }

    #[test]
    fn rss_from_statm_pages() {
        assert_eq!(
            rss_from_statm("2834 1024 512 100 0 900 0\n", 4096),
            Some(4 * 1024 * 1024)
        );
        assert_eq!(rss_from_statm("", 4096), None);
    }

    #[test]
    fn a_dead_mount_is_left_out_of_health_samples_without_piling_up_threads() {
        let nfs = filesystems::DeadNfs::new();
        let mut hung = HungThreads::default();
        let mounts = |usage: &[FilesystemUsage]| -> Vec<String> {
            usage.iter().map(|f| f.mount.clone()).collect()
        };
        // Long enough for the mounts that answer at once, on a loaded machine.
        let budget = Duration::from_millis(500);
        let first = filesystem_usage_with(&nfs.root(), &mut hung, budget, nfs.look());
        assert_eq!(mounts(&first), ["/", "/home"]);
        assert_eq!(first[0].used_percent, Some(50.0));
        assert_eq!(first[0].inodes_used_percent, Some(50.0));
        for _ in 0..3 {
            let next = filesystem_usage_with(&nfs.root(), &mut hung, budget, nfs.look());
            assert_eq!(mounts(&next), ["/", "/home"]);
        }
        assert_eq!(nfs.nfs_looks(), 1, "one stuck thread, not one per sample");
        assert_eq!(hung.count(), 1);

        // The server comes back: the mount is in the next sample.
        nfs.release(&hung);
        nfs.release.send(()).unwrap();
        let back = filesystem_usage_with(&nfs.root(), &mut hung, budget, nfs.look());
        assert_eq!(mounts(&back), ["/", "/home", "/srv/nfs"]);
    }

    #[test]
    fn first_sample_of_this_machine_is_measured_over_an_interval() {
        let mut collector = Collector::new(Root::host());
        let sample = collector.health("00000000-0000-4000-8000-000000000000");
        let cpu = sample.cpu_percent.expect("cpu_percent");
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        assert!(sample.memory_used_percent.unwrap() > 0.0);
        assert!(sample.process_count.unwrap() >= 1);
        assert!(sample.agent_rss_bytes.unwrap() > 0);
        assert!(sample.agent_cpu_percent.is_some());
        assert!(sample.filesystems.iter().any(|f| f.mount == "/"));
    }

    #[test]
    fn busy_cpu_shows_in_the_first_sample() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut collector = Collector::new(Root::host());
        let machine_cpus = collector
            .system
            .as_deref()
            .map_or(1, |s| try_hold(s).unwrap().cpus().len().max(1));
        // One spinning thread per CPU this process may use (affinity and cgroup quota count),
        // bounded so a huge runner is not flooded. On a 64-core machine one thread alone would
        // be 1.6 % of the machine, lost in the noise of other tests.
        let spinners = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 64);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..spinners)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let sample = collector.health("a");
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().unwrap();
        }
        // What the spinners alone add, as a share of the whole machine: half of it must show.
        // A first reading that returned 0, or one not measured over an interval, fails here,
        // on any number of CPUs.
        let expected = spinners.min(machine_cpus) as f64 * 100.0 / machine_cpus as f64;
        let threshold = expected / 2.0;
        assert!(
            sample.cpu_percent.unwrap() > threshold,
            "{:?} with {spinners} spinners on {machine_cpus} CPUs",
            sample.cpu_percent
        );
        // The process's own share depends on what else runs: on a CI machine busy with other
        // test binaries the spinners get a fraction of the CPUs. A tenth of it still tells a
        // measured interval from a first reading of zero.
        assert!(
            sample.agent_cpu_percent.unwrap() > expected / 10.0,
            "{:?} with {spinners} spinners on {machine_cpus} CPUs",
            sample.agent_cpu_percent
        );
    }
}
