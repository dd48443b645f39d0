//! A counting hash set of pre-hashed `u64` keys, reused across documents.
//!
//! Hand-written for speed: the repetition filter makes up to nine passes over every unit of a
//! document, and `std::collections::HashMap` (re-hashing keys that are already hashes, growing
//! and re-allocating per document) was the bottleneck. Open addressing with linear probing;
//! a generation stamp empties the table in O(1) between passes.

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    generation: u32,
    count: u32,
}

/// Keys → occurrence counts, for one pass at a time.
#[derive(Default)]
pub struct CountTable {
    slots: Vec<Slot>,
    mask: usize,
    generation: u32,
}

impl CountTable {
    /// Empties the table and makes room for `n` distinct keys.
    pub fn reset(&mut self, n: usize) {
        let want = (n.max(8) * 2).next_power_of_two();
        if self.slots.len() < want {
            self.slots = vec![Slot::default(); want];
            self.generation = 0;
        }
        // Only the first `want` slots are used: a small document keeps its probes in cache.
        self.mask = want - 1;
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.slots.iter_mut().for_each(|s| s.generation = 0);
            self.generation = 1;
        }
    }

    /// Adds one occurrence of `key`; returns its count including this one.
    #[inline]
    pub fn add(&mut self, key: u64) -> u32 {
        let mut i = (key as usize) & self.mask;
        loop {
            let s = &mut self.slots[i];
            if s.generation != self.generation {
                *s = Slot { key, generation: self.generation, count: 1 };
                return 1;
            }
            if s.key == key {
                s.count += 1;
                return s.count;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts `key` unless present; returns whether it was present.
    #[inline]
    pub fn seen(&mut self, key: u64) -> bool {
        let mut i = (key as usize) & self.mask;
        loop {
            let s = &mut self.slots[i];
            if s.generation != self.generation {
                *s = Slot { key, generation: self.generation, count: 1 };
                return false;
            }
            if s.key == key {
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Spreads a hash's entropy to the low bits the table indexes by (a multiply-xorshift).
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let mut t = CountTable::default();
        t.reset(3);
        assert_eq!(t.add(mix(1)), 1);
        assert_eq!(t.add(mix(1)), 2);
        assert_eq!(t.add(mix(2)), 1);
        assert!(t.seen(mix(2)));
        assert!(!t.seen(mix(3)));
        t.reset(3);
        assert_eq!(t.add(mix(1)), 1);
        assert!(!t.seen(mix(2)));
        // Colliding low bits probe on.
        t.reset(1000);
        for k in 0..1000u64 {
            assert_eq!(t.add(k << 20), 1);
        }
        for k in 0..1000u64 {
            assert_eq!(t.add(k << 20), 2);
        }
    }
}
