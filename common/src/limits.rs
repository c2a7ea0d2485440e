//! What a batch may hold: how deep, how long, how many, which values. The collector checks the
//! raw bytes with [`crate::shape`] before decoding and the decoded [`Batch`] with
//! [`check_batch`] before storing anything, so no input can make it allocate without bound or
//! store a value no machine can have.
//!
//! The fields of [`Limits`] are named after the collector's configuration keys, and every
//! [`LimitError`] message names the field at fault and the key that would let it through, so an
//! admin reading an agent's log knows what to change.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;

use crate::{Batch, FilesystemUsage, HealthSample, Inventory, ReportBody};

/// Bounds on one batch. Each field is the collector configuration key of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of maps and arrays; a schema-1 batch needs 6.
    pub max_nesting_depth: usize,
    /// Longest string, in bytes, anywhere in a batch.
    pub max_string_bytes: usize,
    /// Most reports in one batch.
    pub max_reports_per_batch: usize,
    /// Most software entries in one inventory.
    pub max_software_entries: usize,
    /// Most entries in every other list: filesystems and network interfaces of an inventory,
    /// the addresses of an interface, warnings, incomplete facets, the filesystems of a health
    /// sample.
    pub max_parts: usize,
    /// How far a `collected_at` may be ahead of the collector's clock when the batch arrives.
    pub max_clock_skew: time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nesting_depth: 32,
            max_string_bytes: 4096,
            max_reports_per_batch: 1000,
            max_software_entries: 50_000,
            max_parts: 1024,
            max_clock_skew: time::Duration::hours(24),
        }
    }
}

impl Limits {
    /// The longest list any field may hold, which bounds every array and map before decoding.
    pub fn max_items(&self) -> usize {
        self.max_reports_per_batch
            .max(self.max_software_entries)
            .max(self.max_parts)
    }

    /// The most entries all the arrays and maps of one batch may hold together. Each list is
    /// bounded alone by [`Limits::max_items`]; this bounds their sum, so a body of many small
    /// lists (six bytes of MessagePack can decode into a 120-byte software entry) cannot decode
    /// into many times its size. Room for a largest inventory (every software entry a map of
    /// five fields) plus a full batch of health samples.
    pub fn max_total_items(&self) -> usize {
        self.max_software_entries
            .saturating_mul(8)
            .saturating_add(self.max_reports_per_batch.saturating_mul(64))
    }
}

/// No report can have been collected before this: a machine dating one earlier has a clock
/// that was never set (many boards start at 1970).
pub const EARLIEST_COLLECTED_AT: OffsetDateTime = datetime!(2000-01-01 00:00 UTC);

/// Highest percentage accepted. A little over 100 lets through the rounding of a ratio that
/// is really 100 %.
pub const MAX_PERCENT: f64 = 100.5;

/// Highest `agent_cpu_percent`: a process may use every core, so it is bounded by 100 per
/// core, for up to 4096 cores.
pub const MAX_AGENT_CPU_PERCENT: f64 = 100.0 * 4096.0;

/// Why a batch was refused. [`LimitError::code`] is the error code the collector answers with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the body nests maps and arrays {depth} levels deep at byte {at}, deeper than the \
         collector accepts (max_nesting_depth = {max})"
    )]
    TooDeep { at: usize, depth: usize, max: usize },
    #[error(
        "{field} is {len} bytes long, longer than the collector accepts (max_string_bytes = {max})"
    )]
    FieldTooLong { field: String, len: u64, max: usize },
    #[error("{list} has {len} entries, more than the collector accepts ({key} = {max})")]
    TooManyItems {
        list: String,
        len: u64,
        max: usize,
        key: &'static str,
    },
    #[error("seq {seq} appears more than once in the batch; every report needs its own seq")]
    DuplicateSeq { seq: u64 },
    #[error("{field} is {value}, {rule}")]
    OutOfRange {
        field: String,
        value: String,
        rule: String,
    },
    #[error("the body is not valid MessagePack: {reason} at byte {at}")]
    Malformed { at: usize, reason: &'static str },
}

