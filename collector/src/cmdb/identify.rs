//! Identification: which existing computer CI an inventory describes.
//!
//! Every inventory yields **identity keys**, normalised so that one machine always gives the same
//! text whatever tool or firmware wrote it ([`IdentityKeys::of`]):
//!
//! | rule (`identified_by`) | key | normalised as |
//! | --- | --- | --- |
//! | `serial_uuid` | system serial + hardware UUID | serial trimmed, inner whitespace collapsed, upper case; UUID below |
//! | `hardware_uuid` | hardware (SMBIOS) UUID | 32 hex digits, lower case, hyphenated; of the UUID and its byte-swapped form (SMBIOS 2.6 stores the first three fields little-endian, older firmware and tools big-endian) the smaller |
//! | `machine_id` | `/etc/machine-id` | lower case, trimmed |
//! | `agent_id` | the agent's id | lower case |
//! | `mac_hostname` | MAC of each physical interface + hostname | `aa:bb:cc:dd:ee:ff` + hostname below |
//! | `hostname` | hostname | lower case, trailing dot removed |
//!
//! **Placeholder values never identify anything** ([`Placeholders`]): firmware defaults such as
//! the serial "To Be Filled By O.E.M." or the UUID `03000200-0400-0500-0006-000700080009`,
//! all-zero and all-F UUIDs, all-zero, broadcast, multicast, locally administered (randomised,
//! container, VPN) and virtual interfaces' MACs, and `localhost`. The built-in lists are
//! [`BUILTIN_SERIALS`] and friends; config extends them.
//!
//! **The rules run in the order of [`RULES`]**, strongest first. A rule finds the computer CIs
//! that stored the same key. A candidate is then dropped when it **conflicts** with the
//! inventory, i.e. when both know a value of a stronger identity and the values differ:
//!
//! - a different hardware UUID or serial drops the candidate for every rule (a cloned VM keeps
//!   the machine-id but gets a new UUID: it is a new machine);
//! - a different machine-id drops it for the `agent_id` and `hostname` rules (a copied agent
//!   state directory, or two machines that share a name), but not for the hardware rules or
//!   `mac_hostname`, which exist to recognise a reinstalled machine, whose machine-id and agent
//!   id are new;
//! - a different agent id drops an **active** candidate for the `hostname` rule: two agents
//!   that report one name are two machines while both report. Once the old computer went
//!   `stale` or was retired, a newcomer with its name (and no conflicting machine-id) takes
//!   its CI.
//!
//! A rule that leaves exactly one candidate matches; one that leaves several is ambiguous and
//! matches nothing (merging two machines is worse than a duplicate an admin can retire). When no
//! rule matches, the caller creates a new computer CI and records `identified_by = "new"`.

use std::collections::BTreeSet;

use census_common::Inventory;

/// `identified_by` of a CI that its inventory created because no rule matched.
pub const IDENTIFIED_NEW: &str = "new";

/// One identification rule; its name is the `ci_key.kind` of its keys and the
/// `identified_by` of the CIs it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentifyRule {
    SerialUuid,
    HardwareUuid,
    MachineId,
    AgentId,
    MacHostname,
    Hostname,
}

/// The rules, in the order they run.
pub const RULES: &[IdentifyRule] = &[
    IdentifyRule::SerialUuid,
    IdentifyRule::HardwareUuid,
    IdentifyRule::MachineId,
    IdentifyRule::AgentId,
    IdentifyRule::MacHostname,
    IdentifyRule::Hostname,
];

/// `ci_key.kind` of the serial alone: stored only to detect conflicts, never a rule.
pub const KIND_SERIAL: &str = "serial";

impl IdentifyRule {
    pub fn name(self) -> &'static str {
        match self {
            IdentifyRule::SerialUuid => "serial_uuid",
            IdentifyRule::HardwareUuid => "hardware_uuid",
            IdentifyRule::MachineId => "machine_id",
            IdentifyRule::AgentId => "agent_id",
            IdentifyRule::MacHostname => "mac_hostname",
            IdentifyRule::Hostname => "hostname",
        }
    }
}

