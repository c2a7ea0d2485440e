//! A small deterministic generator (SplitMix64) for seeding and for choosing requests: the
//! same seed gives the same fleet and the same request sequence on every machine, and no
//! random-number crate is needed for it. Not for anything secret.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for item `index` of stream `seed`, independent of every other item's, so
    /// items can be generated in any order and on any thread.
    pub fn for_item(seed: u64, index: u64) -> Rng {
        let mut mix = Rng(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng(mix.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is far below anything a run can see.
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }

    /// One of `items`, each as likely as its weight.
    pub fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        let total = items.iter().map(|(_, w)| w).sum();
        let mut draw = self.below(total);
        for &(item, weight) in items {
            if draw < weight {
                return item;
            }
            draw -= weight;
        }
        unreachable!("the draw is below the total weight")
    }

    /// `bytes` random bytes as lowercase hex.
    pub fn hex(&mut self, bytes: usize) -> String {
        (0..bytes)
            .map(|_| format!("{:02x}", self.next_u64() as u8))
            .collect()
    }

    /// A version-4-shaped UUID.
    pub fn uuid(&mut self) -> String {
        let h = self.hex(16);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }

    /// `k` of `items` without repeats (all of them, shuffled, when `k >= items.len()`).
    pub fn sample<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut items = items.to_vec();
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + (self.next_u64() % (items.len() - i) as u64) as usize;
            items.swap(i, j);
        }
        items.truncate(k);
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_items_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_item(1, 0).next_u64(),
            Rng::for_item(1, 1).next_u64()
        );
        assert_eq!(
            Rng::for_item(1, 5).next_u64(),
            Rng::for_item(1, 5).next_u64()
        );
    }

    #[test]
    fn uuids_have_the_version_4_shape_and_samples_do_not_repeat() {
        let uuid = Rng::new(3).uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        let mut sample = Rng::new(3).sample(&(0..100).collect::<Vec<_>>(), 40);
        sample.sort_unstable();
        sample.dedup();
        assert_eq!(sample.len(), 40);
    }
}