impl LimitError {
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            LimitError::TooDeep { .. } => ErrorCode::NestingTooDeep,
            LimitError::FieldTooLong { .. } => ErrorCode::FieldTooLong,
            LimitError::TooManyItems { .. } => ErrorCode::TooManyItems,
            LimitError::DuplicateSeq { .. } => ErrorCode::DuplicateSeq,
            LimitError::OutOfRange { .. } => ErrorCode::ValueOutOfRange,
            LimitError::Malformed { .. } => ErrorCode::InvalidBody,
        }
    }

    /// Names the report a field belongs to.
    fn in_report(self, seq: u64) -> LimitError {
        let prefix = |name: String| format!("report {seq}: {name}");
        match self {
            LimitError::FieldTooLong { field, len, max } => LimitError::FieldTooLong {
                field: prefix(field),
                len,
                max,
            },
            LimitError::TooManyItems {
                list,
                len,
                max,
                key,
            } => LimitError::TooManyItems {
                list: prefix(list),
                len,
                max,
                key,
            },
            LimitError::OutOfRange { field, value, rule } => LimitError::OutOfRange {
                field: prefix(field),
                value,
                rule,
            },
            other => other,
        }
    }
}

/// Checks a decoded batch against `limits`; `arrival` is the collector's clock when the batch
/// arrived. Nothing is changed: a batch either passes whole or is refused whole.
pub fn check_batch(
    batch: &Batch,
    limits: &Limits,
    arrival: OffsetDateTime,
) -> Result<(), LimitError> {
    list(
        || "reports".to_owned(),
        batch.reports.len(),
        limits.max_reports_per_batch,
        "max_reports_per_batch",
    )?;
    string(
        || "agent_id".to_owned(),
        &batch.agent_id,
        limits.max_string_bytes,
    )?;
    let mut seqs: Vec<u64> = batch.reports.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    if let Some(pair) = seqs.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(LimitError::DuplicateSeq { seq: pair[0] });
    }
    for report in &batch.reports {
        match &report.body {
            ReportBody::Inventory(inv) => check_inventory(inv, limits, arrival),
            ReportBody::Health(sample) => check_health(sample, limits, arrival),
        }
        .map_err(|e| e.in_report(report.seq))?;
    }
    Ok(())
}

fn check_inventory(
    inv: &Inventory,
    limits: &Limits,
    arrival: OffsetDateTime,
) -> Result<(), LimitError> {
    let max = limits.max_string_bytes;
    list(
        || "software".to_owned(),
        inv.software.len(),
        limits.max_software_entries,
        "max_software_entries",
    )?;
    for (name, len) in [
        ("filesystems", inv.filesystems.len()),
        ("network_interfaces", inv.network_interfaces.len()),
        ("warnings", inv.warnings.len()),
        ("incomplete", inv.incomplete.len()),
    ] {
        list(|| name.to_owned(), len, limits.max_parts, "max_parts")?;
    }
    collected_at(inv.collected_at, limits, arrival)?;
    string(|| "agent_id".to_owned(), &inv.agent_id, max)?;
    let (host, hw, os, cpu) = (&inv.host, &inv.hardware, &inv.os, &inv.cpu);
    for (name, value) in [
        ("host.hostname", &host.hostname),
        ("host.fqdn", &host.fqdn),
        ("host.machine_id", &host.machine_id),
        ("host.domain", &host.domain),
        ("hardware.vendor", &hw.vendor),
        ("hardware.model", &hw.model),
        ("hardware.serial", &hw.serial),
        ("hardware.uuid", &hw.uuid),
        ("hardware.board_serial", &hw.board_serial),
        ("hardware.asset_tag", &hw.asset_tag),
        ("hardware.bios_vendor", &hw.bios_vendor),
        ("hardware.bios_version", &hw.bios_version),
        ("hardware.bios_date", &hw.bios_date),
        ("hardware.chassis", &hw.chassis),
        ("hardware.virtualization", &hw.virtualization),
        ("hardware.container", &hw.container),
        ("os.family", &os.family),
        ("os.name", &os.name),
        ("os.version", &os.version),
        ("os.kernel", &os.kernel),
        ("os.arch", &os.arch),
        ("cpu.model", &cpu.model),
        ("cpu.vendor", &cpu.vendor),
    ] {
        optional(|| name.to_owned(), value, max)?;
    }
    for (i, fs) in inv.filesystems.iter().enumerate() {
        string(|| format!("filesystems[{i}].mount"), &fs.mount, max)?;
        optional(|| format!("filesystems[{i}].device"), &fs.device, max)?;
        optional(|| format!("filesystems[{i}].fs_type"), &fs.fs_type, max)?;
    }
    for (i, nic) in inv.network_interfaces.iter().enumerate() {
        string(|| format!("network_interfaces[{i}].name"), &nic.name, max)?;
        optional(|| format!("network_interfaces[{i}].mac"), &nic.mac, max)?;
        list(
            || format!("network_interfaces[{i}].addresses"),
            nic.addresses.len(),
            limits.max_parts,
            "max_parts",
        )?;
        for (j, address) in nic.addresses.iter().enumerate() {
            string(
                || format!("network_interfaces[{i}].addresses[{j}]"),
                address,
                max,
            )?;
        }
    }
    for (i, sw) in inv.software.iter().enumerate() {
        string(|| format!("software[{i}].name"), &sw.name, max)?;
        optional(|| format!("software[{i}].version"), &sw.version, max)?;
        optional(|| format!("software[{i}].arch"), &sw.arch, max)?;
        optional(|| format!("software[{i}].vendor"), &sw.vendor, max)?;
        string(|| format!("software[{i}].source"), &sw.source, max)?;
    }
    for (i, warning) in inv.warnings.iter().enumerate() {
        string(|| format!("warnings[{i}]"), warning, max)?;
    }
    for (i, facet) in inv.incomplete.iter().enumerate() {
        string(|| format!("incomplete[{i}]"), facet, max)?;
    }
    Ok(())
}

