//! MinHash signatures and LSH band keys.
//!
//! Each shingle is hashed once with seeded xxh3-64 and folded to 32 bits; the `k` hash
//! functions are then `h_i(x) = a_i·x + b_i (mod 2³²)` with odd random `a_i` and random `b_i`
//! drawn from the config seed. Since `x` is already a uniform hash, each `h_i` is a bijection of
//! uniform values, so `P[min h_i(A) = min h_i(B)] = J(A, B)` per function; the affine family
//! only has to decorrelate the functions, which `verify`/`--verify-sample` measure. The inner
//! loop (one multiply, add and min per lane) is written over fixed 16-lane blocks so it
//! vectorizes; an AVX2 build of it is picked at run time where the CPU has it.

use super::shingle::Tokens;
use crate::core::rng::SplitMix64;

/// Lanes per block of hash functions (two AVX2 registers of u32).
const LANES: usize = 16;

/// A seeded MinHash family and the shingling settings.
#[derive(Debug, Clone)]
pub struct MinHasher {
    /// Signature length (`bands × rows`).
    pub k: usize,
    /// Rows (hash values) per LSH band.
    pub rows: usize,
    /// Bins of the one-permutation verification sketch (0: none).
    pub bins: usize,
    seed: u64,
    word_n: usize,
    cjk_n: usize,
    case_fold: bool,
    // Padded to a multiple of LANES.
    a: Vec<u32>,
    b: Vec<u32>,
}

/// Reusable per-worker buffers.
#[derive(Debug, Default)]
pub struct Scratch {
    tokens: Tokens,
    hashes: Vec<u32>,
    sig: Vec<u32>,
    bins: Vec<u32>,
}

impl Scratch {
    /// The 32-bit shingle hashes of the last [`MinHasher::signature`] call (one per shingle
    /// occurrence, in text order): the set the exact Jaccard check compares.
    pub fn hashes(&self) -> &[u32] {
        &self.hashes
    }
}

/// An empty bin of the verification sketch.
pub const EMPTY_BIN: u16 = u16::MAX;

impl MinHasher {
    /// A family of `bands × rows` functions drawn from `seed`.
    pub fn new(bands: usize, rows: usize, bins: usize, seed: u64, word_n: usize, cjk_n: usize, case_fold: bool) -> Self {
        let k = bands * rows;
        let padded = k.div_ceil(LANES) * LANES;
        let mut rng = SplitMix64::new(seed ^ 0x6d69_6e68_6173_6821);
        let mut a = Vec::with_capacity(padded);
        let mut b = Vec::with_capacity(padded);
        for _ in 0..padded {
            a.push((rng.next_u64() as u32) | 1);
            b.push(rng.next_u64() as u32);
        }
        Self { k, rows, bins, seed, word_n: word_n.max(1), cjk_n: cjk_n.max(1), case_fold, a, b }
    }

    /// Computes the signature of `text` into `sig` (length `k`) and the verification sketch into
    /// `bins` (length `self.bins`); returns the shingle count. A text without tokens gives 0 and
    /// leaves `sig` at `u32::MAX` and every bin empty (it takes no part in LSH).
    ///
    /// The verification sketch is one-permutation hashing: the shingle's hash picks a bin (top
    /// bits of its low word) and the bin keeps the minimum of the remaining bits, stored as 16
    /// bits. It costs one compare per shingle however many bins there are, and for texts with
    /// fewer shingles than bins it is close to the exact Jaccard, so it can check LSH candidates
    /// much more precisely than the `k` MinHash values.
    pub fn signature(&self, text: &str, scratch: &mut Scratch, sig: &mut [u32], bins: &mut [u16]) -> usize {
        scratch.tokens.tokenize(text, self.case_fold);
        scratch.hashes.clear();
        scratch.bins.clear();
        scratch.bins.resize(self.bins, u32::MAX);
        let seed = self.seed;
        let hashes = &mut scratch.hashes;
        let sketch = &mut scratch.bins[..];
        let shift = if self.bins > 1 { 32 - self.bins.trailing_zeros() } else { 32 };
        let n = scratch.tokens.for_each_shingle(self.word_n, self.cjk_n, |s| {
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(s, seed);
            hashes.push((h >> 32) as u32);
            if !sketch.is_empty() {
                let lo = h as u32;
                let bin = if shift == 32 { 0 } else { (lo >> shift) as usize };
                let val = lo << (32 - shift);
                if val < sketch[bin] {
                    sketch[bin] = val;
                }
            }
        });
        scratch.sig.clear();
        scratch.sig.resize(self.a.len(), u32::MAX);
        if n > 0 {
            permute_min(&self.a, &self.b, &scratch.hashes, &mut scratch.sig);
        }
        sig.copy_from_slice(&scratch.sig[..self.k]);
        for (o, &v) in bins.iter_mut().zip(scratch.bins.iter()) {
            // Top 16 bits of the bin minimum; a value that would read as empty is nudged.
            *o = if v == u32::MAX { EMPTY_BIN } else { ((v >> 16) as u16).min(EMPTY_BIN - 1) };
        }
        n
    }

