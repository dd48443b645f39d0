//! Collectives on GPU buffers through NCCL (cudarc's `nccl` bindings; feature `nccl`). The NCCL
//! unique id travels from rank 0 over the TCP rendezvous ([`TcpCollective`]), which also carries
//! the small host-side values (step statistics) and the barrier.
//!
//! Every operation is queued on the candle device's stream, so it is ordered after the kernels
//! that produced its input and before those that read its output, with no extra synchronisation.
//! Reduction order is NCCL's (ring or tree), fixed for a given world size and message size, not
//! the TCP backend's rank order.

use std::time::Duration;

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream};
use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp};
use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, Device, Storage, Tensor};

use super::super::error::{Result, TrainError};
use super::collective::{flat_len, Collective};
use super::launch::Launch;
use super::tcp::TcpCollective;

/// Bytes of an NCCL unique id.
const ID_BYTES: usize = 128;

/// The NCCL communicator, movable between threads (NCCL allows a communicator to be used from
/// any thread, one call at a time; `&mut self` on every operation guarantees that).
struct SendComm(Comm);
// SAFETY: see above; the raw `ncclComm_t` inside is only used through `&mut NcclCollective`.
unsafe impl Send for SendComm {}

/// One rank's NCCL communicator on its GPU.
pub struct NcclCollective {
    comm: SendComm,
    tcp: TcpCollective,
    dev: CudaDevice,
    stream: std::sync::Arc<CudaStream>,
    rank: usize,
    world: usize,
}

fn nccl_err(rank: usize, what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Dist(format!("rank {rank}: NCCL {what}: {e:?}"))
}

impl NcclCollective {
    /// Joins the group: TCP rendezvous, rank 0 creates the NCCL id and sends it, every rank
    /// initialises its communicator on `device` (which must be a CUDA device).
    pub fn connect(launch: &Launch, timeout: Duration, device: &Device) -> Result<NcclCollective> {
        let Device::Cuda(dev) = device else {
            return Err(TrainError::config("distributed.backend", "nccl needs device = \"cuda\""));
        };
        let mut tcp = TcpCollective::connect(launch, timeout)?;
        let rank = launch.rank;
        let mine = if rank == 0 {
            let id = Id::new().map_err(|e| nccl_err(rank, "ncclGetUniqueId", e.0))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            vec![0u8; ID_BYTES]
        };
        let got = tcp.broadcast_raw(mine, 0)?;
        if got.len() != ID_BYTES {
            return Err(TrainError::Dist(format!("rank {rank}: the NCCL id from rank 0 has {} bytes, not {ID_BYTES}", got.len())));
        }
        let mut internal = [0 as std::ffi::c_char; ID_BYTES];
        for (d, s) in internal.iter_mut().zip(&got) {
            *d = *s as std::ffi::c_char;
        }
        let stream = dev.cuda_stream();
        let comm = Comm::from_rank(stream.clone(), rank, launch.world_size, Id::uninit(internal))
            .map_err(|e| nccl_err(rank, "ncclCommInitRank", e.0))?;
        tcp.barrier()?;
        Ok(NcclCollective { comm: SendComm(comm), tcp, dev: dev.clone(), stream, rank, world: launch.world_size })
    }

    /// `t` on this GPU (collectives take device buffers; the host is staged through).
    fn on_gpu(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(&Device::Cuda(self.dev.clone()))?.contiguous()?)
    }

    /// An output buffer of `n` f32 that the collective fills completely.
    fn out(&self, n: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: every element is written by the NCCL call it is handed to, queued on the same
        // stream before anything reads it.
        unsafe { self.stream.alloc::<f32>(n) }.map_err(|e| nccl_err(self.rank, "alloc", e))
    }

    /// Wraps a filled buffer as a tensor on the device `like` lives on.
    fn wrap(&self, s: CudaSlice<f32>, n: usize, like: &Tensor) -> Result<Tensor> {
        let st = Storage::Cuda(CudaStorage::wrap_cuda_slice(s, self.dev.clone()));
        let t = Tensor::from_storage(st, n, BackpropOp::none(), false);
        Ok(t.to_device(like.device())?)
    }

    /// Runs `f` with a view of `t`'s elements on the GPU and returns the filled output of `n_out`.
    fn with_input(
        &mut self,
        op: &str,
        t: &Tensor,
        n_out: usize,
        f: impl FnOnce(&Comm, &candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>, &mut CudaSlice<f32>) -> Result<(), String>,
    ) -> Result<Tensor> {
        let n = flat_len(op, t)?;
        let g = self.on_gpu(t)?;
        let mut out = self.out(n_out)?;
        {
            let (st, layout) = g.storage_and_layout();
            let Storage::Cuda(cs) = &*st else { return Err(TrainError::Dist(format!("{op}: tensor is not on the GPU"))) };
            let (start, end) = layout.contiguous_offsets().ok_or_else(|| TrainError::Dist(format!("{op}: tensor is not contiguous")))?;
            debug_assert_eq!(end - start, n);
            let src = cs.as_cuda_slice::<f32>()?;
            let view = src.slice(start..end);
            f(&self.comm.0, &view, &mut out).map_err(|e| TrainError::Dist(format!("rank {}: NCCL {op}: {e}", self.rank)))?;
        }
        self.wrap(out, n_out, t)
    }
}

impl Collective for NcclCollective {
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        self.with_input("all_reduce_sum", t, n, |c, src, out| {
            c.all_reduce(src, out, &ReduceOp::Sum).map(|_| ()).map_err(|e| format!("{:?}", e.0))
        })
    }
    fn reduce_scatter(&mut self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        if n % self.world != 0 {
            return Err(TrainError::Dist(format!("reduce_scatter: {n} elements do not split into {} equal chunks", self.world)));
        }
        self.with_input("reduce_scatter", t, n / self.world, |c, src, out| {
            c.reduce_scatter(src, out, &ReduceOp::Sum).map(|_| ()).map_err(|e| format!("{:?}", e.0))
        })
    }
    fn all_gather(&mut self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        self.with_input("all_gather", t, n * self.world, |c, src, out| c.all_gather(src, out).map(|_| ()).map_err(|e| format!("{:?}", e.0)))
    }
    fn broadcast(&mut self, t: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.world {
            return Err(TrainError::Dist(format!("broadcast from rank {root} in a group of {}", self.world)));
        }
        let n = t.elem_count();
        self.with_input("broadcast", t, n, |c, src, out| {
            c.broadcast(Some(src), out, root as i32).map(|_| ()).map_err(|e| format!("{:?}", e.0))
        })
    }
    fn all_gather_f64(&mut self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.tcp.all_gather_f64(v)
    }
    fn barrier(&mut self) -> Result<()> {
        // Device work queued before the barrier finishes first, so "every rank is here" also
        // means "every rank's collectives so far are done".
        Device::Cuda(self.dev.clone()).synchronize()?;
        self.tcp.barrier()
    }
}
