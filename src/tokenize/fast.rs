//! The exact fast path for byte-level BPE tokenizers of the Qwen2 kind (NFC, the Qwen2 split
//! regex, byte-level BPE with merges): hand-written for speed, giving the same ids as HF
//! `tokenizers` (tests compare both on every fixture text, on every vocabulary token, on
//! hand-written edge cases and on random Unicode strings).
//!
//! Where the time goes in HF and what this path does instead:
//! - added (special) tokens are found with one Aho-Corasick pass (leftmost-longest, as HF);
//! - NFC runs only when the quick check says a segment may not be NFC, with the same Unicode 9
//!   tables HF uses (`unicode-normalization-alignments`);
//! - the split regex runs as a hand-written scanner ([`super::pretok`]) instead of Oniguruma;
//! - BPE works on raw bytes by backtracking over a trie ([`super::bpe`]) instead of merging
//!   pair by pair, with a small per-thread cache of recent pieces for repetitive text.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::bpe::{Bpe, Work};
use super::pretok;
pub use super::spec::Unsupported;
use super::spec::{byte_chars, Spec};

/// Pieces longer than this (bytes) are not cached (they rarely repeat).
const CACHE_MAX_PIECE: usize = 48;
/// Pieces of more tokens than this are not cached (keeps a slot within two cache lines).
const CACHE_MAX_IDS: usize = 14;
/// Cache slots per thread (a power of two; a slot holds the last piece that hashed to it).
const CACHE_SLOTS: usize = 1 << 14;

/// The fast encoder, built from a `tokenizer.json`.
pub struct FastBpe {
    /// Instance id, keys the per-thread cache.
    uid: u64,
    /// Token id of each single byte.
    byte_ids: [u32; 256],
    bpe: Bpe,
    /// Added tokens: matcher over their contents and the id of each pattern.
    added: Option<(AhoCorasick, Vec<u32>)>,
    added_list: Vec<(String, u32)>,
    /// Apply NFC to text segments.
    nfc: bool,
    /// What each id decodes to (HF's ByteLevel decoder, before the UTF-8 check), concatenated
    /// in id order, and where each starts (plus the end).
    decode_bytes: Vec<u8>,
    decode_starts: Vec<u32>,
    /// Vocabulary size with the added tokens.
    vocab_size: usize,
    /// Vocab ids by token string, built on first use of [`FastBpe::token_id`] for a non-added
    /// token.
    by_bytes: std::sync::OnceLock<rustc_hash::FxHashMap<Vec<u8>, u32>>,
}

