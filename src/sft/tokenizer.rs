//! The one place SFT touches a tokenizer: load a HF `tokenizer.json` (optionally `.zst`) and
//! encode text with byte offsets. TODO(lead): point this at `crate::tokenize` once it lands.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

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
    /// sha256 of the tokenizer file as given (for the manifest).
    pub sha256: String,
}

impl SftTokenizer {
    /// Loads `tokenizer.json` or `tokenizer.json.zst`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let sha256 = crate::shard::writer::hex(&Sha256::digest(&bytes));
        let json = if path.extension().is_some_and(|e| e == "zst") {
            zstd::decode_all(&bytes[..]).map_err(|e| Error::io(path, e))?
        } else {
            bytes
        };
        let inner = Tokenizer::from_bytes(&json).map_err(|e| Error::Other(format!("{}: not a tokenizer.json: {e}", path.display())))?;
        Ok(Self { inner, sha256 })
    }

    /// Token ids of `text` (special tokens written in the text are matched, nothing is added)
    /// and each token's byte range in `text`.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Other(format!("tokenizer: {e}")))?;
        Ok(Encoded { ids: enc.get_ids().to_vec(), offsets: enc.get_offsets().to_vec() })
    }

    /// The id of a token string (e.g. `<|endoftext|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
