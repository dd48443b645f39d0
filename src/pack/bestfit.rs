//! Whole-document packing by best fit: each example goes, whole, into the open row with the
//! least free space that still holds it; when none does, it opens a new row, and when more than
//! `max_open` rows are open the fullest one is closed (emitted, padded). Examples longer than
//! `seq_len` are the one exception to "never split": they are cut at multiples of `seq_len`
//! tokens from their start; every full piece is a row of its own and the remainder is placed
//! by best fit like any example.
//!
//! This is the SFT packer too: examples carry their loss mask and curriculum stage, and a row
//! only ever holds examples of one stage. Rows are emitted in a deterministic order (closing
//! order, then creation order at [`BestFit::finish`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::shard::tokens::Row;

/// One example (a document with its closing token, or a rendered SFT conversation).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Example {
    /// Token ids, complete (closing token included).
    pub ids: Vec<u32>,
    /// Per-token loss mask (1 = counts), same length as `ids`; None = every token counts.
    pub loss_mask: Option<Vec<u8>>,
    /// Source name recorded for the segment.
    pub source: String,
    /// Curriculum stage (rows never mix stages).
    pub stage: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Bin {
    seq: u64,
    stage: Option<u32>,
    ids: Vec<u32>,
    mask: Vec<u8>,
    seg_lens: Vec<u32>,
    sources: Vec<String>,
}

/// The streaming best-fit packer. Its state serializes (a build can resume between examples).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BestFit {
    seq_len: usize,
    pad: u32,
    max_open: usize,
    with_mask: bool,
    next_seq: u64,
    /// Open rows by creation sequence number.
    bins: std::collections::BTreeMap<u64, Bin>,
    /// (stage key, free space, seq) of every open row, for the best-fit search.
    #[serde(skip)]
    index: BTreeSet<(u64, usize, u64)>,
}

fn stage_key(stage: Option<u32>) -> u64 {
    stage.map(|s| s as u64 + 1).unwrap_or(0)
}

impl BestFit {
    /// A packer for rows of `seq_len` tokens padded with `pad`, keeping at most `max_open` rows
    /// open; `with_mask` writes a loss mask for every row (padding 0).
    pub fn new(seq_len: usize, pad: u32, max_open: usize, with_mask: bool) -> Self {
        assert!(seq_len > 0 && max_open > 0, "seq_len and max_open must be positive");
        Self { seq_len, pad, max_open, with_mask, next_seq: 0, bins: Default::default(), index: BTreeSet::new() }
    }

    /// Rebuilds the search index after deserializing.
    pub fn reindex(&mut self) {
        self.index = self.bins.values().map(|b| (stage_key(b.stage), self.seq_len - b.ids.len(), b.seq)).collect();
    }

    /// Adds one example; closed rows go to `out`.
    pub fn push(&mut self, ex: &Example, out: &mut Vec<Row>) {
        if let Some(m) = &ex.loss_mask {
            assert_eq!(m.len(), ex.ids.len(), "loss mask length differs from the ids");
        }
        let n = ex.ids.len();
        let mut start = 0;
        // Full pieces of an over-long example: rows of their own.
        while n - start >= self.seq_len {
            let end = start + self.seq_len;
            let mut bin = self.new_bin(ex.stage);
            self.add(&mut bin, ex, start, end);
            out.push(self.close(bin));
            start = end;
        }
        if start == n {
            return;
        }
        let len = n - start;
        let key = stage_key(ex.stage);
        let found = self.index.range((key, len, 0)..(key, self.seq_len + 1, 0)).next().copied();
        match found {
            Some(entry) => {
                self.index.remove(&entry);
                let mut bin = self.bins.remove(&entry.2).expect("indexed bin exists");
                self.add(&mut bin, ex, start, n);
                self.put(bin, out);
            }
            None => {
                let mut bin = self.new_bin(ex.stage);
                self.add(&mut bin, ex, start, n);
                self.put(bin, out);
                if self.bins.len() > self.max_open {
                    // Close the fullest row (least free space; the oldest among equals).
                    let fullest = self.bins.values().map(|b| (self.seq_len - b.ids.len(), b.seq)).min().expect("bins not empty");
                    let bin = self.bins.remove(&fullest.1).expect("bin exists");
                    self.index.remove(&(stage_key(bin.stage), fullest.0, bin.seq));
                    out.push(self.close(bin));
                }
            }
        }
    }

    fn new_bin(&mut self, stage: Option<u32>) -> Bin {
        self.next_seq += 1;
        Bin {
            seq: self.next_seq,
            stage,
            ids: Vec::with_capacity(self.seq_len),
            mask: Vec::new(),
            seg_lens: Vec::new(),
            sources: Vec::new(),
        }
    }