impl FastBpe {
    /// Builds the fast encoder from the bytes of a `tokenizer.json`, or says why it does not apply.
    pub fn from_json(json: &[u8]) -> Result<FastBpe, Unsupported> {
        let spec = Spec::parse(json)?;
        let mut byte_ids = [u32::MAX; 256];
        {
            let mut single: Vec<Option<u32>> = vec![None; 256];
            for id in 0..spec.vocab_len() as u32 {
                if let Some(&[b]) = spec.token(id) {
                    single[b as usize] = Some(id);
                }
            }
            for b in 0..256 {
                byte_ids[b] = single[b].ok_or_else(|| Unsupported(format!("no vocab entry for byte {b:#04x}")))?;
            }
        }
        let bpe =
            Bpe::new(&byte_ids, &spec.merges, |id| spec.token(id).unwrap_or_default(), spec.vocab_len()).map_err(|e| Unsupported(e.0))?;
        // Decoded bytes: vocab tokens are their bytes; an added token's content goes through
        // the byte-level alphabet when all its chars are in it (as HF's decoder does), else
        // it is its UTF-8 bytes.
        let n = spec.added.iter().map(|(_, id)| *id as usize + 1).max().unwrap_or(0).max(spec.vocab_len());
        let table = char_table();
        let mut added_bytes: Vec<Option<Vec<u8>>> = vec![None; n];
        for (content, id) in &spec.added {
            let bytes = super::spec::token_bytes(content, &table).unwrap_or_else(|| content.as_bytes().to_vec());
            added_bytes[*id as usize] = Some(bytes);
        }
        let mut decode_bytes = Vec::with_capacity(spec.bytes.len() + 1024);
        let mut decode_starts = Vec::with_capacity(n + 1);
        for (id, a) in added_bytes.iter().enumerate() {
            decode_starts.push(decode_bytes.len() as u32);
            match a {
                Some(b) => decode_bytes.extend_from_slice(b),
                None => decode_bytes.extend_from_slice(spec.token(id as u32).unwrap_or_default()),
            }
        }
        decode_starts.push(decode_bytes.len() as u32);
        let non_empty: Vec<&(String, u32)> = spec.added.iter().filter(|(c, _)| !c.is_empty()).collect();
        let added = if non_empty.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(non_empty.iter().map(|(c, _)| c))
                .map_err(|e| Unsupported(format!("added tokens: {e}")))?;
            Some((ac, non_empty.iter().map(|(_, id)| *id).collect()))
        };
        pretok::init();
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        Ok(FastBpe {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            byte_ids,
            bpe,
            added,
            added_list: spec.added,
            nfc: spec.nfc,
            decode_bytes,
            decode_starts,
            vocab_size: spec.vocab_size,
            by_bytes: Default::default(),
        })
    }

    /// The BPE ids of one piece (raw bytes, no pre-tokenization, no cache): for tests against
    /// HF's BPE model.
    #[cfg(test)]
    pub(crate) fn bpe_piece(&self, piece: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        if !piece.is_empty() {
            self.bpe.encode(piece, &mut out, &mut Work::default());
        }
        out
    }

    /// Vocabulary size with the added tokens (as HF's `get_vocab_size(true)`).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of a token: an added token's content, or a vocab token in its byte-level spelling
    /// (`Ġhello`), as HF's `token_to_id`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        if let Some((_, id)) = self.added_list.iter().find(|(c, _)| c == token) {
            return Some(*id);
        }
        let bytes = super::spec::token_bytes(token, &char_table())?;
        let map = self.by_bytes.get_or_init(|| {
            let mut m = rustc_hash::FxHashMap::default();
            for id in 0..self.decode_starts.len() as u32 - 1 {
                if !self.added_list.iter().any(|(_, a)| *a == id) {
                    if let Some(b) = self.token_bytes(id) {
                        m.insert(b.to_vec(), id);
                    }
                }
            }
            m
        });
        map.get(&bytes).copied()
    }

    /// The bytes token `id` decodes to (a vocab entry's bytes, an added token's content);
    /// `None` for an id the tokenizer does not have.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (s, e) = (*self.decode_starts.get(i)?, *self.decode_starts.get(i + 1)?);
        (e > s).then(|| &self.decode_bytes[s as usize..e as usize])
    }

    /// Text of `ids` as HF decodes it (special tokens kept, unknown ids skipped, invalid UTF-8
    /// replaced by U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(b) = self.token_bytes(id) {
                bytes.extend_from_slice(b);
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        SCRATCH.with(|c| {
            let mut c = c.borrow_mut();
            if c.uid != self.uid {
                c.uid = self.uid;
                c.clear_cache();
            }
            let s = &mut *c;
            match &self.added {
                None => self.encode_segment(text, out, s),
                Some((ac, ids)) => {
                    let mut last = 0;
                    for m in ac.find_iter(text) {
                        self.encode_segment(&text[last..m.start()], out, s);
                        out.push(ids[m.pattern().as_usize()]);
                        last = m.end();
                    }
                    self.encode_segment(&text[last..], out, s);
                }
            }
        })
    }

    fn encode_segment(&self, seg: &str, out: &mut Vec<u32>, s: &mut Scratch) {
        if seg.is_empty() {
            return;
        }
        let start = out.len();
        // One pass splits and checks that no char can make the text non-NFC; on the rare text
        // with such a char, the full quick check decides and the pieces are redone.
        if pretok::split_checking_nfc(seg, self.nfc, |p| self.encode_piece(p.as_bytes(), out, s)) {
            return;
        }
        out.truncate(start);
        if is_nfc_quick(seg.chars()) == IsNormalized::Yes {
            pretok::split(seg, |p| self.encode_piece(p.as_bytes(), out, s));
        } else {
            let normalized: String = seg.nfc().map(|(c, _)| c).collect();
            pretok::split(&normalized, |p| self.encode_piece(p.as_bytes(), out, s));
        }
    }

    #[inline]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        if piece.len() == 1 {
            out.push(self.byte_ids[piece[0] as usize]);
            return;
        }
        if piece.len() > CACHE_MAX_PIECE {
            self.bpe.encode(piece, out, &mut s.work);
            return;
        }
        let h = hash(piece);
        let slot = &mut s.cache[(h as usize) & (CACHE_SLOTS - 1)];
        if slot.hash == h && &slot.piece[..slot.piece_len as usize] == piece {
            out.extend_from_slice(&slot.ids[..slot.n_ids as usize]);
            return;
        }
        let start = out.len();
        self.bpe.encode(piece, out, &mut s.work);
        let ids = &out[start..];
        if ids.len() <= CACHE_MAX_IDS {
            slot.hash = h;
            slot.piece_len = piece.len() as u8;
            slot.piece[..piece.len()].copy_from_slice(piece);
            slot.n_ids = ids.len() as u8;
            slot.ids[..ids.len()].copy_from_slice(ids);
        }
    }
}

/// The byte each char of the byte-level alphabet stands for.
fn char_table() -> [u16; 0x144] {
    let mut t = [u16::MAX; 0x144];
    for (b, c) in byte_chars().iter().enumerate() {
        t[*c as usize] = b as u16;
    }
    t
}

/// FxHash-style hash of a short byte string (8 bytes at a time).
#[inline]
fn hash(b: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// A cached piece and its ids, inline (two cache lines, no pointers to chase).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    hash: u64,
    piece_len: u8,
    n_ids: u8,
    piece: [u8; CACHE_MAX_PIECE],
    ids: [u32; CACHE_MAX_IDS],
}

const EMPTY_SLOT: Slot = Slot { hash: u64::MAX, piece_len: 0, n_ids: 0, piece: [0; CACHE_MAX_PIECE], ids: [0; CACHE_MAX_IDS] };

/// Per-thread state: the piece cache (direct-mapped, bounded) and the encoder's scratch space.
#[derive(Default)]
struct Scratch {
    uid: u64,
    cache: Vec<Slot>,
    work: Work,
}

impl Scratch {
    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache.resize(CACHE_SLOTS, EMPTY_SLOT);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}
