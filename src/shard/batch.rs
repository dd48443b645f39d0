//! The training batch the loader yields and the trainer consumes: packed rows with their
//! segment structure, so the trainer can reset positions and mask attention and loss at
//! document (or example) boundaries.

/// A batch of `batch` packed rows of `seq_len` tokens, row-major.
///
/// Loss convention: the model at position `t` predicts token `t + 1`. That prediction counts
/// iff `loss_mask[t + 1] == 1` and `segment_ids[t + 1] == segment_ids[t]` (no prediction across
/// a document boundary). Padding tokens have `loss_mask == 0` and a segment of their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Rows in the batch.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Token ids, `batch * seq_len`.
    pub input_ids: Vec<u32>,
    /// Position of each token within its segment (restarts at 0 at each segment start).
    pub position_ids: Vec<u32>,
    /// Segment index of each token within its row (0, 1, 2, …); attention never crosses segments.
    pub segment_ids: Vec<u32>,
    /// 1 where the token is a target that counts in the loss (CPT: every real token; SFT: answer
    /// tokens and the `<|im_end|>` closing them), 0 elsewhere (prompts, padding).
    pub loss_mask: Vec<u8>,
    /// Curriculum stage of each row, when the shards have one.
    pub stage: Option<Vec<u32>>,
}

impl Batch {
    /// Builds the position and segment ids of one row from its `seg_lens` (which sum to the row
    /// length; tokens past the sum are padding and get a final segment of their own).
    pub fn row_layout(seg_lens: &[u32], seq_len: usize, positions: &mut Vec<u32>, segments: &mut Vec<u32>) {
        let mut seg = 0u32;
        let mut filled = 0usize;
        for &len in seg_lens {
            for p in 0..len {
                if filled == seq_len {
                    break;
                }
                positions.push(p);
                segments.push(seg);
                filled += 1;
            }
            seg += 1;
        }
        let mut p = 0;
        while filled < seq_len {
            positions.push(p);
            segments.push(seg);
            p += 1;
            filled += 1;
        }
    }

    /// Cumulative segment boundaries of the flattened batch (`cu_seqlens` of varlen attention):
    /// `[0, end of segment 0, …, batch * seq_len]`.
    pub fn cu_seqlens(&self) -> Vec<u32> {
        let mut cu = vec![0u32];
        for i in 1..self.input_ids.len() {
            if i % self.seq_len == 0 || self.segment_ids[i] != self.segment_ids[i - 1] {
                cu.push(i as u32);
            }
        }
        cu.push(self.input_ids.len() as u32);
        cu
    }

    /// Number of predictions that count in the loss.
    pub fn target_count(&self) -> usize {
        let mut n = 0;
        for r in 0..self.batch {
            for t in 0..self.seq_len.saturating_sub(1) {
                let i = r * self.seq_len + t;
                if self.loss_mask[i + 1] == 1 && self.segment_ids[i + 1] == self.segment_ids[i] {
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_resets_positions_and_pads() {
        let (mut p, mut s) = (Vec::new(), Vec::new());
        Batch::row_layout(&[3, 2], 7, &mut p, &mut s);
        assert_eq!(p, [0, 1, 2, 0, 1, 0, 1]);
        assert_eq!(s, [0, 0, 0, 1, 1, 2, 2]);
        let b = Batch {
            batch: 1,
            seq_len: 7,
            input_ids: vec![1; 7],
            position_ids: p,
            segment_ids: s,
            loss_mask: vec![1, 1, 1, 1, 1, 0, 0],
            stage: None,
        };
        assert_eq!(b.cu_seqlens(), [0, 3, 5, 7]);
        // Targets: 1,2 (seg 0), 4 (seg 1); the pad segment has mask 0.
        assert_eq!(b.target_count(), 3);
    }
}
