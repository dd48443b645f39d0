//! CPT packing: every document's tokens followed by `<|endoftext|>`, concatenated and cut into
//! rows of exactly `seq_len`. A document that crosses a row boundary continues as the first
//! segment of the next row. No token is dropped; only the last row of the whole build can be
//! partial, and [`CptPacker::finish`] pads it (padding is outside every segment, so it carries
//! no loss).

use serde::{Deserialize, Serialize};

use crate::shard::tokens::Row;

/// The streaming CPT packer. Its state (the row being filled) serializes, so a build can stop
/// and resume between documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CptPacker {
    seq_len: usize,
    eos: u32,
    ids: Vec<u32>,
    seg_lens: Vec<u32>,
    sources: Vec<String>,
}

impl CptPacker {
    /// A packer for rows of `seq_len` tokens, closing each document with `eos`.
    pub fn new(seq_len: usize, eos: u32) -> Self {
        assert!(seq_len > 0, "seq_len must be positive");
        Self { seq_len, eos, ids: Vec::with_capacity(seq_len), seg_lens: Vec::new(), sources: Vec::new() }
    }

    /// Adds one document (its ids, without the closing token); full rows go to `out`.
    pub fn push(&mut self, doc: &[u32], source: &str, out: &mut Vec<Row>) {
        let mut rest = doc;
        let mut eos_left = true;
        while !rest.is_empty() || eos_left {
            let space = self.seq_len - self.ids.len();
            let take = rest.len().min(space);
            self.ids.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let mut seg = take;
            if rest.is_empty() && eos_left && self.ids.len() < self.seq_len {
                self.ids.push(self.eos);
                eos_left = false;
                seg += 1;
            }
            if seg > 0 {
                self.seg_lens.push(seg as u32);
                self.sources.push(source.to_string());
            }
            if self.ids.len() == self.seq_len {
                out.push(self.take_row());
            }
        }
    }

    fn take_row(&mut self) -> Row {
        Row {
            input_ids: std::mem::replace(&mut self.ids, Vec::with_capacity(self.seq_len)),
            seg_lens: std::mem::take(&mut self.seg_lens),
            loss_mask: None,
            sources: std::mem::take(&mut self.sources),
            stage: None,
        }
    }

    /// Tokens waiting in the partial row.
    pub fn pending(&self) -> usize {
        self.ids.len()
    }

    /// The last, partial row padded with `pad` (None when the stream ended on a row boundary).
    pub fn finish(mut self, pad: u32) -> Option<Row> {
        if self.ids.is_empty() {
            return None;
        }
        self.ids.resize(self.seq_len, pad);
        Some(self.take_row())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_rows_and_records_segments() {
        let mut p = CptPacker::new(4, 0);
        let mut out = Vec::new();
        p.push(&[1, 2, 3], "a", &mut out); // 1 2 3 E
        p.push(&[4, 5, 6, 7, 8], "b", &mut out); // 4 5 6 7 | 8 E
        p.push(&[], "c", &mut out); // E (an empty document still closes)
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].input_ids, [1, 2, 3, 0]);
        assert_eq!(out[0].seg_lens, [4]);
        assert_eq!(out[1].input_ids, [4, 5, 6, 7]);
        assert_eq!(out[1].seg_lens, [4]);
        assert_eq!(out[1].sources, ["b"]);
        let last = p.finish(99).unwrap();
        assert_eq!(last.input_ids, [8, 0, 0, 99]);
        assert_eq!(last.seg_lens, [2, 1]);
        assert_eq!(last.sources, ["b", "c"]);
    }

    #[test]
    fn eos_that_falls_on_the_boundary_opens_the_next_row() {
        let mut p = CptPacker::new(3, 0);
        let mut out = Vec::new();
        p.push(&[1, 2, 3], "a", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seg_lens, [3]);
        assert_eq!(p.pending(), 1);
        let last = p.finish(9).unwrap();
        assert_eq!(last.input_ids, [0, 9, 9]);
        assert_eq!(last.seg_lens, [1]);
    }
}
