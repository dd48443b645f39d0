//! Exact byte-level BPE of one pre-tokenized piece, by backtracking instead of merging.
//!
//! HF `tokenizers` merges adjacent symbols of a piece, lowest merge rank first (leftmost among
//! equals), until no listed pair is left. When every token is made by exactly one merge of two
//! older tokens (true of Qwen2: merge `r` makes token `256 + r`), that result has a local
//! characterisation: a token sequence is the BPE encoding of its bytes iff each token is one
//! BPE would build from its own bytes and every adjacent pair `(a, b)` is *compatible*: BPE on
//! the bytes of `a` followed by those of `b` gives `[a, b]`. Compatibility of a pair is decided
//! by walking the merge trees of `a` (its right edge) and `b` (its left edge) backwards in
//! merge order and asking at each step whether a merge across the boundary would have come
//! first ([`Bpe::compatible`]). This is the idea of GitHub's `bpe` crate (rust-gems); the code
//! here is our own, keyed on the HF merge list rather than on a token dictionary.
//!
//! The encoder takes the longest token that starts at the current position (a double-array
//! trie walk), keeps it if it is compatible with the previous token, else tries the next
//! shorter prefix token, and backs up one token when none fits; positions found to be dead ends
//! are remembered in a bit set, so the work stays linear in practice. Ids are internal (bytes,
//! then merges in rank order, so that "made earlier" is "smaller id"); [`Bpe::encode`] maps
//! them to the tokenizer's ids.

/// "No token" in the trie and prefix tables.
const NONE: u32 = u32::MAX;

/// Why a vocabulary cannot use this encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotApplicable(pub String);

/// The tables of one byte-level BPE vocabulary.
pub struct Bpe {
    /// Bytes of each internal id, concatenated, and where each starts (plus the end).
    bytes: Vec<u8>,
    starts: Vec<u32>,
    /// Per id: its merge and the partner signatures ([`Node`]).
    nodes: Vec<Node>,
    /// `(left, right)` → merged internal id.
    pairs: PairTable,
    /// The longest shorter token that is a prefix of each id and its length (`NONE` for a
    /// byte).
    shorter: Vec<(u32, u32)>,
    /// The token ids of the tokenizer, per internal id; `None` when they are the same.
    external: Option<Vec<u32>>,
    /// Longest-prefix search over every token BPE can produce.
    trie: Trie,
}

