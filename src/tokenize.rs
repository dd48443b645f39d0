//! Tokenization with any HF `tokenizer.json` (the Qwen2.5 tokenizer ships with the project and
//! is the default). Two engines give the same ids:
//! - `hf`: the `tokenizers` crate, for any tokenizer;
//! - `fast`: an exact hand-written path for byte-level BPE of the Qwen2 kind ([`fast`]), several
//!   times faster; `auto` picks it whenever the tokenizer qualifies.
//!
//! Text is encoded without added special tokens (`add_special_tokens = false`, as CPT packing
//! places its own `<|endoftext|>`), but special-token strings inside the text are recognised as
//! HF does. Batches are encoded on rayon; the output order is the input order.

mod fast;
pub mod pretok;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    sha256: String,
    hf: tokenizers::Tokenizer,
    fast: Option<fast::FastBpe>,
}

fn tok_err(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("tokenizer {name}: {e}"))
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
        Self::from_bytes(QWEN25_ZST, QWEN25, engine)
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
        let sha256 = crate::core::fsio::hex(&Sha256::digest(&json));
        let mut hf = tokenizers::Tokenizer::from_bytes(&json).map_err(|e| tok_err(name, format!("not a valid tokenizer.json: {e}")))?;
        // Encoding never truncates or pads: packing decides lengths.
        hf.with_truncation(None).map_err(|e| tok_err(name, e))?;
        hf.with_padding(None);
        let fast = match engine {
            Engine::Hf => None,
            Engine::Auto | Engine::Fast => {
                let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| tok_err(name, e))?;
                match fast::FastBpe::from_json(&value) {
                    Ok(f) => Some(f),
                    Err(fast::Unsupported(why)) if engine == Engine::Auto => {
                        tracing::info!("tokenizer {name}: fast path does not apply ({why}); using HF tokenizers");
                        None
                    }
                    Err(fast::Unsupported(why)) => {
                        return Err(tok_err(name, format!("engine \"fast\" does not support this tokenizer: {why}")))
                    }
                }
            }
        };
        Ok(Tokenizer { inner: Arc::new(Inner { name: name.to_string(), sha256, hf, fast }) })
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

    /// Id of a token string (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.hf.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.hf.get_vocab_size(true)
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
        let enc = self.inner.hf.encode_fast(text, false).map_err(|e| tok_err(&self.inner.name, e))?;
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
        let enc = self.inner.hf.encode(text, false).map_err(|e| tok_err(&self.inner.name, e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Encodes texts in parallel on the rayon pool; results in input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.hf.decode(ids, false).map_err(|e| tok_err(&self.inner.name, e))
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
    fn long_pieces_take_the_heap_path() {
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