/// Serials firmware ships when nobody filled in the real one. Compared after normalisation
/// (upper case, whitespace collapsed). Serials made only of zeros, or empty, are placeholders
/// too.
pub const BUILTIN_SERIALS: &[&str] = &[
    "TO BE FILLED BY O.E.M.",
    "TO BE FILLED BY OEM",
    "DEFAULT STRING",
    "SYSTEM SERIAL NUMBER",
    "CHASSIS SERIAL NUMBER",
    "BASE BOARD SERIAL NUMBER",
    "NONE",
    "N/A",
    "NA",
    "NOT SPECIFIED",
    "NOT APPLICABLE",
    "NOT AVAILABLE",
    "UNKNOWN",
    "INVALID",
    "SERIAL",
    "0123456789",
    "123456789",
    "1234567890",
    "01234567890",
    "XXXXXXXXXX",
    "OEM",
    "O.E.M.",
];

/// Hardware UUIDs firmware ships as defaults (the well-known AMI/ASRock one). All-zero and
/// all-F UUIDs are placeholders too.
pub const BUILTIN_UUIDS: &[&str] = &["03000200-0400-0500-0006-000700080009"];

/// MACs that are not one interface's: all zeros and broadcast are always refused, as are
/// multicast and locally administered addresses; this list adds specific ones.
pub const BUILTIN_MACS: &[&str] = &["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"];

/// Hostnames every fresh install has.
pub const BUILTIN_HOSTNAMES: &[&str] = &["localhost", "localhost.localdomain", "localhost6"];

/// The placeholder values, normalised: the built-in lists plus what config adds
/// (`placeholder_serials`, `placeholder_uuids`, `placeholder_macs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    serials: BTreeSet<String>,
    uuids: BTreeSet<String>,
    macs: BTreeSet<String>,
    hostnames: BTreeSet<String>,
}

impl Default for Placeholders {
    fn default() -> Self {
        Placeholders::with_extra(&[], &[], &[])
    }
}

impl Placeholders {
    /// The built-in lists extended with `serials`, `uuids` and `macs` (any spelling: they are
    /// normalised like inventory values; a UUID or MAC that does not parse is ignored, and
    /// config validation reports it).
    pub fn with_extra(serials: &[String], uuids: &[String], macs: &[String]) -> Placeholders {
        let serials = BUILTIN_SERIALS
            .iter()
            .copied()
            .chain(serials.iter().map(String::as_str))
            .filter_map(normalize_serial)
            .collect();
        let uuids = BUILTIN_UUIDS
            .iter()
            .copied()
            .chain(uuids.iter().map(String::as_str))
            .filter_map(normalize_uuid)
            .collect();
        let macs = BUILTIN_MACS
            .iter()
            .copied()
            .chain(macs.iter().map(String::as_str))
            .filter_map(normalize_mac)
            .collect();
        let hostnames = BUILTIN_HOSTNAMES
            .iter()
            .filter_map(|h| normalize_hostname(h))
            .collect();
        Placeholders {
            serials,
            uuids,
            macs,
            hostnames,
        }
    }

    /// The serial, normalised, unless it is a placeholder.
    pub fn serial(&self, raw: &str) -> Option<String> {
        let serial = normalize_serial(raw)?;
        let zeros = serial.chars().all(|c| c == '0' || c == ' ' || c == '-');
        (!zeros && !self.serials.contains(&serial)).then_some(serial)
    }

    /// The hardware UUID, normalised, unless it is a placeholder.
    pub fn uuid(&self, raw: &str) -> Option<String> {
        let uuid = normalize_uuid(raw)?;
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        let repeated = hex.chars().all(|c| c == '0') || hex.chars().all(|c| c == 'f');
        (!repeated && !self.uuids.contains(&uuid)).then_some(uuid)
    }

    /// The MAC, normalised, unless it cannot name one physical interface.
    pub fn mac(&self, raw: &str) -> Option<String> {
        let mac = normalize_mac(raw)?;
        let first = u8::from_str_radix(&mac[..2], 16).ok()?;
        // Bit 0: multicast (and broadcast); bit 1: locally administered (random, virtual).
        let not_unique = first & 0b11 != 0;
        (!not_unique && !self.macs.contains(&mac)).then_some(mac)
    }

    /// The hostname, normalised, unless every fresh install has it.
    pub fn hostname(&self, raw: &str) -> Option<String> {
        let host = normalize_hostname(raw)?;
        (!self.hostnames.contains(&host)).then_some(host)
    }
}

fn normalize_serial(raw: &str) -> Option<String> {
    let joined = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then(|| joined.to_uppercase())
}

