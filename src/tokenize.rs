//! Tokenization with any HF `tokenizer.json` (the Qwen2.5 tokenizer ships with the project and
//! is the default). Two engines give the same ids:
//! - `hf`: the `tokenizers` crate, for any tokenizer;
//! - `fast`: an exact hand-written path for byte-level BPE of the Qwen2 kind ([`fast`]), several
//!   times faster, and quick to load; `auto` picks it whenever the tokenizer qualifies.
//!
//! This is the one place the crate loads a tokenizer (packing, SFT and inference all come
//! here), and the bundled one is embedded once. With the fast engine, HF `tokenizers` is built
//! only when something needs it (the `hf` reference ids, or byte offsets of a text that NFC
//! changes), since building it costs several times the fast engine's whole start-up.
//!
//! Text is encoded without added special tokens (`add_special_tokens = false`, as CPT packing
//! places its own `<|endoftext|>`), but special-token strings inside the text are recognised as
//! HF does. Batches are encoded on rayon; the output order is the input order.

mod bpe;
mod fast;
pub mod pretok;
mod spec;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// ChatML: starts a turn.
pub const IM_START: &str = "<|im_start|>";
/// ChatML: ends a turn; the chat models' end of answer.
pub const IM_END: &str = "<|im_end|>";
/// End of document; the base models' EOS.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The bundled Qwen2.5 `tokenizer.json`, zstd-compressed (see fixtures/tokenizers/qwen2.5/PROVENANCE.md).
const QWEN25_ZST: &[u8] = include_bytes!("../fixtures/tokenizers/qwen2.5/tokenizer.json.zst");
/// Name of the bundled tokenizer in configs, manifests and messages.
pub const QWEN25: &str = "qwen2.5";
/// zstd frame magic (a `.json.zst` file is detected by content, not name).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The byte range of each token in the encoded text (see [`Tokenizer::encode_with_offsets`]).
pub type Offsets = Vec<(usize, usize)>;

/// Which encoder runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The fast path when the tokenizer qualifies, else HF `tokenizers` (logged).
    #[default]
    Auto,
    /// Always HF `tokenizers`.
    Hf,
    /// The fast path; an error if the tokenizer does not qualify.
    Fast,
}

/// Tokenizer settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// A `tokenizer.json` (plain or zstd-compressed); unset = the bundled Qwen2.5 tokenizer.
    pub path: Option<PathBuf>,
    /// Encoder: `auto`, `hf` or `fast` (same ids; `fast` is several times quicker).
    pub engine: Engine,
}

/// The bundled Qwen2.5 `tokenizer.json` (decompressed), e.g. to ship it with a checkpoint.
pub fn bundled_json() -> Result<Vec<u8>> {
    zstd::decode_all(QWEN25_ZST).map_err(|e| tok_err(QWEN25, format!("bad zstd data: {e}")))
}

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    sha256: String,
    /// The `tokenizer.json` text, to build HF `tokenizers` from when it is first needed.
    json: Json,
    hf: OnceLock<std::result::Result<tokenizers::Tokenizer, String>>,
    fast: Option<fast::FastBpe>,
}

/// Where the `tokenizer.json` text is kept: the bundled one is decompressed again if needed.
enum Json {
    Bundled,
    Bytes(Vec<u8>),
}

fn tok_err(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("tokenizer {name}: {e}"))
}

/// HF `tokenizers` from a `tokenizer.json`, set never to truncate or pad (packing decides lengths).
fn build_hf(json: &[u8]) -> std::result::Result<tokenizers::Tokenizer, String> {
    let mut hf = tokenizers::Tokenizer::from_bytes(json).map_err(|e| format!("not a valid tokenizer.json: {e}"))?;
    hf.with_truncation(None).map_err(|e| e.to_string())?;
    hf.with_padding(None);
    Ok(hf)
}

