//! Who each virtual agent is, derived from `(seed, index)` alone: the same seed gives the same
//! fleet on every run (so a second run finds its agents known to the collector), another seed a
//! fleet that shares nothing with it (agent ids, serials, MAC addresses, hardware UUIDs), so the
//! collector identifies its machines as new ones.
//!
//! Nothing per agent is kept in memory for this: every value is recomputed from the seed when
//! needed, which costs a few hashes.

/// Streams of randomness per agent, so that adding a draw to one facet never shifts another.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    AgentId = 1,
    Profile = 2,
    Packages = 3,
    Health = 4,
    HardwareUuid = 5,
    MachineId = 6,
    /// Churn step `k` uses `Churn + k`; keep it last.
    Churn = 16,
}

/// SplitMix64: small, fast, and good enough to spread a fleet's values; not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator of `stream` for agent `index` of the fleet of `seed`; `extra` tells apart
    /// draws of the same stream (a churn step, a health sample's seq).
    pub fn new(seed: u64, index: u32, stream: u64, extra: u64) -> Rng {
        let key = mix(seed.wrapping_add(GOLDEN))
            ^ mix(u64::from(index).wrapping_add(GOLDEN.wrapping_mul(2)))
            ^ mix(stream.wrapping_mul(GOLDEN) ^ extra.rotate_left(17));
        Rng(mix(key))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; `n` > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[low, high)`.
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The agent id of agent `index`: a UUID v4 made from the seeded generator.
pub fn agent_id(seed: u64, index: u32) -> String {
    uuid_from(Rng::new(seed, index, Stream::AgentId as u64, 0))
}

pub(crate) fn uuid_from(mut rng: Rng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// `sim-000042`.
pub fn hostname(index: u32) -> String {
    format!("sim-{index:06}")
}

/// 24 bits that tell this seed's fleet from another's, in serials and MAC addresses.
fn fleet_tag(seed: u64) -> u64 {
    mix(seed ^ 0x5EED_F1EE) & 0xFF_FFFF
}

/// A serial no other agent of any seed shares (short of a 24-bit tag collision).
pub fn serial(seed: u64, index: u32) -> String {
    format!("SIM{:06X}{index:07}", fleet_tag(seed))
}

/// The MAC address of interface `nic` (0 to 3): globally administered and unicast, so the
/// collector may identify a machine by it. The first three bytes are the fleet's tag, the last
/// three `index * 4 + nic`, unique within a fleet of up to 4,194,304 agents.
pub fn mac(seed: u64, index: u32, nic: u32) -> String {
    let tag = fleet_tag(seed);
    let low = (u64::from(index) * 4 + u64::from(nic)) & 0xFF_FFFF;
    let bytes = [
        (tag >> 16) as u8 & 0xFC,
        (tag >> 8) as u8,
        tag as u8,
        (low >> 16) as u8,
        (low >> 8) as u8,
        low as u8,
    ];
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The slowly changing facts of a machine that both its inventory and its health samples need.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Mount points, `/` first; 2 to 4 of them.
    pub mounts: Vec<&'static str>,
    /// 1 to 3.
    pub interfaces: u32,
    pub logical_cores: u32,
    pub memory_bytes: u64,
    /// Seconds since the epoch at which the machine booted.
    pub boot_time: i64,
    /// Whether this machine reports a breaching value (`/` more than 95 % used, memory more
    /// than 97 %) in every health sample.
    pub breaching: bool,
    /// Typical load of this machine, 0 to 1: where its values sit in their ranges.
    pub busy: f64,
}

const EXTRA_MOUNTS: [&str; 5] = ["/boot", "/var", "/home", "/srv", "/boot/efi"];
const CORES: [u32; 5] = [2, 4, 8, 16, 32];
const MEMORY_GIB: [u64; 5] = [4, 8, 16, 32, 64];

/// Boot times fall within the 60 days before this instant (2026-01-01T00:00:00Z), so that a
/// profile does not depend on when the run started.
const BOOT_EPOCH: i64 = 1_767_225_600;

impl Profile {
    /// Agent `index`'s profile; `breaching` is the fraction of the fleet that breaches.
    pub fn new(seed: u64, index: u32, breaching: f64) -> Profile {
        let mut rng = Rng::new(seed, index, Stream::Profile as u64, 0);
        let extra = 1 + rng.below(3) as usize;
        let mut mounts = vec!["/"];
        let start = rng.below(EXTRA_MOUNTS.len() as u64) as usize;
        mounts.extend((0..extra).map(|k| EXTRA_MOUNTS[(start + k) % EXTRA_MOUNTS.len()]));
        Profile {
            mounts,
            interfaces: 1 + rng.below(3) as u32,
            logical_cores: *rng.pick(&CORES),
            memory_bytes: rng.pick(&MEMORY_GIB) << 30,
            boot_time: BOOT_EPOCH - rng.below(60 * 86_400) as i64,
            breaching: rng.unit() < breaching,
            busy: rng.unit(),
        }
    }
}

/// A value in `[0, 1)` that places agent `index` in a spread-out order (golden-ratio
/// sequence): used to stagger periodic events so that agents started together do not act
/// together.
pub fn stagger(index: u32) -> f64 {
    (f64::from(index) * 0.618_033_988_749_894_9).fract()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// Whether `id` is a lowercase hyphenated UUID v4, as the collector wants agent ids.
    fn is_v4(id: &str) -> bool {
        Uuid::parse_str(id)
            .is_ok_and(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == id)
    }

    #[test]
    fn identities_are_stable_per_seed_and_distinct_across_agents_and_seeds() {
        assert_eq!(agent_id(7, 3), agent_id(7, 3));
        assert!(is_v4(&agent_id(7, 3)));
        let ids: std::collections::HashSet<String> = (0..10_000).map(|i| agent_id(7, i)).collect();
        assert_eq!(ids.len(), 10_000);
        assert_ne!(agent_id(7, 3), agent_id(8, 3));
        assert_ne!(serial(7, 3), serial(8, 3));
        assert_ne!(mac(7, 3, 0), mac(8, 3, 0));
        assert_ne!(mac(7, 3, 0), mac(7, 3, 1));
        assert_eq!(hostname(42), "sim-000042");
    }

    #[test]
    fn macs_are_globally_administered_unicast() {
        for seed in 0..200 {
            let first = u8::from_str_radix(&mac(seed, 1, 0)[..2], 16).unwrap();
            assert_eq!(first & 0x03, 0, "{}", mac(seed, 1, 0));
        }
    }

    #[test]
    fn the_breaching_fraction_is_about_what_was_asked() {
        let n = (0..10_000)
            .filter(|&i| Profile::new(1, i, 0.05).breaching)
            .count();
        assert!((400..600).contains(&n), "{n}");
        assert!((0..1000).all(|i| !Profile::new(1, i, 0.0).breaching));
        let p = Profile::new(1, 5, 0.0);
        assert!((2..=4).contains(&p.mounts.len()) && p.mounts[0] == "/");
        assert!((1..=3).contains(&p.interfaces));
    }
}
