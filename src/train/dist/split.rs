//! Each rank's share of a batch source that does not split itself (the synthetic source, fixed
//! batches). The rule is the shard loader's (`shard::reader`): global step `s` covers
//! micro-batches `s·W … s·W + W − 1` of the source, and rank `r` takes micro-batch `s·W + r`, so
//! with per-rank batch `B` rank `r` reads rows `[s·W·B + r·B, s·W·B + (r+1)·B)` — the rows a single
//! process with batch `W·B` (or `grad_accum` W) reads in step `s`.
//!
//! Every rank reads the whole source and keeps its share (cheap for synthetic data; a source that
//! can seek should split itself). A final group with fewer than W micro-batches ends the data on
//! every rank alike, so no rank waits for a step the others never take. The cursor is the inner
//! source's after whole groups — the same on every rank — plus the world size, which a resume
//! must match.

use super::super::data::BatchSource;
use super::super::error::{Result, TrainError};
use crate::shard::Batch;

/// Rank `rank` of `world`'s share of `inner`.
pub struct RankSplit {
    inner: Box<dyn BatchSource>,
    rank: usize,
    world: usize,
}

impl RankSplit {
    /// The share of `rank` (below `world`).
    pub fn new(inner: Box<dyn BatchSource>, rank: usize, world: usize) -> Result<RankSplit> {
        if world == 0 || rank >= world {
            return Err(TrainError::config("distributed", format!("rank {rank} of world size {world}")));
        }
        Ok(RankSplit { inner, rank, world })
    }
}

