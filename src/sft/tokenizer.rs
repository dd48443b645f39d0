//! The one place SFT touches a tokenizer: the crate's [`crate::tokenize::Tokenizer`] (HF
//! `tokenizers`, or the exact fast path for Qwen2-style BPE: same ids) loaded from a
//! `tokenizer.json` (optionally zstd-compressed), encoding text with byte offsets for the
//! loss mask.

use std::path::Path;

use crate::error::Result;
use crate::tokenize::{Engine, Tokenizer};

/// An encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Byte range of each token in the text.
    pub offsets: Vec<(usize, usize)>,
}

/// A loaded tokenizer.
pub struct SftTokenizer {
    inner: Tokenizer,
    /// sha256 of the (decompressed) `tokenizer.json`, as in token shard manifests.
    pub sha256: String,
}

impl SftTokenizer {
    /// Loads `tokenizer.json` or `tokenizer.json.zst` with the `auto` engine.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, Engine::Auto)
    }

    /// Loads a tokenizer file with the given engine.
    pub fn load_with(path: &Path, engine: Engine) -> Result<Self> {
        let inner = Tokenizer::from_file(path, engine)?;
        let sha256 = inner.sha256().to_string();
        Ok(Self { inner, sha256 })
    }

    /// Token ids of `text` (special tokens written in the text are matched, nothing is added)
    /// and each token's byte range in `text`.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let (ids, offsets) = self.inner.encode_with_offsets(text)?;
        Ok(Encoded { ids, offsets })
    }

    /// The id of a token string (e.g. `<|endoftext|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_id(token)
    }

    /// The engine in use: `fast` or `hf`.
    pub fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    /// The tokenizer's name (its file path), for manifests.
    pub fn name(&self) -> &str {
        self.inner.name()
    }
}
