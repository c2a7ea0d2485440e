//! The processor: model, vendor, core counts and frequency.
//!
//! The frequency is the CPU's rated maximum (`cpufreq/cpuinfo_max_freq`) where the kernel
//! offers it, because the current frequency moves with load and would change the inventory's
//! digest on every collection. Without cpufreq (most VMs), it is the `cpu MHz` that sysinfo
//! reads from `/proc/cpuinfo`, which does not move there.

use census_common::Cpu;

use super::{Root, Warnings, non_empty, read_optional};

pub fn collect(root: &Root, system: Option<&sysinfo::System>, warnings: &mut Warnings) -> Cpu {
    let Some(system) = system else {
        warnings.add("cpu", "system information unavailable");
        return Cpu::default();
    };
    let cpus = system.cpus();
    let Some(first) = cpus.first() else {
        warnings.add("cpu", "no CPUs listed in /proc/stat");
        return Cpu::default();
    };
    let physical_cores = sysinfo::System::physical_core_count()
        .inspect_err(|e| warnings.add("cpu", format!("physical core count unknown: {e}")))
        .ok()
        .and_then(|n| u32::try_from(n).ok());
    let rated =
        match read_optional(&root.path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")) {
            Ok(text) => text.as_deref().and_then(khz_to_mhz),
            Err(e) => {
                warnings.add("cpu", e);
                None
            }
        };
    Cpu {
        model: non_empty(first.brand()),
        vendor: non_empty(first.vendor_id()),
        physical_cores,
        logical_cores: u32::try_from(cpus.len()).ok(),
        frequency_mhz: rated.or_else(|| Some(first.frequency()).filter(|f| *f > 0)),
    }
}

/// cpufreq files hold kHz.
pub fn khz_to_mhz(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|khz| *khz > 0)
        .map(|khz| khz / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn cpufreq_khz_to_mhz() {
        assert_eq!(khz_to_mhz("4700000\n"), Some(4700));
        assert_eq!(khz_to_mhz("0\n"), None);
        assert_eq!(khz_to_mhz("n/a"), None);
    }

    #[test]
    fn rated_frequency_from_fixture_wins_over_current() {
        let system = sysinfo::System::new_with_specifics(
            sysinfo::RefreshKind::nothing()
                .with_cpu(sysinfo::CpuRefreshKind::nothing().with_frequency()),
        )
        .unwrap();
        let mut warnings = Warnings::default();
        let cpu = collect(
            &Root::at(fixture("roots/thinkpad")),
            Some(&system),
            &mut warnings,
        );
        assert_eq!(cpu.frequency_mhz, Some(4700));
        // Counts come from the running machine.
        assert_eq!(cpu.logical_cores, u32::try_from(system.cpus().len()).ok());
        assert!(cpu.logical_cores.unwrap() >= 1);
    }

    #[test]
    fn without_system_information_the_facet_is_empty_with_a_warning() {
        let mut warnings = Warnings::default();
        assert_eq!(collect(&Root::host(), None, &mut warnings), Cpu::default());
        assert_eq!(warnings.lines().len(), 1);
    }
}