fn check_health(
    sample: &HealthSample,
    limits: &Limits,
    arrival: OffsetDateTime,
) -> Result<(), LimitError> {
    let max = limits.max_string_bytes;
    list(
        || "filesystems".to_owned(),
        sample.filesystems.len(),
        limits.max_parts,
        "max_parts",
    )?;
    collected_at(sample.collected_at, limits, arrival)?;
    string(|| "agent_id".to_owned(), &sample.agent_id, max)?;
    for (name, value) in [
        ("cpu_percent", sample.cpu_percent),
        ("memory_used_percent", sample.memory_used_percent),
        ("swap_used_percent", sample.swap_used_percent),
    ] {
        number(|| name.to_owned(), value, MAX_PERCENT)?;
    }
    number(
        || "agent_cpu_percent".to_owned(),
        sample.agent_cpu_percent,
        MAX_AGENT_CPU_PERCENT,
    )?;
    for (name, value) in [
        ("net_rx_bytes_per_sec", sample.net_rx_bytes_per_sec),
        ("net_tx_bytes_per_sec", sample.net_tx_bytes_per_sec),
    ] {
        number(|| name.to_owned(), value, f64::MAX)?;
    }
    if let Some(load) = sample.load {
        for (i, value) in load.into_iter().enumerate() {
            number(|| format!("load[{i}]"), Some(value), f64::MAX)?;
        }
    }
    for (
        i,
        FilesystemUsage {
            mount,
            used_percent,
            inodes_used_percent,
        },
    ) in sample.filesystems.iter().enumerate()
    {
        string(|| format!("filesystems[{i}].mount"), mount, max)?;
        number(
            || format!("filesystems[{i}].used_percent"),
            *used_percent,
            MAX_PERCENT,
        )?;
        number(
            || format!("filesystems[{i}].inodes_used_percent"),
            *inodes_used_percent,
            MAX_PERCENT,
        )?;
    }
    Ok(())
}

/// The name closures run only on a refusal, so a passing batch costs no allocation per field.
fn list(
    name: impl FnOnce() -> String,
    len: usize,
    max: usize,
    key: &'static str,
) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::TooManyItems {
            list: name(),
            len: len as u64,
            max,
            key,
        });
    }
    Ok(())
}

fn string(name: impl FnOnce() -> String, value: &str, max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::FieldTooLong {
            field: name(),
            len: value.len() as u64,
            max,
        });
    }
    Ok(())
}

fn optional(
    name: impl FnOnce() -> String,
    value: &Option<String>,
    max: usize,
) -> Result<(), LimitError> {
    match value {
        Some(value) => string(name, value, max),
        None => Ok(()),
    }
}

/// A finite number from 0 to `max`.
fn number(name: impl FnOnce() -> String, value: Option<f64>, max: f64) -> Result<(), LimitError> {
    let Some(value) = value else { return Ok(()) };
    let rule = if !value.is_finite() {
        "not a finite number".to_owned()
    } else if !(0.0..=max).contains(&value) {
        if max == f64::MAX {
            "below 0".to_owned()
        } else {
            format!("outside 0 to {max}")
        }
    } else {
        return Ok(());
    };
    Err(LimitError::OutOfRange {
        field: name(),
        value: value.to_string(),
        rule,
    })
}

