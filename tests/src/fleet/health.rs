//! Virtual agents' health samples: plausible values that vary from sample to sample around each
//! machine's own level ([`Profile::busy`]). A breaching machine reports `/` 96 to 99 % used and
//! memory 97.5 to 99.5 % used in every sample, above the collector's default rules
//! ("Filesystem almost full" > 90 %, "Memory exhausted" > 95 %); the others stay at most 80 %
//! and 85 %, CPU at most 60 % and load at most 1.5 per core, below every default rule.

use census_common::{FilesystemUsage, HealthSample};
use time::OffsetDateTime;

use super::identity::{Profile, Rng, Stream};

/// Sample `seq` of agent `index`, collected at `now`, for an agent sending every
/// `interval_secs`.
pub fn sample(
    agent_id: String,
    seed: u64,
    index: u32,
    profile: &Profile,
    seq: u64,
    interval_secs: u32,
    now: OffsetDateTime,
) -> HealthSample {
    let mut rng = Rng::new(seed, index, Stream::Health as u64, seq);
    let processes = 120 + (profile.busy * 300.0) as u64 + rng.below(20);
    let rss = 9_000_000 + rng.below(1_000_000);
    let busy = profile.busy;
    let mut vary = |low: f64, high: f64| {
        let centre = low + (high - low) * busy;
        let spread = (high - low) * 0.15;
        round2(
            rng.between(centre - spread, centre + spread)
                .clamp(low, high),
        )
    };
    let cpu = vary(2.0, 60.0);
    let cores = f64::from(profile.logical_cores);
    let load1 = vary(0.05, 1.5) * cores;
    let memory = if profile.breaching {
        vary(97.5, 99.5)
    } else {
        vary(20.0, 85.0)
    };
    let filesystems = profile
        .mounts
        .iter()
        .enumerate()
        .map(|(k, mount)| FilesystemUsage {
            mount: (*mount).to_owned(),
            used_percent: Some(if k == 0 && profile.breaching {
                vary(96.0, 99.0)
            } else {
                vary(15.0, 80.0)
            }),
            inodes_used_percent: Some(vary(1.0, 30.0)),
        })
        .collect();
    HealthSample {
        agent_id,
        collected_at: now,
        uptime_secs: Some((now.unix_timestamp() - profile.boot_time).max(0) as u64),
        cpu_percent: Some(cpu),
        load: Some([round2(load1), round2(load1 * 0.9), round2(load1 * 0.8)]),
        memory_used_percent: Some(memory),
        swap_used_percent: Some(vary(0.0, 10.0)),
        filesystems,
        process_count: Some(processes),
        net_rx_bytes_per_sec: Some(vary(1_000.0, 5_000_000.0)),
        net_tx_bytes_per_sec: Some(vary(1_000.0, 2_000_000.0)),
        agent_rss_bytes: Some(rss),
        agent_cpu_percent: Some(vary(0.0, 0.3)),
        reports_dropped: None,
        interval_secs: Some(interval_secs),
    }
}

/// Two decimals, as a real agent's percentages have: full-precision floats would make samples
/// compress worse than real ones.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_breaching_machines_cross_the_default_thresholds() {
        let now = OffsetDateTime::from_unix_timestamp(1_770_000_000).unwrap();
        for index in 0..300 {
            let profile = Profile::new(5, index, 0.1);
            for seq in 1..4 {
                let s = sample("a".into(), 5, index, &profile, seq, 60, now);
                let root = s.filesystems[0].used_percent.unwrap();
                let memory = s.memory_used_percent.unwrap();
                assert_eq!(root > 95.0, profile.breaching, "{root}");
                assert_eq!(memory > 97.0, profile.breaching, "{memory}");
                assert!(s.cpu_percent.unwrap() <= 60.0);
                assert!(s.load.unwrap()[0] / f64::from(profile.logical_cores) <= 1.5);
                assert!(
                    s.filesystems
                        .iter()
                        .skip(1)
                        .all(|f| f.used_percent.unwrap() <= 80.0)
                );
            }
        }
    }
}
