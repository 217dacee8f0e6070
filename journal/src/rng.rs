//! A seeded pseudo-random generator for fault injection and simulations: every run of a seed
//! makes the same choices.

/// SplitMix64 (Steele, Lea and Flood, 2014): a few lines, fast, and good enough to choose crash
/// outcomes; it keeps this crate free of a `rand` dependency. Shared with the simulator, the
/// benchmarks and the journal's tests, which all need repeatable seeded choices.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`. The modulo bias is irrelevant for choosing crash outcomes and test actions.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no possible value");
        self.next_u64() % n
    }
}