    /// The LSH key of band `band` of a signature: xxh3-128 of its `rows` values.
    pub fn band_key(&self, sig: &[u32], band: usize) -> u128 {
        let vals = &sig[band * self.rows..(band + 1) * self.rows];
        let mut bytes = [0u8; 4 * 64];
        let bytes = if self.rows <= 64 { &mut bytes[..4 * self.rows] } else { return band_key_slow(vals, self.seed, band) };
        for (i, v) in vals.iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_128_with_seed(bytes, self.seed.wrapping_add(band as u64))
    }
}

fn band_key_slow(vals: &[u32], seed: u64, band: usize) -> u128 {
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_128_with_seed(&bytes, seed.wrapping_add(band as u64))
}

/// Estimated Jaccard: the share of equal positions of two signatures.
pub fn estimate(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Jaccard estimated from two one-permutation sketches: equal bins over bins non-empty in
/// either (1 for two empty texts).
pub fn sketch_estimate(a: &[u16], b: &[u16]) -> f64 {
    let (mut eq, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        if x == EMPTY_BIN && y == EMPTY_BIN {
            continue;
        }
        union += 1;
        eq += (x == y) as usize;
    }
    if union == 0 {
        1.0
    } else {
        eq as f64 / union as f64
    }
}

/// A document's MinHash signature and verification sketch, as stored by the signatures step.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    /// The `k` MinHash values.
    pub sig: Vec<u32>,
    /// The one-permutation verification bins (empty when the config has none).
    pub bins: Vec<u16>,
    /// Read buffer.
    pub buf: Vec<u8>,
    /// Where the document's shingle hashes are in its shard's shingle file: (offset in
    /// values, count); count 0 when there are none stored.
    pub shingles_at: (u64, u32),
}

impl Sketch {
    /// Estimated Jaccard: the verification sketch where there is one, else the signature.
    pub fn similarity(&self, o: &Sketch) -> f64 {
        if self.bins.is_empty() {
            estimate(&self.sig, &o.sig)
        } else {
            sketch_estimate(&self.bins, &o.bins)
        }
    }
}

fn permute_min(a: &[u32], b: &[u32], hashes: &[u32], sig: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { permute_min_avx2(a, b, hashes, sig) };
            return;
        }
    }
    permute_min_generic(a, b, hashes, sig)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn permute_min_avx2(a: &[u32], b: &[u32], hashes: &[u32], sig: &mut [u32]) {
    permute_min_generic(a, b, hashes, sig)
}

