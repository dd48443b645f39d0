//! The exact fast path for byte-level BPE tokenizers of the Qwen2 kind (NFC, the Qwen2 split
//! regex, byte-level BPE with merges): hand-written for speed, giving the same ids as HF
//! `tokenizers` (tests compare both on every fixture text, on hand-written edge cases and on
//! random Unicode strings).
//!
//! Where the time goes in HF and what this path does instead:
//! - added (special) tokens are found with one Aho-Corasick pass (leftmost-longest, as HF);
//! - NFC runs only when the quick check says a segment may not be NFC, with the same Unicode 9
//!   tables HF uses (`unicode-normalization-alignments`);
//! - the split regex runs as a hand-written scanner ([`super::pretok`]) instead of Oniguruma;
//! - BPE works on raw bytes (no byte→char remapping, no `Encoding` with offsets and strings),
//!   with a per-thread cache of pieces; a miss runs HF's merge order exactly (lowest merge rank
//!   first, leftmost among equals), by linear scan for short pieces and a heap for long ones.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;
use serde_json::Value;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::pretok;

/// Pieces longer than this (bytes) are not cached (they rarely repeat).
const CACHE_MAX_PIECE: usize = 64;
/// Cached pieces per thread before the cache is cleared (bounds memory; results never change).
const CACHE_MAX_ENTRIES: usize = 1 << 18;
/// Pieces of up to this many bytes are merged by linear scan; longer ones with a heap.
const SCAN_MAX_SYMBOLS: usize = 96;

/// Why a tokenizer cannot use the fast path (it then runs on HF `tokenizers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// The fast encoder, built from a `tokenizer.json`.
pub struct FastBpe {
    /// Instance id, keys the per-thread cache.
    uid: u64,
    /// Token id of each single byte.
    byte_ids: [u32; 256],
    /// `(left << 32 | right)` → `(rank << 32 | merged id)`.
    merges: FxHashMap<u64, u64>,
    /// Added tokens: matcher over their contents and the id of each pattern.
    added: Option<(AhoCorasick, Vec<u32>)>,
    /// Apply NFC to text segments.
    nfc: bool,
    /// Bytes of every token, concatenated in id order (see [`FastBpe::token_bytes`]).
    token_bytes: Vec<u8>,
    /// Start of each id's bytes in `token_bytes`, plus the end.
    token_starts: Vec<u32>,
}

/// GPT-2's byte-level alphabet: byte → char used in `vocab`/`merges`.
fn bytes_to_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    map
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn is(v: &Value, key: &str, want: &str) -> bool {
    field(v, key).as_str() == Some(want)
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), Unsupported> {
    if ok {
        Ok(())
    } else {
        Err(Unsupported(why()))
    }
}