fn collected_at(
    at: OffsetDateTime,
    limits: &Limits,
    arrival: OffsetDateTime,
) -> Result<(), LimitError> {
    let refuse = |rule: String| LimitError::OutOfRange {
        field: "collected_at".to_owned(),
        value: at.format(&Rfc3339).unwrap_or_else(|_| at.to_string()),
        rule,
    };
    if at < EARLIEST_COLLECTED_AT {
        return Err(refuse(
            "before 2000-01-01: the machine's clock is not set".to_owned(),
        ));
    }
    if let Some(latest) = arrival.checked_add(limits.max_clock_skew)
        && at > latest
    {
        return Err(refuse(format!(
            "more than {} ahead of the collector's clock ({}): fix the machine's clock, or \
             raise max_clock_skew",
            span(limits.max_clock_skew),
            arrival
                .format(&Rfc3339)
                .unwrap_or_else(|_| arrival.to_string()),
        )));
    }
    Ok(())
}

/// `24h`, `90m`, `2d`: the way the collector's config writes durations.
fn span(d: time::Duration) -> String {
    let secs = d.whole_seconds();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs != 0 && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NetworkInterface, PROTOCOL_VERSION, Report, Software};

    const AGENT: &str = "6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f";
    const NOW: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

    fn batch(bodies: Vec<ReportBody>) -> Batch {
        Batch {
            protocol: PROTOCOL_VERSION,
            agent_id: AGENT.into(),
            reports: bodies
                .into_iter()
                .zip(1..)
                .map(|(body, seq)| Report { seq, body })
                .collect(),
        }
    }

    fn health() -> HealthSample {
        let mut h = HealthSample::empty(AGENT, NOW);
        h.cpu_percent = Some(100.0);
        h.memory_used_percent = Some(0.0);
        h.agent_cpu_percent = Some(350.0);
        h.load = Some([12.0, 8.0, 3.5]);
        h.filesystems = vec![FilesystemUsage {
            mount: "/".into(),
            used_percent: Some(100.4),
            inodes_used_percent: Some(3.0),
        }];
        h
    }

    fn inventory() -> Inventory {
        let mut inv = Inventory::new(AGENT, NOW);
        inv.host.hostname = Some("web-1".into());
        inv.network_interfaces = vec![NetworkInterface {
            name: "eth0".into(),
            mac: None,
            addresses: vec!["192.0.2.5/24".into()],
            r#virtual: false,
        }];
        inv.software = vec![Software {
            name: "bash".into(),
            version: Some("5.2".into()),
            arch: None,
            vendor: None,
            source: "dpkg".into(),
        }];
        inv
    }

    fn refused(batch: &Batch) -> LimitError {
        check_batch(batch, &Limits::default(), NOW).unwrap_err()
    }

    #[test]
    fn a_real_batch_passes() {
        let b = batch(vec![
            ReportBody::Inventory(inventory()),
            ReportBody::Health(health()),
        ]);
        check_batch(&b, &Limits::default(), NOW).unwrap();
    }

    #[test]
    fn long_strings_name_their_field_and_key() {
        let mut inv = inventory();
        inv.software[0].vendor = Some("x".repeat(4097));
        let err = refused(&batch(vec![ReportBody::Inventory(inv)]));
        assert_eq!(err.code(), crate::ErrorCode::FieldTooLong);
        assert_eq!(
            err.to_string(),
            "report 1: software[0].vendor is 4097 bytes long, longer than the collector accepts \
             (max_string_bytes = 4096)"
        );
        let mut inv = inventory();
        inv.network_interfaces[0].addresses[0] = "a".repeat(5000);
        let err = refused(&batch(vec![ReportBody::Inventory(inv)]));
        assert!(
            err.to_string()
                .contains("network_interfaces[0].addresses[0] is 5000 bytes"),
            "{err}"
        );
        let mut inv = inventory();
        inv.hardware.serial = Some("s".repeat(4096));
        check_batch(
            &batch(vec![ReportBody::Inventory(inv)]),
            &Limits::default(),
            NOW,
        )
        .unwrap();
    }

    #[test]
    fn lists_are_bounded_by_their_own_key() {
        let limits = Limits {
            max_software_entries: 2,
            max_parts: 1,
            max_reports_per_batch: 3,
            ..Limits::default()
        };
        let mut inv = inventory();
        inv.software = vec![inv.software[0].clone(); 3];
        let err = check_batch(&batch(vec![ReportBody::Inventory(inv)]), &limits, NOW).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::TooManyItems);
        assert_eq!(
            err.to_string(),
            "report 1: software has 3 entries, more than the collector accepts \
             (max_software_entries = 2)"
        );
        let mut h = health();
        h.filesystems.push(h.filesystems[0].clone());
        let err = check_batch(&batch(vec![ReportBody::Health(h)]), &limits, NOW).unwrap_err();
        assert!(err.to_string().contains("(max_parts = 1)"), "{err}");
        let err =
            check_batch(&batch(vec![ReportBody::Health(health()); 4]), &limits, NOW).unwrap_err();
        assert!(
            err.to_string().contains(
                "reports has 4 entries, more than the collector accepts (max_reports_per_batch = 3)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_seq_twice_is_refused() {
        let mut b = batch(vec![ReportBody::Health(health()); 3]);
        b.reports[2].seq = 1;
        assert_eq!(refused(&b), LimitError::DuplicateSeq { seq: 1 });
        assert_eq!(refused(&b).code(), crate::ErrorCode::DuplicateSeq);
    }

    #[test]
    fn numbers_must_be_finite_and_in_range() {
        type Edit = fn(&mut HealthSample);
        let cases: [(Edit, &str); 8] = [
            (
                |h| h.cpu_percent = Some(f64::NAN),
                "report 1: cpu_percent is NaN, not a finite number",
            ),
            (
                |h| h.cpu_percent = Some(250.0),
                "report 1: cpu_percent is 250, outside 0 to 100.5",
            ),
            (
                |h| h.memory_used_percent = Some(-1.0),
                "report 1: memory_used_percent is -1, outside 0 to 100.5",
            ),
            (
                |h| h.swap_used_percent = Some(f64::INFINITY),
                "report 1: swap_used_percent is inf, not a finite number",
            ),
            (
                |h| h.filesystems[0].inodes_used_percent = Some(101.0),
                "report 1: filesystems[0].inodes_used_percent is 101, outside 0 to 100.5",
            ),
            (
                |h| h.agent_cpu_percent = Some(500_000.0),
                "report 1: agent_cpu_percent is 500000, outside 0 to 409600",
            ),
            (
                |h| h.load = Some([1.0, f64::NEG_INFINITY, 1.0]),
                "report 1: load[1] is -inf, not a finite number",
            ),
            (
                |h| h.net_rx_bytes_per_sec = Some(-5.0),
                "report 1: net_rx_bytes_per_sec is -5, below 0",
            ),
        ];
        for (edit, message) in cases {
            let mut h = health();
            edit(&mut h);
            let err = refused(&batch(vec![ReportBody::Health(h)]));
            assert_eq!(err.code(), crate::ErrorCode::ValueOutOfRange);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn collected_at_must_be_after_2000_and_within_the_skew() {
        let limits = Limits::default();
        let mut h = health();
        h.collected_at = datetime!(1970-01-01 00:00 UTC);
        let err = refused(&batch(vec![ReportBody::Health(h)]));
        assert_eq!(
            err.to_string(),
            "report 1: collected_at is 1970-01-01T00:00:00Z, before 2000-01-01: the machine's \
             clock is not set"
        );
        let mut inv = inventory();
        inv.collected_at = NOW + time::Duration::hours(24) + time::Duration::seconds(1);
        let err = refused(&batch(vec![ReportBody::Inventory(inv.clone())]));
        assert_eq!(err.code(), crate::ErrorCode::ValueOutOfRange);
        assert!(
            err.to_string().contains(
                "more than 1d ahead of the collector's clock (2026-11-25T10:00:00Z): fix the \
                 machine's clock, or raise max_clock_skew"
            ),
            "{err}"
        );
        // Exactly at the skew, and far in the past, pass.
        inv.collected_at = NOW + time::Duration::hours(24);
        check_batch(
            &batch(vec![ReportBody::Inventory(inv.clone())]),
            &limits,
            NOW,
        )
        .unwrap();
        inv.collected_at = EARLIEST_COLLECTED_AT;
        check_batch(&batch(vec![ReportBody::Inventory(inv)]), &limits, NOW).unwrap();
        // A year-9999 time next to the largest skew does not overflow.
        let mut h = health();
        h.collected_at = datetime!(9999-12-31 23:59 UTC);
        let wide = Limits {
            max_clock_skew: time::Duration::days(365),
            ..limits
        };
        let err = check_batch(&batch(vec![ReportBody::Health(h)]), &wide, NOW).unwrap_err();
        assert!(err.to_string().contains("more than 365d ahead"), "{err}");
    }

    #[test]
    fn spans_print_as_the_config_writes_them() {
        assert_eq!(span(time::Duration::hours(24)), "1d");
        assert_eq!(span(time::Duration::minutes(90)), "90m");
        assert_eq!(span(time::Duration::seconds(61)), "61s");
    }
}