impl Bpe {
    /// Builds the tables from the byte tokens (`byte_ids[b]` = id of byte `b`), the merges in
    /// rank order (`(left id, right id, merged id)`, the merged token's bytes being those of
    /// the two parts) and each id's bytes. Fails when a token is made by more than one merge, or
    /// a merge uses a token made later.
    pub fn new<'a>(
        byte_ids: &[u32; 256],
        merges: &[(u32, u32, u32)],
        token_bytes: impl Fn(u32) -> &'a [u8],
        vocab_len: usize,
    ) -> Result<Bpe, NotApplicable> {
        let n = 256 + merges.len();
        // Internal ids: bytes first (keeping the tokenizer's ids when the bytes are 0..256, as
        // in Qwen2), then merge order.
        let mut internal = vec![NONE; vocab_len];
        let bytes_low = byte_ids.iter().all(|&id| id < 256);
        let mut external = vec![0u32; n];
        for (b, &id) in byte_ids.iter().enumerate() {
            let i = if bytes_low { id } else { b as u32 };
            if internal[id as usize] != NONE {
                return Err(NotApplicable(format!("token {id} stands for two bytes")));
            }
            internal[id as usize] = i;
            external[i as usize] = id;
        }
        let mut split = vec![(0u32, 0u32); n];
        for (i, s) in split.iter_mut().enumerate().take(256) {
            *s = (i as u32, i as u32);
        }
        for (r, &(a, b, m)) in merges.iter().enumerate() {
            let i = 256 + r as u32;
            let (ia, ib) = (internal[a as usize], internal[b as usize]);
            if ia == NONE || ib == NONE || ia >= i || ib >= i {
                return Err(NotApplicable(format!("merge {r} uses a token made by a later merge")));
            }
            if internal[m as usize] != NONE {
                return Err(NotApplicable(format!("token {m} is made by two merges")));
            }
            internal[m as usize] = i;
            external[i as usize] = m;
            split[i as usize] = (ia, ib);
        }
        let mut bytes = Vec::new();
        let mut starts = Vec::with_capacity(n + 1);
        for &e in &external {
            starts.push(bytes.len() as u32);
            bytes.extend_from_slice(token_bytes(e));
        }
        starts.push(bytes.len() as u32);
        let identity = external.iter().enumerate().all(|(i, &e)| i as u32 == e);
        let pairs = PairTable::new(&split);
        let mut nodes: Vec<Node> = split.iter().map(|&(left, right)| Node { left, right, as_left: 0, as_right: 0 }).collect();
        for &(a, b) in &split[256..] {
            nodes[a as usize].as_left |= 1 << sig_bit(b, SALT_RIGHT);
            nodes[b as usize].as_right |= 1 << sig_bit(a, SALT_LEFT);
        }
        let mut bpe =
            Bpe { bytes, starts, nodes, pairs, shorter: Vec::new(), external: (!identity).then_some(external), trie: Trie::default() };
        // A token whose own bytes BPE to something else can never be produced: it stays out
        // of the trie. Merge order is creation order, so its parts are decided first.
        let mut producible = vec![true; n];
        for i in 256..n {
            let (a, b) = (bpe.nodes[i].left, bpe.nodes[i].right);
            producible[i] = producible[a as usize] && producible[b as usize] && bpe.compatible(a, b, i as u32);
        }
        let keys: Vec<u32> = (0..n as u32).filter(|&i| producible[i as usize]).collect();
        bpe.trie = Trie::build(&keys, |i| bpe.token(i));
        bpe.shorter = (0..n as u32)
            .map(|i| {
                let t = bpe.token(i);
                if t.len() <= 1 {
                    (NONE, 0)
                } else {
                    let (id, len) = bpe.trie.longest(&t[..t.len() - 1]);
                    (id, len as u32)
                }
            })
            .collect();
        Ok(bpe)
    }

    /// Bytes of internal id `i`.
    #[inline]
    fn token(&self, i: u32) -> &[u8] {
        &self.bytes[self.starts[i as usize] as usize..self.starts[i as usize + 1] as usize]
    }

    #[inline]
    fn len(&self, i: u32) -> usize {
        (self.starts[i as usize + 1] - self.starts[i as usize]) as usize
    }

    /// The id `a` and `b` merge into, or `NONE`; the signatures answer most misses without
    /// touching the merge table.
    #[inline]
    fn merged(&self, a: u32, b: u32, na: &Node, nb: &Node) -> u32 {
        if na.as_left >> sig_bit(b, SALT_RIGHT) & 1 == 0 || nb.as_right >> sig_bit(a, SALT_LEFT) & 1 == 0 {
            return NONE;
        }
        self.pairs.get(a, b, &self.nodes)
    }

    /// Whether BPE keeps `a` and `b` apart when the bytes of `b` follow those of `a`, given that
    /// no merge made at or after `limit` may cross the boundary (`limit` = `NONE` for a plain
    /// pair). Undoes the younger of the two boundary tokens at each step: a merge across the
    /// boundary that is older than the token it would have pre-empted wins.
    #[inline]
    fn compatible(&self, mut a: u32, mut b: u32, mut limit: u32) -> bool {
        let mut na = &self.nodes[a as usize];
        let mut nb = &self.nodes[b as usize];
        loop {
            if self.merged(a, b, na, nb) < limit {
                return false;
            }
            if a > b {
                // `a` is younger: before it existed its right part touched `b`. Equal ranks go
                // to the left pair, so a crossing merge must be strictly older than `a`.
                if na.right == a {
                    return true; // both are bytes
                }
                limit = a;
                a = na.right;
                na = &self.nodes[a as usize];
            } else {
                // `b` is younger (or the same token, made left first): a crossing merge of the
                // same rank would win, being further left.
                if nb.left == b {
                    return true;
                }
                limit = b + 1;
                b = nb.left;
                nb = &self.nodes[b as usize];
            }
        }
    }

    /// Whether `a` then `b` is a compatible pair, remembering recent answers in `work`.
    #[inline]
    fn compatible_pair(&self, a: u32, b: u32, work: &mut Work) -> bool {
        // Ids are below 2^31, so the top bit marks a filled slot and zero is empty (a zeroed
        // table is allocated lazily by the OS).
        let key = ((a as u64) << 32) | b as u64 | 1 << 63;
        let slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - PAIR_CACHE_BITS)) as usize;
        if work.pairs[slot] == key {
            return true;
        }
        let ok = self.compatible(a, b, NONE);
        if ok {
            work.pairs[slot] = key;
        }
        ok
    }

    /// Appends the token ids of `piece` (non-empty) to `out`.
    pub fn encode(&self, piece: &[u8], out: &mut Vec<u32>, work: &mut Work) {
        let base = out.len();
        let n = piece.len();
        let first = self.trie.longest(piece);
        if first.1 == n {
            // The whole piece is one token (most words).
            out.push(first.0);
        } else {
            // dead: bit i set = no valid encoding of piece[i..] follows a token ending at i.
            if work.pairs.is_empty() {
                work.pairs = vec![0; 1 << PAIR_CACHE_BITS];
            }
            let dead = &mut work.dead;
            dead.clear();
            dead.resize(n / 64 + 1, 0);
            let mut pos = 0usize;
            let mut next = first;
            while pos < n {
                let (mut tok, mut len) = next;
                let last = if out.len() > base { out[out.len() - 1] } else { NONE };
                loop {
                    let end = pos + len;
                    if work.dead[end / 64] >> (end % 64) & 1 == 0 && (last == NONE || self.compatible_pair(last, tok, work)) {
                        out.push(tok);
                        pos = end;
                        if pos < n {
                            next = self.trie.longest(&piece[pos..]);
                        }
                        break;
                    }
                    let (s, l) = self.shorter[tok as usize];
                    if s != NONE {
                        (tok, len) = (s, l as usize);
                        continue;
                    }
                    // Nothing fits after `last`: mark this position and take `last` back.
                    work.dead[pos / 64] |= 1 << (pos % 64);
                    let l = out.pop().expect("the first token of a piece always fits");
                    pos -= self.len(l);
                    next = (l, self.len(l));
                    break;
                }
            }
        }
        if let Some(ext) = &self.external {
            for id in &mut out[base..] {
                *id = ext[*id as usize];
            }
        }
    }
}

