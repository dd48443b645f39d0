//! A counting hash set of pre-hashed `u64` keys, reused across documents.
//!
//! Hand-written for speed: the repetition filter makes passes over every unit of a document,
//! and `std::collections::HashMap` (re-hashing keys that are already hashes, growing and
//! re-allocating per document) was the bottleneck. Open addressing with linear probing over
//! 8-byte slots: the slot index comes from a key's low bits, the slot stores its high 32 bits
//! (so two keys are taken as equal when 32 + log2(slots) of their bits agree; the filters
//! measure fractions, and a false match every few billion probes does not move them).

/// One slot: the key's high half (0 = empty) and its count.
#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u32,
    count: u32,
}

/// Keys → occurrence counts, for one pass at a time.
#[derive(Default)]
pub struct CountTable {
    slots: Vec<Slot>,
    mask: usize,
}

impl CountTable {
    /// Empties the table and makes room for `n` distinct keys (load factor ≤ 1/2).
    pub fn reset(&mut self, n: usize) {
        let want = (n.max(8) * 2).next_power_of_two();
        if self.slots.len() < want {
            self.slots = vec![Slot::default(); want];
        } else {
            // Only the first `want` slots are used: a small document keeps its probes in cache.
            self.slots[..want].fill(Slot::default());
        }
        self.mask = want - 1;
    }

    #[inline]
    fn tag(key: u64) -> u32 {
        ((key >> 32) as u32) | 1
    }

    /// Adds one occurrence of `key`; returns its count including this one.
    #[inline]
    pub fn add(&mut self, key: u64) -> u32 {
        let tag = Self::tag(key);
        let mut i = (key as usize) & self.mask;
        loop {
            let s = &mut self.slots[i];
            if s.tag == tag {
                s.count = s.count.saturating_add(1);
                return s.count;
            }
            if s.tag == 0 {
                *s = Slot { tag, count: 1 };
                return 1;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts `key` unless present; returns whether it was present.
    #[inline]
    pub fn seen(&mut self, key: u64) -> bool {
        self.add(key) > 1
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
            assert_eq!(t.add(k << 40), 1);
        }
        for k in 0..1000u64 {
            assert_eq!(t.add(k << 40), 2);
        }
    }
}
