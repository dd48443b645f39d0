//! The collective operations data parallelism needs, over flat f32 tensors (gradient buckets,
//! parameter shards) plus small host-side f64 vectors (step statistics). Every rank calls the
//! same operations in the same order; a mismatch is an error, not a hang where it can be told.
//!
//! Implementations: [`super::tcp::TcpCollective`] (a star through rank 0 with a fixed-order sum:
//! results identical on every rank and independent of arrival order; CPU runs and tests),
//! `super::nccl::NcclCollective` (feature `nccl`: GPU buffers through NCCL), and [`Solo`] (one
//! process: every operation is the identity).

use candle_core::{DType, Tensor};

use super::super::error::{Result, TrainError};

/// Collective operations of one rank of a process group.
pub trait Collective: Send {
    /// Backend name (`tcp`, `nccl`, `solo`).
    fn name(&self) -> &'static str;
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Element-wise sum over ranks of a 1-D f32 tensor; every rank gets the same result, on the
    /// input's device.
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor>;
    /// Sum over ranks of a 1-D f32 tensor of `W·m` elements, of which rank `r` receives elements
    /// `[r·m, (r+1)·m)`.
    fn reduce_scatter(&mut self, t: &Tensor) -> Result<Tensor>;
    /// The ranks' 1-D f32 tensors of `m` elements each, concatenated in rank order (`W·m`).
    fn all_gather(&mut self, t: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s 1-D f32 tensor, on every rank (the others pass a tensor of the same length).
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<Tensor>;
    /// Every rank's host values (same length on every rank), in rank order.
    fn all_gather_f64(&mut self, v: &[f64]) -> Result<Vec<Vec<f64>>>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;
}

/// Checks that `t` is a 1-D f32 tensor (what the collectives take) and returns its length.
pub fn flat_len(op: &str, t: &Tensor) -> Result<usize> {
    if t.dtype() != DType::F32 || t.rank() != 1 {
        return Err(TrainError::Dist(format!("{op}: needs a 1-D f32 tensor, got {:?} {:?}", t.dtype(), t.dims())));
    }
    Ok(t.elem_count())
}

/// The single-process group: every operation returns its input.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

impl Collective for Solo {
    fn name(&self) -> &'static str {
        "solo"
    }
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        flat_len("all_reduce_sum", t)?;
        Ok(t.clone())
    }
    fn reduce_scatter(&mut self, t: &Tensor) -> Result<Tensor> {
        flat_len("reduce_scatter", t)?;
        Ok(t.clone())
    }
    fn all_gather(&mut self, t: &Tensor) -> Result<Tensor> {
        flat_len("all_gather", t)?;
        Ok(t.clone())
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<Tensor> {
        flat_len("broadcast", t)?;
        if root != 0 {
            return Err(TrainError::Dist(format!("broadcast from rank {root} in a group of 1")));
        }
        Ok(t.clone())
    }
    fn all_gather_f64(&mut self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(vec![v.to_vec()])
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}
