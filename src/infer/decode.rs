//! Incremental detokenization for streaming: text is released as soon as it is complete.
//!
//! Byte-level BPE tokens can end inside a UTF-8 character (a CJK character or an emoji is often
//! two or three tokens); decoding such a prefix gives U+FFFD. The stream decodes a window of
//! recent tokens and releases only the part beyond what it already released, and only when the
//! window does not end in U+FFFD (the approach of HF text-generation-inference). The pieces
//! concatenate to the decoding of all tokens.

use crate::tokenize::Tokenizer;

use super::{tokenizer, InferError, Result};

/// Streams the text of a growing token sequence.
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    /// Start of the decoding window: text before it has been released and is complete.
    prefix: usize,
    /// Tokens up to here have been released.
    read: usize,
}

impl<'t> TextStream<'t> {
    /// A stream over `tok`.
    pub fn new(tok: &'t Tokenizer) -> Self {
        TextStream { tok, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let released = tokenizer::decode(self.tok, &self.ids[self.prefix..self.read])?;
        let window = tokenizer::decode(self.tok, &self.ids[self.prefix..])?;
        if window.len() > released.len() && !window.ends_with('\u{FFFD}') {
            let new = window
                .strip_prefix(released.as_str())
                .ok_or_else(|| InferError::Tokenizer {
                    origin: "stream".into(),
                    message: format!("decoding of {:?} is not prefix-stable", &self.ids[self.prefix..]),
                })?
                .to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// The text not yet released (bytes that never formed a character come out as U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let released = tokenizer::decode(self.tok, &self.ids[self.prefix..self.read])?;
        let window = tokenizer::decode(self.tok, &self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        match window.strip_prefix(released.as_str()) {
            Some("") => Ok(None),
            Some(rest) => Ok(Some(rest.to_string())),
            None => Ok(Some(window)),
        }
    }

    /// All tokens pushed.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut s = TextStream::new(tok);
        let mut pieces = Vec::new();
        for &id in ids {
            pieces.extend(s.push(id).unwrap());
        }
        pieces.extend(s.finish().unwrap());
        pieces
    }

    #[test]
    fn pieces_never_split_a_character_and_concatenate_to_the_text() {
        let tok = tokenizer::bundled().unwrap();
        let text = "一种基于深度学习的专利分类方法 H04L 29/06 🚀🧬 𠀀鑫龘 café — 量子隐形传态";
        let ids = tokenizer::encode(&tok, text).unwrap();
        // The text must contain tokens that end inside a character, or the test proves nothing.
        let partial = (1..=ids.len()).filter(|&n| tokenizer::decode(&tok, &ids[..n]).unwrap().ends_with('\u{FFFD}')).count();
        assert!(partial > 0, "no token of the sample splits a character");
        let pieces = stream_all(&tok, &ids);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn dangling_bytes_come_out_at_finish() {
        let tok = tokenizer::bundled().unwrap();
        let ids = tokenizer::encode(&tok, "ab𠀀").unwrap();
        // Drop the last token: the rare (4-byte) character is cut, its first bytes can only come out lossily.
        let cut = &ids[..ids.len() - 1];
        assert!(tokenizer::decode(&tok, cut).unwrap().ends_with('\u{FFFD}'));
        let pieces = stream_all(&tok, cut);
        assert_eq!(pieces.concat(), tokenizer::decode(&tok, cut).unwrap());
        assert!(pieces.last().unwrap().contains('\u{FFFD}'));
    }
}