/// 32 hex digits in any grouping, braces or `urn:uuid:` prefix; the smaller of the UUID and
/// its byte-swapped form, so both SMBIOS byte orders of one UUID meet.
pub fn normalize_uuid(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("urn:uuid:").unwrap_or(raw);
    let hex: Vec<u8> = raw
        .chars()
        .filter(|c| !matches!(c, '-' | '{' | '}' | ' '))
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    if hex.len() != 32 {
        return None;
    }
    let bytes: Vec<u8> = hex.chunks(2).map(|p| p[0] << 4 | p[1]).collect();
    let mut swapped = bytes.clone();
    swapped[0..4].reverse();
    swapped[4..6].reverse();
    swapped[6..8].reverse();
    let canonical = bytes.min(swapped);
    let hex: String = canonical.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Six bytes separated by `:`, `-` or `.` (any case), or 12 hex digits: `aa:bb:cc:dd:ee:ff`.
fn normalize_mac(raw: &str) -> Option<String> {
    let hex: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        (0..6)
            .map(|i| &hex[i * 2..i * 2 + 2])
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn normalize_hostname(raw: &str) -> Option<String> {
    let host = raw.trim().trim_end_matches('.').to_lowercase();
    (!host.is_empty()).then_some(host)
}

fn normalize_text(raw: &str) -> Option<String> {
    let text = raw.trim().to_lowercase();
    (!text.is_empty()).then_some(text)
}

/// The identity keys of one inventory, normalised, placeholders left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityKeys {
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub machine_id: Option<String>,
    pub agent_id: Option<String>,
    /// MACs of physical interfaces.
    pub macs: Vec<String>,
    pub hostname: Option<String>,
}

impl IdentityKeys {
    pub fn of(inv: &Inventory, placeholders: &Placeholders) -> IdentityKeys {
        let mut macs: Vec<String> = inv
            .network_interfaces
            .iter()
            .filter(|nic| !nic.r#virtual)
            .filter_map(|nic| nic.mac.as_deref())
            .filter_map(|mac| placeholders.mac(mac))
            .collect();
        macs.sort_unstable();
        macs.dedup();
        IdentityKeys {
            serial: inv
                .hardware
                .serial
                .as_deref()
                .and_then(|s| placeholders.serial(s)),
            uuid: inv
                .hardware
                .uuid
                .as_deref()
                .and_then(|u| placeholders.uuid(u)),
            machine_id: inv.host.machine_id.as_deref().and_then(normalize_text),
            agent_id: normalize_text(&inv.agent_id),
            macs,
            hostname: inv
                .host
                .hostname
                .as_deref()
                .and_then(|h| placeholders.hostname(h)),
        }
    }

    /// The keys one rule looks up (several for `mac_hostname`, one per MAC).
    pub fn for_rule(&self, rule: IdentifyRule) -> Vec<String> {
        match rule {
            IdentifyRule::SerialUuid => match (&self.serial, &self.uuid) {
                (Some(serial), Some(uuid)) => vec![format!("{serial}|{uuid}")],
                _ => Vec::new(),
            },
            IdentifyRule::HardwareUuid => self.uuid.iter().cloned().collect(),
            IdentifyRule::MachineId => self.machine_id.iter().cloned().collect(),
            IdentifyRule::AgentId => self.agent_id.iter().cloned().collect(),
            IdentifyRule::MacHostname => match &self.hostname {
                Some(host) => self
                    .macs
                    .iter()
                    .map(|mac| format!("{mac}|{host}"))
                    .collect(),
                None => Vec::new(),
            },
            IdentifyRule::Hostname => self.hostname.iter().cloned().collect(),
        }
    }

    /// Every `(kind, value)` row to store for the CI, the serial alone included.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows: Vec<(&'static str, String)> = RULES
            .iter()
            .flat_map(|rule| {
                self.for_rule(*rule)
                    .into_iter()
                    .map(move |key| (rule.name(), key))
            })
            .collect();
        if let Some(serial) = &self.serial {
            rows.push((KIND_SERIAL, serial.clone()));
        }
        rows
    }

    /// The keys as stored rows read back: the inverse of [`IdentityKeys::rows`], for the
    /// conflict check.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> IdentityKeys {
        let mut keys = IdentityKeys::default();
        for (kind, value) in rows {
            let value = value.to_owned();
            match kind {
                k if k == KIND_SERIAL => keys.serial = Some(value),
                k if k == IdentifyRule::HardwareUuid.name() => keys.uuid = Some(value),
                k if k == IdentifyRule::MachineId.name() => keys.machine_id = Some(value),
                k if k == IdentifyRule::AgentId.name() => keys.agent_id = Some(value),
                k if k == IdentifyRule::Hostname.name() => keys.hostname = Some(value),
                k if k == IdentifyRule::MacHostname.name() => {
                    if let Some((mac, _)) = value.split_once('|') {
                        keys.macs.push(mac.to_owned());
                    }
                }
                _ => {}
            }
        }
        keys
    }

    /// Fills the keys this inventory does not know with the `stored` ones: a serial the agent
    /// could not read this time is unknown, not changed. MACs are kept only when the inventory
    /// has none.
    pub fn keep_unknown_from(&mut self, stored: &IdentityKeys) {
        let keep = |new: &mut Option<String>, old: &Option<String>| {
            if new.is_none() {
                new.clone_from(old);
            }
        };
        keep(&mut self.serial, &stored.serial);
        keep(&mut self.uuid, &stored.uuid);
        keep(&mut self.machine_id, &stored.machine_id);
        keep(&mut self.agent_id, &stored.agent_id);
        keep(&mut self.hostname, &stored.hostname);
        if self.macs.is_empty() {
            self.macs.clone_from(&stored.macs);
        }
    }

    /// Whether a CI with the `stored` keys (and `active` status) cannot be the machine of these
    /// keys when matched by `rule` (see the module doc).
    pub fn conflicts(&self, stored: &IdentityKeys, active: bool, rule: IdentifyRule) -> bool {
        let differ =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
        if differ(&self.uuid, &stored.uuid) || differ(&self.serial, &stored.serial) {
            return true;
        }
        match rule {
            IdentifyRule::AgentId => differ(&self.machine_id, &stored.machine_id),
            // A name is weak: it never takes an active computer from another agent.
            IdentifyRule::Hostname => {
                differ(&self.machine_id, &stored.machine_id)
                    || (active && differ(&self.agent_id, &stored.agent_id))
            }
            _ => false,
        }
    }
}

