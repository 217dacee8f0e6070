//! A fixed, seedless hasher for the engine's maps.
//!
//! `std`'s default hasher is randomly seeded per process. The engine never lets map iteration order
//! decide an outcome, but a fixed hasher also makes memory layout and timing repeatable between a run
//! and its replay, which keeps benchmarks and the simulator honest. The mixing is a multiply-rotate in
//! the style of FxHash: fast on the small integer keys the engine uses, not resistant to chosen keys
//! (keys are dense ids and sequence numbers chosen by us, not by clients).

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Clone, Copy, Debug, Default)]
pub struct FixedHasher {
    hash: u64,
}

impl FixedHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FixedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // A final avalanche so that the low bits hashbrown uses for buckets depend on every input bit.
        let mut x = self.hash;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
}

pub type FixedState = BuildHasherDefault<FixedHasher>;

/// The hasher of the live-order index, keyed by `OrderId`.
///
/// Order ids are sequence numbers, and the orders the engine touches are mostly recent ones. The
/// hash keeps the id's low bits as they are, so consecutive ids land in consecutive buckets and the
/// index's hot part stays a few cache lines wide instead of one cold line per order in a table
/// sized for `orders_max`. The top seven bits, which hashbrown compares as a tag within a group,
/// come from a multiplicative mix so that neighbouring ids still get different tags. This is a
/// performance choice only: any hash is correct here.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderIdHasher {
    hash: u64,
}

const TAG_BITS: u32 = 7;

impl Hasher for OrderIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut fallback = FixedHasher::default();
        fallback.write(bytes);
        self.hash = fallback.finish();
    }

    #[inline]
    fn write_u64(&mut self, id: u64) {
        let tag = id.wrapping_mul(SEED) & !(u64::MAX >> TAG_BITS);
        self.hash = tag | (id & (u64::MAX >> TAG_BITS));
    }
}

pub type OrderIdState = BuildHasherDefault<OrderIdHasher>;

/// FNV-1a over bytes: the state digest. Chosen for being specified in a line and stable forever,
/// not for speed (it runs once per replay, never on the hot path).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