impl Tokenizer {
    /// Loads the tokenizer a config names.
    pub fn load(cfg: &TokenizerConfig) -> Result<Tokenizer> {
        match &cfg.path {
            None => Self::qwen25(cfg.engine),
            Some(p) => Self::from_file(p, cfg.engine),
        }
    }

    /// The bundled Qwen2.5 tokenizer.
    pub fn qwen25(engine: Engine) -> Result<Tokenizer> {
        Self::build(bundled_json()?, QWEN25, engine, true)
    }

    /// A `tokenizer.json` file, plain or zstd-compressed.
    pub fn from_file(path: &Path, engine: Engine) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string(), engine)
    }

    /// A `tokenizer.json` from bytes (zstd-compressed or not); `name` is used in messages.
    pub fn from_bytes(bytes: &[u8], name: &str, engine: Engine) -> Result<Tokenizer> {
        let json: Vec<u8> = if bytes.starts_with(&ZSTD_MAGIC) {
            zstd::decode_all(bytes).map_err(|e| tok_err(name, format!("bad zstd data: {e}")))?
        } else {
            bytes.to_vec()
        };
        Self::build(json, name, engine, false)
    }

    fn build(json: Vec<u8>, name: &str, engine: Engine, bundled: bool) -> Result<Tokenizer> {
        let sha256 = crate::core::fsio::hex(&Sha256::digest(&json));
        let fast = match engine {
            Engine::Hf => None,
            Engine::Auto | Engine::Fast => match fast::FastBpe::from_json(&json) {
                Ok(f) => Some(f),
                Err(fast::Unsupported(why)) if engine == Engine::Auto => {
                    tracing::info!("tokenizer {name}: fast path does not apply ({why}); using HF tokenizers");
                    None
                }
                Err(fast::Unsupported(why)) => {
                    return Err(tok_err(name, format!("engine \"fast\" does not support this tokenizer: {why}")))
                }
            },
        };
        let hf = OnceLock::new();
        if fast.is_none() {
            // The HF engine is the encoder: build it now, so a bad file fails at load.
            let _ = hf.set(Ok(build_hf(&json).map_err(|e| tok_err(name, e))?));
        }
        let json = if bundled { Json::Bundled } else { Json::Bytes(json) };
        Ok(Tokenizer { inner: Arc::new(Inner { name: name.to_string(), sha256, json, hf, fast }) })
    }

    /// HF `tokenizers` for this tokenizer, built on first use.
    fn hf(&self) -> Result<&tokenizers::Tokenizer> {
        let inner = &self.inner;
        let hf = inner.hf.get_or_init(|| {
            let bundled;
            let json = match &inner.json {
                Json::Bundled => {
                    bundled = bundled_json().map_err(|e| e.to_string())?;
                    &bundled
                }
                Json::Bytes(b) => b,
            };
            build_hf(json)
        });
        hf.as_ref().map_err(|e| tok_err(&inner.name, e))
    }

    /// Name (the bundled tokenizer's name, or the file path).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// sha256 of the (decompressed) `tokenizer.json`, hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// The engine in use: `fast` or `hf`.
    pub fn engine(&self) -> &'static str {
        if self.inner.fast.is_some() {
            "fast"
        } else {
            "hf"
        }
    }

    /// Id of a token string (special tokens included; vocab tokens in their byte-level
    /// spelling, e.g. `Ġworld`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.inner.fast {
            Some(f) => f.token_id(token),
            None => self.hf().ok()?.token_to_id(token),
        }
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.inner.fast {
            Some(f) => f.vocab_size(),
            None => self.hf().map(|h| h.get_vocab_size(true)).unwrap_or(0),
        }
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        match &self.inner.fast {
            Some(f) => {
                f.encode_into(text, out);
                Ok(())
            }
            None => {
                out.extend_from_slice(&self.encode_hf(text)?);
                Ok(())
            }
        }
    }

    /// The ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 2);
        self.encode_into(text, &mut out)?;
        Ok(out)
    }

    /// The ids of `text` from HF `tokenizers`, whatever the engine (the reference).
    pub fn encode_hf(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.hf()?.encode_fast(text, false).map_err(|e| tok_err(&self.inner.name, e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The ids of `text` and the byte range of each token in `text` (for loss masks over
    /// spans of the text). The fast path takes each range from its token's bytes and checks
    /// that they spell `text` exactly; where they do not (NFC changed the text) the ranges are
    /// HF's, which map a token to the characters it came from (a character split over several
    /// tokens gives each of them the character's range). Ids are the same either way.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Offsets)> {
        if let Some(f) = &self.inner.fast {
            let mut ids = Vec::with_capacity(text.len() / 2);
            f.encode_into(text, &mut ids);
            let (bytes, mut at) = (text.as_bytes(), 0usize);
            let mut offsets = Vec::with_capacity(ids.len());
            for &id in &ids {
                match f.token_bytes(id) {
                    Some(b) if bytes[at..].starts_with(b) => {
                        offsets.push((at, at + b.len()));
                        at += b.len();
                    }
                    _ => break,
                }
            }
            if offsets.len() == ids.len() && at == bytes.len() {
                return Ok((ids, offsets));
            }
        }
        let enc = self.hf()?.encode(text, false).map_err(|e| tok_err(&self.inner.name, e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Encodes texts in parallel on the rayon pool; results in input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// Text of `ids` (special tokens kept; ids the tokenizer does not have are skipped; bytes
    /// that do not form UTF-8 become U+FFFD), as HF decodes it.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.inner.fast {
            Some(f) => Ok(f.decode(ids)),
            None => self.hf()?.decode(ids, false).map_err(|e| tok_err(&self.inner.name, e)),
        }
    }

    /// [`Tokenizer::decode`] by HF `tokenizers`, whatever the engine (the reference).
    pub fn decode_hf(&self, ids: &[u32]) -> Result<String> {
        self.hf()?.decode(ids, false).map_err(|e| tok_err(&self.inner.name, e))
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.inner.name)
            .field("sha256", &self.inner.sha256)
            .field("engine", &self.engine())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::sync::OnceLock;

    /// Both engines of the bundled tokenizer, built once per test binary.
    pub(crate) fn qwen() -> &'static (Tokenizer, Tokenizer) {
        static T: OnceLock<(Tokenizer, Tokenizer)> = OnceLock::new();
        T.get_or_init(|| (Tokenizer::qwen25(Engine::Fast).unwrap(), Tokenizer::qwen25(Engine::Hf).unwrap()))
    }

    #[test]
    fn check_string_of_the_provenance() {
        let (fast, hf) = qwen();
        let text = "<|im_start|>user\n一种基于深度学习的专利分类方法 H04L 29/06 hello world<|im_end|>";
        let want = [
            151644, 872, 198, 101053, 104210, 102217, 100134, 9370, 102311, 70538, 39907, 472, 15, 19, 43, 220, 17, 24, 14, 15, 21, 23811,
            1879, 151645,
        ];
        assert_eq!(fast.encode(text).unwrap(), want);
        assert_eq!(hf.encode(text).unwrap(), want);
        assert_eq!(fast.engine(), "fast");
        assert_eq!(hf.engine(), "hf");
        assert_eq!(fast.token_id("<|endoftext|>"), Some(151643));
        assert_eq!(fast.sha256(), hf.sha256());
        assert_eq!(fast.sha256().len(), 64);
        assert_eq!(fast.decode(&want).unwrap(), text);
    }

    #[test]
    fn offsets_spell_the_text_and_agree_with_hf() {
        let (fast, hf) = qwen();
        for text in [
            "<|im_start|>user\n一种基于深度学习的专利分类方法 H04L 29/06 hello world<|im_end|>\n",
            "罕见字：𠀀𪚥龘 and emoji 🦀🦀, tabs\t\tand  spaces\n\n\n",
            "",
        ] {
            let (ids, offs) = fast.encode_with_offsets(text).unwrap();
            let (hf_ids, hf_offs) = hf.encode_with_offsets(text).unwrap();
            assert_eq!(ids, hf_ids, "{text}");
            assert_eq!(ids, fast.encode(text).unwrap());
            // Fast ranges tile the text byte by byte; each lies within HF's (character) range.
            let mut at = 0;
            for (&(s, e), &(hs, he)) in offs.iter().zip(&hf_offs) {
                assert_eq!(s, at, "{text}");
                assert!(e > s && hs <= s && e <= he, "{text}: ({s}, {e}) vs HF ({hs}, {he})");
                at = e;
            }
            assert_eq!(at, text.len());
        }
        // A text NFC changes (e + combining acute, the angstrom sign): the token bytes no longer
        // spell it, so the ranges are HF's.
        let text = "cafe\u{301} 1\u{212B}";
        let (ids, offs) = fast.encode_with_offsets(text).unwrap();
        assert_eq!((ids, offs), hf.encode_with_offsets(text).unwrap());
    }

    /// HF's BPE model alone (no normalizer, no pre-tokenizer) on raw bytes, through the
    /// byte-level alphabet.
    fn hf_bpe(hf: &Tokenizer, bytes: &[u8]) -> Vec<u32> {
        use tokenizers::Model;
        let chars = spec::byte_chars();
        let s: String = bytes.iter().map(|&b| chars[b as usize]).collect();
        hf.hf().unwrap().get_model().tokenize(&s).unwrap().iter().map(|t| t.id).collect()
    }

    fn fast_engine(t: &Tokenizer) -> &fast::FastBpe {
        t.inner.fast.as_ref().unwrap()
    }

    #[test]
    fn every_vocab_token_alone_bpe_encodes_like_hf() {
        // The backtracking encoder's trie holds only tokens BPE can produce from their own
        // bytes; this checks that set and each token's encoding against HF's merge loop.
        let (fast, hf) = qwen();
        let f = fast_engine(fast);
        let mut own = 0;
        for id in 0..151_643u32 {
            let bytes = f.token_bytes(id).unwrap();
            let want = hf_bpe(hf, bytes);
            assert_eq!(f.bpe_piece(bytes), want, "token {id} {bytes:?}");
            own += (want == [id]) as usize;
        }
        // In Qwen2 every token encodes to itself (other vocabularies may have tokens that do
        // not, which the encoder then never produces).
        assert_eq!(own, 151_643);
    }

    #[test]
    fn bpe_of_token_pairs_and_triples_equals_hf() {
        // Concatenated tokens make boundaries where a merge across them competes with the
        // merges inside: the compatibility test of the backtracking encoder decides these.
        let (fast, hf) = qwen();
        let f = fast_engine(fast);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(2..=3);
            let mut bytes = Vec::new();
            for _ in 0..n {
                // Favour the first ids (short, frequent tokens, where merges compete most).
                let id = if rng.random_bool(0.5) { rng.random_range(0..4000) } else { rng.random_range(0..151_643) };
                bytes.extend_from_slice(f.token_bytes(id).unwrap());
            }
            assert_eq!(f.bpe_piece(&bytes), hf_bpe(hf, &bytes), "{bytes:?}");
        }
    }

    #[test]
    fn bpe_of_random_bytes_equals_hf() {
        // Invalid UTF-8 and rare bytes included: byte-level BPE has no unknown token, every
        // byte is a token.
        let (fast, hf) = qwen();
        let f = fast_engine(fast);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let n = rng.random_range(1..40);
            let alphabet: &[u8] = if rng.random_bool(0.5) { b"  \n\tabcdeeeeeee0011" } else { &[0xe4, 0xb8, 0xad, 0x80, 0xff, 0x20, 0x61] };
            let bytes: Vec<u8> =
                (0..n).map(|_| if rng.random_bool(0.8) { alphabet[rng.random_range(0..alphabet.len())] } else { rng.random() }).collect();
            assert_eq!(f.bpe_piece(&bytes), hf_bpe(hf, &bytes), "{bytes:?}");
        }
    }

    #[test]
    fn decode_token_id_and_vocab_size_equal_hf() {
        let (fast, hf) = qwen();
        let h = hf.hf().unwrap();
        assert_eq!(fast.vocab_size(), h.get_vocab_size(true));
        for (s, id) in h.get_vocab(true) {
            assert_eq!(fast.token_id(&s), Some(id), "{s:?}");
        }
        assert_eq!(fast.token_id("not a token"), None);
        // Single ids (a byte alone is often not UTF-8), special tokens, unknown ids, and
        // random runs that cut characters.
        for id in (0..151_700u32).step_by(7).chain(151_640..151_670) {
            assert_eq!(fast.decode(&[id]).unwrap(), h.decode(&[id], false).unwrap(), "{id}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..5_000 {
            let ids: Vec<u32> = (0..rng.random_range(0..12)).map(|_| rng.random_range(0..151_670)).collect();
            assert_eq!(fast.decode(&ids).unwrap(), fast.decode_hf(&ids).unwrap(), "{ids:?}");
        }
        let text = "<|im_start|>user\n专利 🦀 e\u{301}<|im_end|>";
        assert_eq!(fast.decode(&fast.encode(text).unwrap()).unwrap(), "<|im_start|>user\n专利 🦀 \u{e9}<|im_end|>");
    }

    #[test]
    fn hf_is_built_only_when_needed() {
        let t = Tokenizer::qwen25(Engine::Auto).unwrap();
        t.encode("text").unwrap();
        t.decode(&[1, 2, 3]).unwrap();
        t.token_id("<|endoftext|>").unwrap();
        assert!(t.inner.hf.get().is_none());
        assert_eq!(t.encode_hf("text").unwrap(), t.encode("text").unwrap());
        assert!(t.inner.hf.get().is_some());
    }

    #[test]
    fn batch_keeps_order() {
        let (fast, _) = qwen();
        let texts = ["hello", "世界", "", "a b c"];
        let batch = fast.encode_batch(&texts).unwrap();
        for (t, ids) in texts.iter().zip(&batch) {
            assert_eq!(&fast.encode(t).unwrap(), ids);
        }
    }

    #[test]
    fn long_pieces_encode_like_hf() {
        let (fast, hf) = qwen();
        for text in ["a".repeat(500), "ACGT".repeat(300), "中".repeat(200), "ab".repeat(97), " ".repeat(333), "x".repeat(97)] {
            assert_eq!(fast.encode(&text).unwrap(), hf.encode(&text).unwrap(), "{}", &text[..20]);
        }
    }

    #[test]
    fn bad_tokenizer_files_are_clear_errors() {
        let e = Tokenizer::from_bytes(b"{not json", "bad.json", Engine::Auto).unwrap_err();
        assert!(e.to_string().contains("bad.json") && e.to_string().contains("not a valid tokenizer.json"), "{e}");
        let e = Tokenizer::from_bytes(&[0x28, 0xB5, 0x2F, 0xFD, 0, 1], "trunc.json.zst", Engine::Auto).unwrap_err();
        assert!(e.to_string().contains("bad zstd data"), "{e}");
        let e = Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json"), Engine::Auto).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tokenizer.json"), "{e}");
    }

    #[test]
    fn fast_engine_refuses_other_tokenizers_and_auto_falls_back_to_hf() {
        // A WordLevel tokenizer: valid for HF, not for the fast path.
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#;
        let e = Tokenizer::from_bytes(json.as_bytes(), "wl.json", Engine::Fast).unwrap_err();
        assert!(e.to_string().contains("does not support"), "{e}");
        let t = Tokenizer::from_bytes(json.as_bytes(), "wl.json", Engine::Auto).unwrap();
        assert_eq!(t.engine(), "hf");
        assert_eq!(t.encode("hello world again").unwrap(), [1, 2, 0]);
    }
}