/// Slots (log2) of the per-thread cache of compatible pairs.
const PAIR_CACHE_BITS: u32 = 16;

/// Per-thread scratch space of the encoder.
#[derive(Default)]
pub struct Work {
    /// Dead-end positions of the piece being encoded (a bit set).
    dead: Vec<u64>,
    /// Recently seen compatible pairs `(1 << 63 | a << 32 | b)`, direct-mapped (0 = empty).
    pairs: Vec<u64>,
}

/// A double-array trie over token bytes: longest-prefix search in one pass over the text.
#[derive(Default)]
struct Trie {
    /// Per state: `base` (children at `base + byte`; the top bit says a token ends here) and
    /// `check` (the parent state), side by side so one cache line serves a step.
    units: Vec<(u32, u32)>,
    /// Token id ending at each state, or `NONE`.
    value: Vec<u32>,
}

/// Flag in `base`: a token ends at this state.
const TERMINAL: u32 = 1 << 31;

impl Trie {
    /// Builds the trie over the bytes of `ids` (each non-empty, all distinct).
    fn build<'a>(ids: &[u32], bytes: impl Fn(u32) -> &'a [u8]) -> Trie {
        // Sorted by their first eight bytes as one integer, then in full: far fewer calls to
        // memcmp than sorting the byte strings directly.
        let prefix = |k: &[u8]| {
            let mut w = [0u8; 8];
            let n = k.len().min(8);
            w[..n].copy_from_slice(&k[..n]);
            u64::from_be_bytes(w)
        };
        let mut keys: Vec<(u64, &[u8], u32)> = ids.iter().map(|&i| (prefix(bytes(i)), bytes(i), i)).collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let keys: Vec<(&[u8], u32)> = keys.into_iter().map(|(_, k, i)| (k, i)).collect();
        let mut t = Trie { units: vec![(0, NONE); 512], value: vec![NONE; 512] };
        // Root is state 0; its check is itself so that lookups from the root work.
        t.units[0].1 = 0;
        let mut free_from = 1usize; // every state below this is in use
        let mut stack: Vec<(u32, usize, usize, usize)> = vec![(0, 0, keys.len(), 0)];
        let mut labels: Vec<(u8, usize, usize)> = Vec::with_capacity(256);
        while let Some((state, lo, hi, depth)) = stack.pop() {
            let mut k = lo;
            if keys[k].0.len() == depth {
                t.value[state as usize] = keys[k].1;
                t.units[state as usize].0 |= TERMINAL;
                k += 1;
            }
            labels.clear();
            while k < hi {
                let c = keys[k].0[depth];
                let mut e = k + 1;
                while e < hi && keys[e].0[depth] == c {
                    e += 1;
                }
                labels.push((c, k, e));
                k = e;
            }
            if labels.is_empty() {
                continue;
            }
            // First base that puts every child on a free state.
            let c0 = labels[0].0 as usize;
            let mut pos = free_from.max(c0 + 1);
            let base = loop {
                let b = pos - c0;
                t.ensure(b + 256);
                if labels.iter().all(|&(c, _, _)| t.units[b + c as usize].1 == NONE) {
                    break b;
                }
                pos += 1;
                while t.units.len() > pos && t.units[pos].1 != NONE {
                    pos += 1;
                }
            };
            assert!(base < TERMINAL as usize, "trie too large");
            t.units[state as usize].0 |= base as u32;
            for &(c, s, e) in &labels {
                let child = base + c as usize;
                t.units[child].1 = state;
                stack.push((child as u32, s, e, depth + 1));
            }
            while free_from < t.units.len() && t.units[free_from].1 != NONE {
                free_from += 1;
            }
        }
        // Qwen2: 333k states, 99.9 % of the slots in use.
        t.units.shrink_to_fit();
        t.value.shrink_to_fit();
        t
    }

    /// Grows the arrays to hold `len` states.
    fn ensure(&mut self, len: usize) {
        if self.units.len() < len {
            self.units.resize(len, (0, NONE));
            self.value.resize(len, NONE);
        }
    }

    /// The longest token that is a prefix of `text` (non-empty) and its length. Every byte is
    /// a token, so there always is one.
    #[inline]
    fn longest(&self, text: &[u8]) -> (u32, usize) {
        let mut state = 0u32;
        let mut base = self.units[0].0;
        let (mut best, mut best_len) = (0u32, 0usize);
        for (i, &c) in text.iter().enumerate() {
            let next = (base & !TERMINAL) + c as u32;
            match self.units.get(next as usize) {
                Some(&(b, check)) if check == state => {
                    state = next;
                    base = b;
                    if b & TERMINAL != 0 {
                        best = next;
                        best_len = i + 1;
                    }
                }
                _ => break,
            }
        }
        (self.value[best as usize], best_len)
    }
}