impl FastBpe {
    /// Builds the fast encoder from a parsed `tokenizer.json`, or says why it does not apply.
    pub fn from_json(json: &Value) -> Result<FastBpe, Unsupported> {
        // Normalizer: none or NFC.
        let norm = field(json, "normalizer");
        let nfc = match field(norm, "type").as_str() {
            None if norm.is_null() => false,
            Some("NFC") => true,
            other => return Err(Unsupported(format!("normalizer {other:?} (fast path: none or NFC)"))),
        };
        // Pre-tokenizer: Split(Qwen2 regex, Isolated) then ByteLevel without regex or prefix space.
        let pre = field(json, "pre_tokenizer");
        let seq = field(pre, "pretokenizers").as_array().filter(|_| is(pre, "type", "Sequence"));
        let Some([split, bl]) = seq.map(|s| s.as_slice()) else {
            return Err(Unsupported("pre_tokenizer is not Sequence[Split, ByteLevel]".into()));
        };
        check(is(split, "type", "Split"), || "first pre-tokenizer is not Split".into())?;
        check(field(field(split, "pattern"), "Regex").as_str() == Some(pretok::QWEN2_PATTERN), || {
            "Split pattern is not the Qwen2 regex".into()
        })?;
        check(is(split, "behavior", "Isolated") && field(split, "invert") == false, || "Split is not Isolated/non-inverted".into())?;
        check(is(bl, "type", "ByteLevel") && field(bl, "add_prefix_space") == false && field(bl, "use_regex") == false, || {
            "second pre-tokenizer is not ByteLevel(add_prefix_space=false, use_regex=false)".into()
        })?;
        // Post-processing adds nothing to the ids.
        let post = field(json, "post_processor");
        check(post.is_null() || is(post, "type", "ByteLevel"), || "post_processor is not ByteLevel".into())?;
        check(field(json, "truncation").is_null() && field(json, "padding").is_null(), || "truncation/padding configured".into())?;
        // Model: plain byte-level BPE.
        let model = field(json, "model");
        check(is(model, "type", "BPE"), || "model is not BPE".into())?;
        check(field(model, "dropout").is_null() && field(model, "byte_fallback") != true && field(model, "ignore_merges") != true, || {
            "BPE dropout, byte_fallback or ignore_merges set".into()
        })?;
        for k in ["continuing_subword_prefix", "end_of_word_suffix"] {
            let v = field(model, k);
            check(v.is_null() || v.as_str() == Some(""), || format!("BPE {k} set"))?;
        }
        let b2c = bytes_to_chars();
        let mut c2b: HashMap<char, u8> = HashMap::new();
        for (b, c) in b2c.iter().enumerate() {
            c2b.insert(*c, b as u8);
        }
        let to_bytes = |s: &str| -> Option<Vec<u8>> { s.chars().map(|c| c2b.get(&c).copied()).collect() };
        let vocab = field(model, "vocab").as_object().ok_or_else(|| Unsupported("BPE vocab missing".into()))?;
        let mut by_bytes: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        for (tok, id) in vocab {
            let id = id.as_u64().ok_or_else(|| Unsupported(format!("vocab id of {tok:?} is not a number")))? as u32;
            let bytes = to_bytes(tok).ok_or_else(|| Unsupported(format!("vocab token {tok:?} is not byte-level")))?;
            by_bytes.insert(bytes, id);
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *by_bytes.get(&vec![b as u8]).ok_or_else(|| Unsupported(format!("no vocab entry for byte {b:#04x}")))?;
        }
        let mut by_id: Vec<Option<&[u8]>> = Vec::new();
        for (b, &id) in &by_bytes {
            if by_id.len() <= id as usize {
                by_id.resize(id as usize + 1, None);
            }
            by_id[id as usize] = Some(b);
        }
        let list = field(model, "merges").as_array().ok_or_else(|| Unsupported("BPE merges missing".into()))?;
        let mut merges: FxHashMap<u64, u64> = FxHashMap::default();
        merges.reserve(list.len());
        for (rank, m) in list.iter().enumerate() {
            let (a, b) = match m {
                Value::String(s) => s.split_once(' ').ok_or_else(|| Unsupported(format!("merge {s:?} is not 'a b'")))?,
                Value::Array(p) if p.len() == 2 => (p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")),
                other => return Err(Unsupported(format!("merge {other} is not a pair"))),
            };
            let (ba, bb) = (to_bytes(a), to_bytes(b));
            let (Some(ba), Some(bb)) = (ba, bb) else {
                return Err(Unsupported(format!("merge {a:?} {b:?} is not byte-level")));
            };
            let (Some(&ia), Some(&ib)) = (by_bytes.get(&ba), by_bytes.get(&bb)) else {
                return Err(Unsupported(format!("merge {a:?} {b:?} names a token not in the vocab")));
            };
            let joined = [ba, bb].concat();
            let Some(&im) = by_bytes.get(&joined) else {
                return Err(Unsupported(format!("merge {a:?} {b:?} makes a token not in the vocab")));
            };
            // HF keeps the first (lowest-rank) entry of a repeated pair.
            merges.entry(((ia as u64) << 32) | ib as u64).or_insert(((rank as u64) << 32) | im as u64);
        }
        // Added tokens: matched on the raw text, leftmost-longest, as HF does for tokens with
        // `normalized: false` and no stripping.
        let mut contents = Vec::new();
        let mut ids = Vec::new();
        for t in field(json, "added_tokens").as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
            for k in ["lstrip", "rstrip", "single_word", "normalized"] {
                check(field(t, k) != true, || format!("added token {} has {k}", field(t, "content")))?;
            }
            let content = field(t, "content").as_str().ok_or_else(|| Unsupported("added token without content".into()))?;
            let id = field(t, "id").as_u64().ok_or_else(|| Unsupported("added token without id".into()))? as u32;
            if !content.is_empty() {
                contents.push(content.to_string());
                ids.push(id);
            }
        }
        for (c, &id) in contents.iter().zip(&ids) {
            if by_id.len() <= id as usize {
                by_id.resize(id as usize + 1, None);
            }
            by_id[id as usize] = Some(c.as_bytes());
        }
        let mut token_bytes = Vec::new();
        let mut token_starts = Vec::with_capacity(by_id.len() + 1);
        for b in &by_id {
            token_starts.push(token_bytes.len() as u32);
            token_bytes.extend_from_slice(b.unwrap_or_default());
        }
        token_starts.push(token_bytes.len() as u32);
        let added = if contents.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&contents)
                .map_err(|e| Unsupported(format!("added tokens: {e}")))?;
            Some((ac, ids))
        };
        pretok::init();
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        Ok(FastBpe { uid: NEXT_UID.fetch_add(1, Ordering::Relaxed), byte_ids, merges, added, nfc, token_bytes, token_starts })
    }

    /// The bytes token `id` stands for (a vocab entry's bytes, an added token's content); `None`
    /// for an id the tokenizer does not have.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (s, e) = (*self.token_starts.get(i)?, *self.token_starts.get(i + 1)?);
        (e > s).then(|| &self.token_bytes[s as usize..e as usize])
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.uid != self.uid {
                c.uid = self.uid;
                c.map.clear();
            }
            let cache = &mut *c;
            match &self.added {
                None => self.encode_segment(text, out, cache),
                Some((ac, ids)) => {
                    let mut last = 0;
                    for m in ac.find_iter(text) {
                        self.encode_segment(&text[last..m.start()], out, cache);
                        out.push(ids[m.pattern().as_usize()]);
                        last = m.end();
                    }
                    self.encode_segment(&text[last..], out, cache);
                }
            }
        })
    }

    fn encode_segment(&self, seg: &str, out: &mut Vec<u32>, cache: &mut Cache) {
        if seg.is_empty() {
            return;
        }
        if self.nfc && !seg.is_ascii() && is_nfc_quick(seg.chars()) != IsNormalized::Yes {
            let normalized: String = seg.nfc().map(|(c, _)| c).collect();
            pretok::split(&normalized, |p| self.encode_piece(p.as_bytes(), out, cache));
        } else {
            pretok::split(seg, |p| self.encode_piece(p.as_bytes(), out, cache));
        }
    }

    #[inline]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut Cache) {
        if piece.len() == 1 {
            out.push(self.byte_ids[piece[0] as usize]);
            return;
        }
        if piece.len() <= CACHE_MAX_PIECE {
            if let Some(ids) = cache.map.get(piece) {
                out.extend_from_slice(ids);
                return;
            }
            let start = out.len();
            self.merge(piece, out, &mut cache.scratch);
            if cache.map.len() >= CACHE_MAX_ENTRIES {
                cache.map.clear();
            }
            cache.map.insert(piece.into(), out[start..].into());
        } else {
            self.merge(piece, out, &mut cache.scratch);
        }
    }

    #[inline]
    fn pair(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&(((a as u64) << 32) | b as u64)).map(|v| ((v >> 32) as u32, *v as u32))
    }

    /// Byte-level BPE of one piece in HF's order: repeatedly merge the adjacent pair with the
    /// lowest merge rank, leftmost first.
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        if piece.len() > SCAN_MAX_SYMBOLS {
            return self.merge_heap(piece, out, s);
        }
        let syms = &mut s.syms;
        let ranks = &mut s.ranks;
        syms.clear();
        ranks.clear();
        syms.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        // ranks[i] = (rank, merged id) of the pair (syms[i], syms[i + 1]).
        for w in syms.windows(2) {
            ranks.push(self.pair(w[0], w[1]).unwrap_or((u32::MAX, 0)));
        }
        loop {
            let mut best = u32::MAX;
            let mut at = usize::MAX;
            for (i, &(r, _)) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if at == usize::MAX {
                break;
            }
            syms[at] = ranks[at].1;
            syms.remove(at + 1);
            ranks.remove(at);
            if at + 1 < syms.len() {
                ranks[at] = self.pair(syms[at], syms[at + 1]).unwrap_or((u32::MAX, 0));
            }
            if at > 0 {
                ranks[at - 1] = self.pair(syms[at - 1], syms[at]).unwrap_or((u32::MAX, 0));
            }
        }
        out.extend_from_slice(syms);
    }

    /// The same merge order for long pieces, in O(n log n): a linked list of symbols and a heap
    /// of candidate pairs keyed by (rank, position); stale entries are skipped on pop.
    fn merge_heap(&self, piece: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        let n = piece.len();
        let syms = &mut s.syms;
        syms.clear();
        syms.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32)>> = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            if let Some((r, m)) = self.pair(syms[i], syms[i + 1]) {
                heap.push(Reverse((r, i, m)));
            }
        }
        while let Some(Reverse((r, i, m))) = heap.pop() {
            if !alive[i] || next[i] >= n {
                continue;
            }
            let j = next[i];
            if self.pair(syms[i], syms[j]) != Some((r, m)) {
                continue;
            }
            syms[i] = m;
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
            }
            if prev[i] < n {
                let p = prev[i];
                if let Some((r2, m2)) = self.pair(syms[p], syms[i]) {
                    heap.push(Reverse((r2, p, m2)));
                }
            }
            if next[i] < n {
                if let Some((r2, m2)) = self.pair(syms[i], syms[next[i]]) {
                    heap.push(Reverse((r2, i, m2)));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(syms[i]);
            i = next[i];
        }
    }
}

#[derive(Default)]
struct Scratch {
    syms: Vec<u32>,
    ranks: Vec<(u32, u32)>,
}

#[derive(Default)]
struct Cache {
    uid: u64,
    map: FxHashMap<Box<[u8]>, Box<[u32]>>,
    scratch: Scratch,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}