/// For each block of LANES functions, run over all shingle hashes keeping the running minima in
/// registers (the loop order that vectorizes: broadcast x, multiply-add, min).
#[inline(always)]
fn permute_min_generic(a: &[u32], b: &[u32], hashes: &[u32], sig: &mut [u32]) {
    for ((ab, bb), sb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)).zip(sig.chunks_exact_mut(LANES)) {
        let ab: &[u32; LANES] = ab.try_into().unwrap();
        let bb: &[u32; LANES] = bb.try_into().unwrap();
        let mut acc: [u32; LANES] = sb.try_into().unwrap();
        for &x in hashes {
            for l in 0..LANES {
                acc[l] = acc[l].min(ab[l].wrapping_mul(x).wrapping_add(bb[l]));
            }
        }
        sb.copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar_paths_agree() {
        let h = MinHasher::new(14, 8, 0, 7, 5, 5, true);
        let hashes: Vec<u32> = (0..1000u32).map(|i| i.wrapping_mul(2654435761)).collect();
        let mut s1 = vec![u32::MAX; h.a.len()];
        let mut s2 = s1.clone();
        permute_min(&h.a, &h.b, &hashes, &mut s1);
        for (i, (a, b)) in h.a.iter().zip(&h.b).enumerate() {
            s2[i] = hashes.iter().map(|&x| a.wrapping_mul(x).wrapping_add(*b)).min().unwrap();
        }
        assert_eq!(s1, s2);
    }

    /// The estimate is unbiased and its spread matches the binomial √(J(1−J)/k) of independent
    /// functions, over many random set pairs with known Jaccard (fixed seeds: deterministic).
    #[test]
    fn estimates_match_exact_jaccard() {
        let h = MinHasher::new(14, 8, 0, 42, 5, 5, true);
        let mut rng = SplitMix64::new(3);
        let mut sig_a = vec![0u32; h.k];
        let mut sig_b = vec![0u32; h.k];
        for &target in &[0.3f64, 0.5, 0.8, 0.95] {
            let (mut sum_err, mut sum_sq) = (0.0, 0.0);
            let trials = 300;
            for _ in 0..trials {
                // Sets of 400 shingle hashes sharing `common`: J = common / (800 - common).
                let common = (800.0 * target / (1.0 + target)).round() as usize;
                let shared: Vec<u32> = (0..common).map(|_| rng.next_u64() as u32).collect();
                let mut a = shared.clone();
                let mut b = shared;
                a.extend((0..400 - common).map(|_| rng.next_u64() as u32));
                b.extend((0..400 - common).map(|_| rng.next_u64() as u32));
                let exact = common as f64 / (800 - common) as f64;
                for (set, out) in [(&a, &mut sig_a), (&b, &mut sig_b)] {
                    let mut s = vec![u32::MAX; h.a.len()];
                    permute_min(&h.a, &h.b, set, &mut s);
                    out.copy_from_slice(&s[..h.k]);
                }
                let e = estimate(&sig_a, &sig_b) - exact;
                sum_err += e;
                sum_sq += e * e;
            }
            let mean = sum_err / trials as f64;
            let sd = (sum_sq / trials as f64).sqrt();
            let theory = (target * (1.0 - target) / h.k as f64).sqrt();
            assert!(mean.abs() < 0.01, "J={target}: bias {mean}");
            assert!(sd < theory * 1.25 + 1e-3, "J={target}: sd {sd} vs binomial {theory}");
        }
    }

    #[test]
    fn signatures_are_seeded_and_similar_texts_collide() {
        let h = MinHasher::new(14, 8, 256, 1, 5, 5, true);
        let mut sc = Scratch::default();
        let text = "本发明公开了一种边缘推断应用干扰感知的GPU资源配置方法，该方法针对不同版本推断模型在单边缘节点上的吞吐量进行建模。";
        let edited = text.replacen("吞吐量", "吞吐率", 1);
        let (mut s1, mut s2, mut s3) = (vec![0; h.k], vec![0; h.k], vec![0; h.k]);
        let (mut b1, mut b2, mut b3) = (vec![0u16; 256], vec![0u16; 256], vec![0u16; 256]);
        assert!(h.signature(text, &mut sc, &mut s1, &mut b1) > 40);
        h.signature(&edited, &mut sc, &mut s2, &mut b2);
        MinHasher::new(14, 8, 256, 2, 5, 5, true).signature(text, &mut sc, &mut s3, &mut b3);
        assert!(estimate(&s1, &s2) > 0.7, "{}", estimate(&s1, &s2));
        assert!(estimate(&s1, &s3) < 0.1, "another seed is another family");
        // Few shingles in many bins: the sketch is close to the exact Jaccard.
        let exact = crate::dedup::shingle::jaccard(
            &crate::dedup::shingle::shingle_set(text, 5, 5, true),
            &crate::dedup::shingle::shingle_set(&edited, 5, 5, true),
        );
        assert!((sketch_estimate(&b1, &b2) - exact).abs() < 0.03, "{} vs {exact}", sketch_estimate(&b1, &b2));
        let (mut empty, mut eb) = (vec![0; h.k], vec![0u16; 256]);
        assert_eq!(h.signature("  。，", &mut sc, &mut empty, &mut eb), 0);
        assert!(empty.iter().all(|&v| v == u32::MAX) && eb.iter().all(|&v| v == EMPTY_BIN));
    }

    /// On large sets the sketch error follows √(J(1−J)/bins).
    #[test]
    fn sketch_estimates_large_sets() {
        let h = MinHasher::new(1, 1, 512, 5, 1, 1, false);
        let words: Vec<String> = (0..20000).map(|i| format!("w{i}")).collect();
        let a = words[..10000].join(" ");
        let b = words[1000..11000].join(" ");
        let mut sc = Scratch::default();
        let (mut s, mut ba, mut bb) = (vec![0; 1], vec![0u16; 512], vec![0u16; 512]);
        h.signature(&a, &mut sc, &mut s, &mut ba);
        h.signature(&b, &mut sc, &mut s, &mut bb);
        let exact = 9000.0 / 11000.0;
        assert!(
            (sketch_estimate(&ba, &bb) - exact).abs() < 4.0 * (exact * (1.0 - exact) / 512.0f64).sqrt(),
            "{}",
            sketch_estimate(&ba, &bb)
        );
    }
}