/// One id's merge and, as 32-bit Bloom signatures, which tokens it merges with: bit
/// `sig_bit(b)` of `as_left` is set for every merge `(this, b)`, bit `sig_bit(a)` of `as_right`
/// for every merge `(a, this)`. Measured on the fixture mix, a pair passes both in 3 % of the
/// lookups that find no merge (1.4 % with 64-bit signatures, whose larger nodes cost more in
/// cache misses than the extra lookups), so the merge table (a cache miss per lookup) is
/// mostly left alone.
#[derive(Clone, Copy)]
struct Node {
    left: u32,
    right: u32,
    as_left: u32,
    as_right: u32,
}

const SALT_RIGHT: u64 = 0x9E37_79B9_7F4A_7C15;
const SALT_LEFT: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// Signature bit of a token id (a multiplicative hash's top five bits).
#[inline]
fn sig_bit(id: u32, salt: u64) -> u32 {
    ((id as u64).wrapping_mul(salt) >> 59) as u32
}

/// The merge table as open addressing over 32-bit slots: each holds a merged id and, in the
/// bits the id does not need, a fingerprint of its pair; a fingerprint match is confirmed
/// against the split table. Four bytes a slot keep it small enough for the L2 cache (1 MB for
/// Qwen2's 151k merges), which a general hash map of `(u32, u32) → u32` is not.
struct PairTable {
    slots: Vec<u32>,
    /// log2 of the slot count.
    bits: u32,
    /// Bits of a slot that hold the id.
    id_bits: u32,
}

impl PairTable {
    fn new(split: &[(u32, u32)]) -> PairTable {
        let merges = split.len().saturating_sub(256);
        let bits = (merges * 2).max(2).next_power_of_two().trailing_zeros();
        let id_bits = (split.len().max(2) - 1).ilog2() + 1;
        let mut t = PairTable { slots: vec![0; 1 << bits], bits, id_bits };
        for (m, &(a, b)) in split.iter().enumerate().skip(256) {
            let (mut i, fp) = t.locate(a, b);
            while t.slots[i] != 0 {
                i = (i + 1) & ((1 << t.bits) - 1);
            }
            t.slots[i] = fp | m as u32;
        }
        t
    }

    /// Home slot and fingerprint (in the high bits) of a pair.
    #[inline]
    fn locate(&self, a: u32, b: u32) -> (usize, u32) {
        let h = (((a as u64) << 32) | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = h ^ (h >> 29);
        let i = (h >> (64 - self.bits)) as usize;
        let fp = if self.id_bits >= 32 { 0 } else { (h as u32) << self.id_bits };
        (i, fp)
    }

    /// The id `(a, b)` merges into, or `NONE`. Slot 0 is empty: ids below 256 are bytes.
    #[inline]
    fn get(&self, a: u32, b: u32, nodes: &[Node]) -> u32 {
        let (mut i, fp) = self.locate(a, b);
        let id_mask = if self.id_bits >= 32 { u32::MAX } else { (1 << self.id_bits) - 1 };
        loop {
            let s = self.slots[i];
            if s == 0 {
                return NONE;
            }
            if s & !id_mask == fp && {
                let n = &nodes[(s & id_mask) as usize];
                (n.left, n.right) == (a, b)
            } {
                return s & id_mask;
            }
            i = (i + 1) & ((1 << self.bits) - 1);
        }
    }
}
