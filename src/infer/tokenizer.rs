//! The tokenizer of a checkpoint: its own `tokenizer.json` when it has one, else the Qwen2.5
//! tokenizer bundled with coretech (`fixtures/tokenizers/qwen2.5`, see its PROVENANCE.md). Both
//! load through [`crate::tokenize::Tokenizer`] (the fast engine where it applies), so inference
//! encodes prompts exactly as packing and SFT encode training text.

use std::path::Path;

use crate::tokenize::{self, Engine, Tokenizer};

use super::{InferError, Result};

/// Where a tokenizer came from, for messages and reports.
pub const BUNDLED_ORIGIN: &str = "bundled Qwen2.5";

/// The bundled Qwen2.5 `tokenizer.json` bytes (decompressed).
pub fn bundled_qwen25_tokenizer_json() -> Result<Vec<u8>> {
    tokenize::bundled_json().map_err(|e| InferError::Tokenizer { origin: BUNDLED_ORIGIN.into(), message: e.to_string() })
}

/// The bundled Qwen2.5 tokenizer.
pub fn bundled() -> Result<Tokenizer> {
    Tokenizer::qwen25(Engine::Auto).map_err(|e| InferError::Tokenizer { origin: BUNDLED_ORIGIN.into(), message: e.to_string() })
}

/// `dir/tokenizer.json` when present, else the bundled Qwen2.5 tokenizer. Returns the
/// tokenizer and where it came from.
pub fn for_checkpoint(dir: &Path) -> Result<(Tokenizer, String)> {
    let path = dir.join("tokenizer.json");
    if path.is_file() {
        let origin = path.display().to_string();
        let tok = Tokenizer::from_file(&path, Engine::Auto)
            .map_err(|e| InferError::Tokenizer { origin: origin.clone(), message: e.to_string() })?;
        Ok((tok, origin))
    } else {
        Ok((bundled()?, BUNDLED_ORIGIN.to_string()))
    }
}

/// Encodes `text` as-is (special-token strings such as `<|im_start|>` become their ids; no
/// BOS/EOS are added).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode(text).map_err(|e| InferError::Tokenizer { origin: "encode".into(), message: e.to_string() })
}

/// Decodes `ids`, special tokens included (ids the tokenizer does not have are skipped).
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids).map_err(|e| InferError::Tokenizer { origin: "decode".into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_tokenizer_encodes_the_provenance_check_string() {
        let tok = bundled().unwrap();
        let ids = encode(&tok, "<|im_start|>user\n一种基于深度学习的专利分类方法 H04L 29/06 hello world<|im_end|>").unwrap();
        // From fixtures/tokenizers/qwen2.5/PROVENANCE.md (HF `tokenizers`).
        let want = [
            151644, 872, 198, 101053, 104210, 102217, 100134, 9370, 102311, 70538, 39907, 472, 15, 19, 43, 220, 17, 24, 14, 15, 21, 23811,
            1879, 151645,
        ];
        assert_eq!(ids, want);
        assert_eq!(tok.vocab_size(), 151_665);
        assert_eq!(tok.engine(), "fast");
    }

    #[test]
    fn missing_tokenizer_json_falls_back_to_bundled_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (_, origin) = for_checkpoint(dir.path()).unwrap();
        assert_eq!(origin, BUNDLED_ORIGIN);
    }

    #[test]
    fn malformed_tokenizer_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
        let err = for_checkpoint(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