impl BatchSource for RankSplit {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        let mut mine = None;
        for r in 0..self.world {
            match self.inner.next_batch()? {
                Some(b) if r == self.rank => mine = Some(b),
                Some(_) => {}
                None => return Ok(None),
            }
        }
        Ok(mine)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "rank_split", "world_size": self.world, "inner": self.inner.state() })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.get("kind").and_then(|k| k.as_str()) != Some("rank_split") {
            return Err(TrainError::Data(format!(
                "the checkpoint's loader cursor is not from a data-parallel run ({state}); resume it with distributed.mode = \"none\", or start a new run from its weights (model.from)"
            )));
        }
        let w = state.get("world_size").and_then(|v| v.as_u64()).unwrap_or(0);
        if w != self.world as u64 {
            return Err(TrainError::Data(format!(
                "the checkpoint was written by a run of {w} ranks, this run has {}: exact resume needs the same world size (start a new run from its weights with model.from to change it)",
                self.world
            )));
        }
        let inner = state.get("inner").ok_or_else(|| TrainError::Data(format!("rank-split cursor without an inner cursor: {state}")))?;
        self.inner.restore(inner)
    }

    fn total_batches(&self) -> Option<u64> {
        self.inner.total_batches().map(|n| n / self.world as u64)
    }

    /// Each rank's micro-batch `k` is group `k` of the inner source (micro-batches `k·W … k·W + W − 1`)
    /// and belongs to the stage of the group's last micro-batch, as the step's global stage (the
    /// highest over ranks) does: with the inner stages ending at micro-batch `E_i`, stage `i`
    /// holds `⌊E_i/W⌋ − ⌊E_{i−1}/W⌋` of a rank's micro-batches. The same numbers on every rank
    /// (they depend on the inner source and W only), so every rank places each stage's schedule
    /// at the same step, the step a single process with `grad_accum · W` places it.
    fn stage_batches(&self) -> Option<Vec<u64>> {
        let w = self.world as u64;
        let mut end = 0u64;
        let mut prev = 0u64;
        Some(
            self.inner
                .stage_batches()?
                .into_iter()
                .map(|n| {
                    end += n;
                    let k = end / w - prev;
                    prev = end / w;
                    k
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::VecSource;

    fn one(t: u32) -> Batch {
        Batch { batch: 1, seq_len: 1, input_ids: vec![t], position_ids: vec![0], segment_ids: vec![0], loss_mask: vec![1], stage: None }
    }

    fn ids(s: &mut dyn BatchSource) -> Vec<u32> {
        std::iter::from_fn(|| s.next_batch().unwrap()).map(|b| b.input_ids[0]).collect()
    }

    #[test]
    fn ranks_take_interleaved_batches_and_drop_a_partial_group() {
        let src = || Box::new(VecSource::new((0..7).map(one).collect(), 1));
        let mut a = RankSplit::new(src(), 0, 3).unwrap();
        let mut b = RankSplit::new(src(), 2, 3).unwrap();
        assert_eq!(a.total_batches(), Some(2));
        assert_eq!(ids(&mut a), [0, 3]);
        assert_eq!(ids(&mut b), [2, 5]);
        // Batch 6 would make a group of one: no rank gets it.
        let mut c = RankSplit::new(src(), 0, 1).unwrap();
        assert_eq!(ids(&mut c), (0..7).collect::<Vec<_>>());
    }

    /// Fixed batches whose stage sizes are known: `sizes[i]` micro-batches of stage `i`.
    struct Staged(VecSource, Vec<u64>);

    impl BatchSource for Staged {
        fn next_batch(&mut self) -> Result<Option<Batch>> {
            self.0.next_batch()
        }
        fn state(&self) -> serde_json::Value {
            self.0.state()
        }
        fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
            self.0.restore(state)
        }
        fn total_batches(&self) -> Option<u64> {
            self.0.total_batches()
        }
        fn stage_batches(&self) -> Option<Vec<u64>> {
            Some(self.1.clone())
        }
    }

    #[test]
    fn a_ranks_stage_sizes_place_each_stage_where_one_process_with_w_times_the_accumulation_does() {
        use crate::train::trainer::stage_steps;
        let staged = |n: u32, sizes: &[u64], r: usize, w: usize| {
            let src = Staged(VecSource::new((0..n).map(one).collect(), 1), sizes.to_vec());
            RankSplit::new(Box::new(src), r, w).unwrap()
        };
        // 12 micro-batches in stages of 3, 5 and 4: every world size below 5 divides them.
        let sizes = [3, 5, 4];
        for world in 1..=4usize {
            let per_rank: Vec<Vec<u64>> = (0..world).map(|r| staged(12, &sizes, r, world).stage_batches().unwrap()).collect();
            assert!(per_rank.iter().all(|p| *p == per_rank[0]), "world {world}: {per_rank:?}");
            let rank = &per_rank[0];
            assert_eq!(Some(rank.iter().sum::<u64>()), staged(12, &sizes, 0, world).total_batches(), "world {world}");
            for ga in 1..=3u64 {
                assert_eq!(stage_steps(rank, ga), stage_steps(&sizes, ga * world as u64), "world {world}, grad_accum {ga}");
            }
        }
        // Two ranks: groups {0,1} {2,3} … end at micro-batches 1, 3, 5, 7, 9, 11: stages 0, 1, 1, 1, 2, 2.
        assert_eq!(staged(12, &sizes, 1, 2).stage_batches(), Some(vec![1, 3, 2]));
        // 11 micro-batches: the partial last group is no rank's; the stages start where they did.
        let short = [3, 5, 3];
        let rank = staged(11, &short, 0, 2).stage_batches().unwrap();
        assert_eq!(rank, [1, 3, 1]);
        let starts = |v: Vec<(u64, u64)>| v.iter().map(|s| s.0).collect::<Vec<_>>();
        assert_eq!(starts(stage_steps(&rank, 1)), starts(stage_steps(&short, 2)));
    }

    #[test]
    fn the_cursor_is_shared_and_checks_the_world_size() {
        let src = || Box::new(VecSource::new((0..12).map(one).collect(), 1));
        let mut a = RankSplit::new(src(), 0, 2).unwrap();
        let mut b = RankSplit::new(src(), 1, 2).unwrap();
        a.next_batch().unwrap();
        b.next_batch().unwrap();
        assert_eq!(a.state(), b.state());
        let st = a.state();
        let mut c = RankSplit::new(src(), 1, 2).unwrap();
        c.restore(&st).unwrap();
        assert_eq!(ids(&mut c), [3, 5, 7, 9, 11]);
        let e = RankSplit::new(src(), 0, 3).unwrap().restore(&st).unwrap_err().to_string();
        assert!(e.contains("written by a run of 2 ranks, this run has 3"), "{e}");
        let e = RankSplit::new(src(), 0, 2).unwrap().restore(&serde_json::json!({"kind": "vec", "next": 2})).unwrap_err().to_string();
        assert!(e.contains("not from a data-parallel run"), "{e}");
        assert!(RankSplit::new(src(), 2, 2).is_err());
    }
}