    fn add(&self, bin: &mut Bin, ex: &Example, start: usize, end: usize) {
        bin.ids.extend_from_slice(&ex.ids[start..end]);
        if self.with_mask {
            match &ex.loss_mask {
                Some(m) => bin.mask.extend_from_slice(&m[start..end]),
                None => bin.mask.extend(std::iter::repeat_n(1u8, end - start)),
            }
        }
        bin.seg_lens.push((end - start) as u32);
        bin.sources.push(ex.source.clone());
    }

    /// Keeps a bin open, or closes it when full.
    fn put(&mut self, bin: Bin, out: &mut Vec<Row>) {
        if bin.ids.len() == self.seq_len {
            out.push(self.close(bin));
        } else {
            self.index.insert((stage_key(bin.stage), self.seq_len - bin.ids.len(), bin.seq));
            self.bins.insert(bin.seq, bin);
        }
    }

    fn close(&self, mut bin: Bin) -> Row {
        bin.ids.resize(self.seq_len, self.pad);
        let loss_mask = if self.with_mask {
            bin.mask.resize(self.seq_len, 0);
            Some(bin.mask)
        } else {
            None
        };
        Row { input_ids: bin.ids, seg_lens: bin.seg_lens, loss_mask, sources: bin.sources, stage: bin.stage }
    }

    /// Rows still open.
    pub fn open_rows(&self) -> usize {
        self.bins.len()
    }

    /// Closes every open row, oldest first.
    pub fn finish(mut self, out: &mut Vec<Row>) {
        let bins = std::mem::take(&mut self.bins);
        for (_, bin) in bins {
            out.push(self.close(bin));
        }
    }
}

/// Packs examples whole into rows of `seq_len` (the library entry point for SFT): best fit
/// with at most `max_open` open rows, padding with `pad`, a loss mask on every row.
pub fn pack_examples<'a>(examples: impl IntoIterator<Item = &'a Example>, seq_len: usize, pad: u32, max_open: usize) -> Vec<Row> {
    let mut bf = BestFit::new(seq_len, pad, max_open, true);
    let mut out = Vec::new();
    for ex in examples {
        bf.push(ex, &mut out);
    }
    bf.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], src: &str) -> Example {
        Example { ids: ids.to_vec(), loss_mask: None, source: src.into(), stage: None }
    }

    #[test]
    fn best_fit_fills_the_tightest_row() {
        let mut bf = BestFit::new(8, 0, 4, false);
        let mut out = Vec::new();
        bf.push(&ex(&[1; 5], "a"), &mut out); // bin1: 5 (3 free)
        bf.push(&ex(&[2; 6], "b"), &mut out); // bin2: 6 (2 free)
        bf.push(&ex(&[3; 2], "c"), &mut out); // best fit: bin2 (2 free) -> full, closed
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].input_ids, [2, 2, 2, 2, 2, 2, 3, 3]);
        assert_eq!(out[0].seg_lens, [6, 2]);
        bf.finish(&mut out);
        assert_eq!(out[1].input_ids, [1, 1, 1, 1, 1, 0, 0, 0]);
        assert_eq!(out[1].seg_lens, [5]);
    }

    #[test]
    fn long_examples_are_cut_at_multiples_of_seq_len() {
        let mut out = Vec::new();
        let mut bf = BestFit::new(4, 0, 2, true);
        let ids: Vec<u32> = (1..=10).collect();
        bf.push(&Example { ids, loss_mask: Some(vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1]), source: "x".into(), stage: Some(1) }, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].input_ids, [1, 2, 3, 4]);
        assert_eq!(out[0].loss_mask.as_deref(), Some(&[0, 0, 1, 1][..]));
        assert_eq!(out[1].input_ids, [5, 6, 7, 8]);
        bf.finish(&mut out);
        assert_eq!(out[2].input_ids, [9, 10, 0, 0]);
        assert_eq!(out[2].loss_mask.as_deref(), Some(&[1, 1, 0, 0][..]));
        assert_eq!(out[2].stage, Some(1));
    }

    #[test]
    fn stages_never_share_a_row_and_open_rows_are_bounded() {
        let mut bf = BestFit::new(10, 0, 2, true);
        let mut out = Vec::new();
        let stages = [1u32, 2, 1, 2, 3];
        for (i, stage) in stages.iter().enumerate() {
            bf.push(&Example { ids: vec![i as u32 + 1; 3], loss_mask: None, source: "s".into(), stage: Some(*stage) }, &mut out);
            assert!(bf.open_rows() <= 2);
        }
        bf.finish(&mut out);
        for r in &out {
            let s = r.stage.unwrap();
            // Example i has ids i+1: every real token of the row comes from an example of its stage.
            assert!(r.input_ids.iter().filter(|&&t| t != 0).all(|&t| stages[t as usize - 1] == s), "{r:?}");
        }
        let total: u32 = out.iter().map(|r| r.seg_lens.iter().sum::<u32>()).sum();
        assert_eq!(total, 15);
    }
}
