//! The tokenizer of a checkpoint: its own `tokenizer.json` when it has one, else the Qwen2.5
//! tokenizer bundled with coretech (`fixtures/tokenizers/qwen2.5`, see its PROVENANCE.md).

use std::path::Path;

use tokenizers::Tokenizer;

use super::{InferError, Result};

/// Where a tokenizer came from, for messages and reports.
pub const BUNDLED_ORIGIN: &str = "bundled Qwen2.5";

/// The bundled Qwen2.5 `tokenizer.json` bytes (zstd-compressed in the binary, 1.5 MB).
pub fn bundled_qwen25_tokenizer_json() -> std::io::Result<Vec<u8>> {
    zstd::decode_all(&include_bytes!("../../fixtures/tokenizers/qwen2.5/tokenizer.json.zst")[..])
}

/// The bundled Qwen2.5 tokenizer.
pub fn bundled() -> Result<Tokenizer> {
    let err = |message: String| InferError::Tokenizer { origin: BUNDLED_ORIGIN.into(), message };
    let json = bundled_qwen25_tokenizer_json().map_err(|e| err(format!("decompressing: {e}")))?;
    Tokenizer::from_bytes(json).map_err(|e| err(e.to_string()))
}

/// `dir/tokenizer.json` when present, else the bundled Qwen2.5 tokenizer. Returns the
/// tokenizer and where it came from.
pub fn for_checkpoint(dir: &Path) -> Result<(Tokenizer, String)> {
    let path = dir.join("tokenizer.json");
    if path.is_file() {
        let origin = path.display().to_string();
        let tok = Tokenizer::from_file(&path).map_err(|e| InferError::Tokenizer { origin: origin.clone(), message: e.to_string() })?;
        Ok((tok, origin))
    } else {
        Ok((bundled()?, BUNDLED_ORIGIN.to_string()))
    }
}

/// Encodes `text` as-is (special-token strings such as `<|im_start|>` become their ids; no
/// BOS/EOS are added).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| InferError::Tokenizer { origin: "encode".into(), message: e.to_string() })
}

/// Decodes `ids`, special tokens included (unknown ids are skipped by `tokenizers`).
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, false).map_err(|e| InferError::Tokenizer { origin: "decode".into(), message: e.to_string() })
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
        assert_eq!(tok.get_vocab_size(true), 151_665);
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