/// Lookups the rules need from the store.
pub trait Candidates {
    type Error;
    /// The computer CIs that stored `value` under `kind`.
    fn with_key(&mut self, kind: &str, value: &str) -> Result<Vec<i64>, Self::Error>;
    /// Every identity key stored for a CI, and whether the CI is active.
    fn keys_of(&mut self, ci_id: i64) -> Result<(IdentityKeys, bool), Self::Error>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identified {
    pub ci_id: i64,
    pub rule: IdentifyRule,
}

/// Runs the rules in order against the store's candidates.
pub fn identify<C: Candidates>(
    candidates: &mut C,
    keys: &IdentityKeys,
) -> Result<Option<Identified>, C::Error> {
    for &rule in RULES {
        let mut found = BTreeSet::new();
        for key in keys.for_rule(rule) {
            found.extend(candidates.with_key(rule.name(), &key)?);
        }
        let mut kept = Vec::new();
        for ci_id in found {
            let (stored, active) = candidates.keys_of(ci_id)?;
            if !keys.conflicts(&stored, active, rule) {
                kept.push(ci_id);
            }
        }
        match kept.as_slice() {
            [] => {}
            [ci_id] => {
                return Ok(Some(Identified {
                    ci_id: *ci_id,
                    rule,
                }));
            }
            several => {
                tracing::warn!(
                    rule = rule.name(),
                    cis = ?several,
                    "identification: several computers match; trying the next rule rather than merging them"
                );
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::NetworkInterface;
    use std::collections::HashMap;
    use time::OffsetDateTime;

    /// The store's side: CIs and their keys, as ingest would have stored them.
    #[derive(Default)]
    struct Known(HashMap<i64, (IdentityKeys, bool)>);

    impl Known {
        fn add(&mut self, id: i64, inv: &Inventory) {
            let keys = IdentityKeys::of(inv, &Placeholders::default());
            self.0.insert(id, (keys, true));
        }
        fn go_stale(&mut self, id: i64) {
            self.0.get_mut(&id).unwrap().1 = false;
        }
        fn identify(&mut self, inv: &Inventory) -> Option<(i64, &'static str)> {
            let keys = IdentityKeys::of(inv, &Placeholders::default());
            identify(self, &keys)
                .unwrap()
                .map(|found| (found.ci_id, found.rule.name()))
        }
    }

    impl Candidates for Known {
        type Error = std::convert::Infallible;
        fn with_key(&mut self, kind: &str, value: &str) -> Result<Vec<i64>, Self::Error> {
            let mut ids: Vec<i64> = self
                .0
                .iter()
                .filter(|(_, (keys, _))| {
                    keys.rows()
                        .iter()
                        .any(|(k, v)| *k == kind && v.as_str() == value)
                })
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            Ok(ids)
        }
        fn keys_of(&mut self, ci_id: i64) -> Result<(IdentityKeys, bool), Self::Error> {
            Ok(self.0[&ci_id].clone())
        }
    }

    fn machine(agent: &str, host: &str, machine_id: &str, serial: &str, uuid: &str) -> Inventory {
        let mut inv = Inventory::new(agent, OffsetDateTime::UNIX_EPOCH);
        inv.host.hostname = Some(host.into());
        inv.host.machine_id = Some(machine_id.into());
        inv.hardware.serial = Some(serial.into());
        inv.hardware.uuid = Some(uuid.into());
        inv.network_interfaces = vec![NetworkInterface {
            name: "eth0".into(),
            mac: Some(format!("52:54:00:00:00:{:02x}", host.len())),
            addresses: vec![],
            r#virtual: false,
        }];
        inv
    }

    const UUID_A: &str = "4c4c4544-0031-3510-8052-b4c04f4e4d32";
    const UUID_B: &str = "9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b";

    #[test]
    fn uuid_forms_meet() {
        let canonical = normalize_uuid(UUID_A).unwrap();
        for form in [
            "4C4C4544-0031-3510-8052-B4C04F4E4D32",
            "{4c4c4544-0031-3510-8052-b4c04f4e4d32}",
            "urn:uuid:4c4c4544003135108052b4c04f4e4d32",
            // The byte-swapped SMBIOS form: first three fields little-endian.
            "44454c4c-3100-1035-8052-b4c04f4e4d32",
        ] {
            assert_eq!(normalize_uuid(form).unwrap(), canonical, "{form}");
        }
        assert_ne!(normalize_uuid(UUID_B), Some(canonical));
        assert_eq!(normalize_uuid("not-a-uuid"), None);
    }

    #[test]
    fn placeholders_identify_nothing() {
        let p = Placeholders::default();
        for serial in [
            "To Be Filled By O.E.M.",
            "  default   STRING ",
            "System Serial Number",
            "None",
            "0",
            "000000",
            "123456789",
            "",
        ] {
            assert_eq!(p.serial(serial), None, "{serial:?}");
        }
        assert_eq!(p.serial(" abc  123 ").as_deref(), Some("ABC 123"));
        for uuid in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "03000200-0400-0500-0006-000700080009",
            // The same placeholder byte-swapped.
            "00020003-0004-0005-0006-000700080009",
        ] {
            assert_eq!(p.uuid(uuid), None, "{uuid}");
        }
        for mac in [
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "02:42:ac:11:00:02", // docker: locally administered
            "01:00:5e:00:00:01", // multicast
        ] {
            assert_eq!(p.mac(mac), None, "{mac}");
        }
        assert_eq!(p.mac("52-54-00-AB-CD-EF").as_deref(), None); // 0x52: locally administered
        assert_eq!(
            p.mac("00-1A-2B-3C-4D-5E").as_deref(),
            Some("00:1a:2b:3c:4d:5e")
        );
        assert_eq!(p.hostname("LocalHost."), None);

        let extended = Placeholders::with_extra(
            &["CZC1234XYZ-DEMO".into()],
            &["9F1C2D3E-4B5A-6978-8A9B-0C1D2E3F4A5B".into()],
            &["00:1a:2b:3c:4d:5e".into()],
        );
        assert_eq!(extended.serial("czc1234xyz-demo"), None);
        assert_eq!(extended.uuid(UUID_B), None);
        assert_eq!(extended.mac("00:1A:2B:3C:4D:5E"), None);
    }

    #[test]
    fn reinstalled_machine_is_found_by_its_hardware() {
        let mut known = Known::default();
        known.add(1, &machine("agent-1", "web-1", "m1", "CZ123", UUID_A));
        // New agent id and machine-id; same serial and UUID (in the other byte order).
        let reinstalled = machine(
            "agent-2",
            "web-1",
            "m2",
            "cz123",
            "44454c4c-3100-1035-8052-b4c04f4e4d32",
        );
        assert_eq!(known.identify(&reinstalled), Some((1, "serial_uuid")));
    }

    #[test]
    fn renamed_machine_keeps_its_ci() {
        let mut known = Known::default();
        known.add(1, &machine("agent-1", "web-1", "m1", "CZ123", UUID_A));
        let renamed = machine("agent-1", "web-renamed", "m1", "CZ123", UUID_A);
        assert_eq!(known.identify(&renamed), Some((1, "serial_uuid")));
        // Without hardware identity, the agent id carries it.
        let mut known = Known::default();
        known.add(1, &machine("agent-1", "web-1", "m1", "", ""));
        let renamed = machine("agent-1", "web-renamed", "m1", "", "");
        assert_eq!(known.identify(&renamed), Some((1, "machine_id")));
    }

    #[test]
    fn machines_sharing_placeholders_stay_apart() {
        let mut known = Known::default();
        let zero = "00000000-0000-0000-0000-000000000000";
        known.add(1, &machine("agent-1", "pc", "m1", "Default string", zero));
        // Same placeholder serial and UUID, same hostname: a different machine-id says it is
        // another machine.
        let other = machine("agent-2", "pc", "m2", "Default string", zero);
        assert_eq!(known.identify(&other), None);
    }

    #[test]
    fn cloned_vm_is_its_own_ci() {
        let mut known = Known::default();
        known.add(1, &machine("agent-1", "tmpl", "m1", "VMware-1", UUID_A));
        let clone = machine("agent-2", "tmpl", "m1", "VMware-2", UUID_B);
        assert_eq!(known.identify(&clone), None);
        // Once it has its own CI, the clone is found again by its hardware.
        known.add(2, &clone);
        assert_eq!(known.identify(&clone), Some((2, "serial_uuid")));
        let original = machine("agent-1", "tmpl", "m1", "VMware-1", UUID_A);
        assert_eq!(known.identify(&original), Some((1, "serial_uuid")));
    }

    #[test]
    fn weaker_rules_apply_when_stronger_keys_are_unknown() {
        let mut known = Known::default();
        let mut old = machine("agent-1", "db-1", "m1", "", "");
        old.network_interfaces[0].mac = Some("00:1a:2b:3c:4d:5e".into());
        known.add(1, &old);
        // Reinstalled without readable DMI: new agent id and machine-id; the physical NIC and
        // the hostname recognise it.
        let mut reinstalled = machine("agent-2", "db-1", "m2", "", "");
        reinstalled.network_interfaces[0].mac = Some("00:1A:2B:3C:4D:5E".into());
        assert_eq!(known.identify(&reinstalled), Some((1, "mac_hostname")));
        // The hostname alone does not override a different machine-id...
        let stranger = machine("agent-3", "db-1", "m3", "", "");
        assert_eq!(known.identify(&stranger), None);
        // ...nor takes an active computer from its agent...
        let mut import = Inventory::new("import-1", OffsetDateTime::UNIX_EPOCH);
        import.host.hostname = Some("DB-1.".into());
        assert_eq!(known.identify(&import), None);
        // ...but once that computer went stale, a document that knows only the name finds it.
        known.go_stale(1);
        assert_eq!(known.identify(&import), Some((1, "hostname")));
        assert_eq!(known.identify(&stranger), None);
    }

    #[test]
    fn ambiguous_rule_matches_nothing() {
        let mut known = Known::default();
        let mut a = Inventory::new("a", OffsetDateTime::UNIX_EPOCH);
        a.host.hostname = Some("kiosk".into());
        let mut b = Inventory::new("b", OffsetDateTime::UNIX_EPOCH);
        b.host.hostname = Some("kiosk".into());
        known.add(1, &a);
        known.add(2, &b);
        known.go_stale(1);
        known.go_stale(2);
        let mut import = Inventory::new("c", OffsetDateTime::UNIX_EPOCH);
        import.host.hostname = Some("kiosk".into());
        assert_eq!(known.identify(&import), None);
    }

    #[test]
    fn stored_rows_read_back_as_the_same_keys() {
        let inv = machine("agent-1", "web-1", "m1", "CZ123", UUID_A);
        let keys = IdentityKeys::of(&inv, &Placeholders::default());
        let rows = keys.rows();
        let back = IdentityKeys::from_rows(rows.iter().map(|(k, v)| (*k, v.as_str())));
        assert_eq!(back, keys);
    }
}
