//! The CUDA backend (feature `cuda`): fused kernels from `train/cuda/kernels/train.cu`, cuDNN
//! flash attention, cuBLAS for weight gradients accumulated straight into f32.
//!
//! Every unit runs its own kernel for bf16 compute on shapes the kernels take (row lengths and
//! half head dims multiples of 8, which every Qwen2 size satisfies); other dtypes (f32/f64 runs
//! on a GPU) and other shapes go through the reference composition on the GPU (correct, slow).
//! `CORETECH_CUDA_REFERENCE=unit,…` forces units onto the reference path (diagnosis).
//!
//! Accumulators handed in by value (`*_acc`) are updated in place and returned; AdamW updates
//! the master weights, moments and parameters in place (one multi-tensor launch).

use candle_core::cuda_backend::cudarc::cublas::{result as cublas_result, sys as cublas_sys};
use std::sync::{Arc, Mutex};

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaSlice};
use candle_core::{CudaDevice, DType, Tensor};

use super::{AdamState, AdamWStep, AttnOut, CeOut, CeTargets, Ops, ReferenceOps, RmsNormOut, RopeCtx, Segments, UnitTime};
use crate::train::cuda::kernels::{cfg_1d, cfg_grid, dptr, empty, launch, slice_ptr, upload};
use crate::train::cuda::{device, sdpa};
use crate::train::error::{Result, TrainError};

/// Elements per block of the multi-tensor optimizer and norm kernels.
const MT_CHUNK: usize = 65536;
/// Rows per partial sum of the column reductions (bias and RMSNorm weight gradients).
const COLSUM_ROWS: usize = 64;

/// Fused CUDA implementation of [`Ops`].
#[derive(Clone)]
pub struct CudaOps {
    dev: CudaDevice,
    /// Units forced onto the reference composition (`CORETECH_CUDA_REFERENCE=attn_fwd,…`, for
    /// diagnosis on the device; empty by default).
    forced: Vec<String>,
    /// Unit timings (events around each unit) while profiling is on.
    prof: Arc<Mutex<Option<Vec<(&'static str, CudaEvent, CudaEvent)>>>>,
}

impl std::fmt::Debug for CudaOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaOps({:?})", self.dev)
    }
}

/// Records the end event of a unit when dropped (profiling only).
struct ProfGuard<'a> {
    ops: &'a CudaOps,
    name: &'static str,
    start: Option<CudaEvent>,
}

impl Drop for ProfGuard<'_> {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            if let Ok(end) = self.ops.dev.cuda_stream().record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)) {
                if let Some(v) = self.ops.prof.lock().expect("profile lock").as_mut() {
                    v.push((self.name, start, end));
                }
            }
        }
    }
}

impl CudaOps {
    /// The backend for `dev`: keeps the memory pool's memory and turns off per-argument event
    /// recording (see `train::cuda::device`). Those are speed settings: if the driver refuses
    /// them the backend still works, slower, and says so in the log.
    pub fn new(dev: &CudaDevice) -> CudaOps {
        if let Err(e) = device::configure(dev) {
            tracing::warn!("CUDA memory pool / event tracking not configured (training will be slower): {e}");
        }
        let forced: Vec<String> = std::env::var("CORETECH_CUDA_REFERENCE")
            .unwrap_or_default()
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if !forced.is_empty() {
            tracing::warn!("CORETECH_CUDA_REFERENCE: reference composition for {forced:?}");
        }
        CudaOps { dev: dev.clone(), forced, prof: Arc::new(Mutex::new(None)) }
    }

    fn forced(&self, unit: &str) -> bool {
        !self.forced.is_empty() && self.forced.iter().any(|u| u == unit || u == "all")
    }

    fn prof(&self, name: &'static str) -> ProfGuard<'_> {
        let on = self.prof.lock().expect("profile lock").is_some();
        let start = if on { self.dev.cuda_stream().record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).ok() } else { None };
        ProfGuard { ops: self, name, start }
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }
}

fn bf16_rows(x: &Tensor) -> Option<(usize, usize)> {
    if x.dtype() != DType::BF16 || x.rank() == 0 {
        return None;
    }
    let h = *x.dims().last()?;
    if h == 0 || h % 8 != 0 {
        return None;
    }
    Some((x.elem_count() / h, h))
}

fn contig(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?)
}

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Candle(candle_core::Error::Msg(msg.into()))
}

/// A multi-tensor table: one entry per tensor, one block per `MT_CHUNK` elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct AdamTensor {
    master: u64,
    m: u64,
    v: u64,
    grad: u64,
    param: u64,
    n: i64,
    decay: i32,
    param_f32: i32,
}
// SAFETY: plain old data, `#[repr(C)]` as in train.cu.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for AdamTensor {}

struct Table {
    tensors: CudaSlice<AdamTensor>,
    blk_tensor: CudaSlice<i32>,
    blk_off: CudaSlice<i64>,
    blocks: usize,
}

fn table(dev: &CudaDevice, entries: &[AdamTensor]) -> Result<Table> {
    let mut bt = Vec::new();
    let mut bo = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut off = 0i64;
        while off < e.n {
            bt.push(i as i32);
            bo.push(off);
            off += MT_CHUNK as i64;
        }
    }
    Ok(Table { tensors: upload(dev, entries)?, blocks: bt.len(), blk_tensor: upload(dev, &bt)?, blk_off: upload(dev, &bo)? })
}

impl CudaOps {
    /// `acc (+)= dyᵀ · x` in f32 with bf16 or f32 operands, one cuBLAS call (no bf16 product, no
    /// separate cast or add).
    fn gemm_tn_acc(&self, dy: &Tensor, x: &Tensor, acc: Option<Tensor>) -> Result<Tensor> {
        let (n, out) = dy.dims2()?;
        let (n2, inn) = x.dims2()?;
        if n != n2 {
            return Err(bad(format!("linear_grad_acc: dy has {n} rows, x {n2}")));
        }
        let dy = contig(dy)?;
        let x = contig(x)?;
        let (acc, beta) = match acc {
            Some(a) => {
                if a.dims() != [out, inn] || a.dtype() != DType::F32 || !a.is_contiguous() {
                    return Err(bad(format!(
                        "linear_grad_acc: accumulator {:?} {:?}, expected contiguous f32 ({out}, {inn})",
                        a.dims(),
                        a.dtype()
                    )));
                }
                (a, 1f32)
            }
            None => (empty((out, inn), DType::F32, &self.dev)?, 0f32),
        };
        let ty = match dy.dtype() {
            DType::BF16 => cublas_sys::cudaDataType_t::CUDA_R_16BF,
            DType::F32 => cublas_sys::cudaDataType_t::CUDA_R_32F,
            d => return Err(bad(format!("linear_grad_acc: {d:?} operands"))),
        };
        if n == 0 {
            return Ok(if beta == 0.0 { acc.zeros_like()? } else { acc });
        }
        let alpha = 1f32;
        let blas = self.dev.cublas_handle();
        // Column-major view: C(in×out) = x(in×n) · dy(out×n)ᵀ.
        unsafe {
            cublas_result::gemm_ex(
                *blas.handle(),
                cublas_sys::cublasOperation_t::CUBLAS_OP_N,
                cublas_sys::cublasOperation_t::CUBLAS_OP_T,
                inn as i32,
                out as i32,
                n as i32,
                &alpha as *const f32 as *const _,
                dptr(&x)? as *const _,
                ty,
                inn as i32,
                dptr(&dy)? as *const _,
                ty,
                out as i32,
                &beta as *const f32 as *const _,
                dptr(&acc)? as *mut _,
                cublas_sys::cudaDataType_t::CUDA_R_32F,
                inn as i32,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(acc)
    }

    /// Column sums of `dy` (mode 0) or of `dy · x · rstd` (mode 1) over rows, into `acc` or a
    /// fresh f32 vector; fixed summation order.
    fn colsum(&self, dy: &Tensor, x: Option<(&Tensor, &Tensor)>, acc: Option<Tensor>) -> Result<Tensor> {
        let cols = *dy.dims().last().expect("rank checked");
        let rows = dy.elem_count() / cols;
        let chunks = rows.div_ceil(COLSUM_ROWS).max(1);
        let partial = empty((chunks, cols), DType::F32, &self.dev)?;
        let (accum, out) = match acc {
            Some(a) => {
                if a.dims() != [cols] || a.dtype() != DType::F32 || !a.is_contiguous() {
                    return Err(bad(format!("column-sum accumulator {:?} {:?}, expected contiguous f32 ({cols},)", a.dims(), a.dtype())));
                }
                (1i32, a)
            }
            None => (0i32, empty(cols, DType::F32, &self.dev)?),
        };
        let (p_dy, p_part) = (dptr(dy)?, dptr(&partial)?);
        let (p_x, p_r, mode) = match x {
            Some((x, r)) => (dptr(x)?, dptr(r)?, 1i32),
            None => (0u64, 0u64, 0i32),
        };
        let (rows_i, cols_i, rpc, chunks_i) = (rows as i32, cols as i32, COLSUM_ROWS as i32, chunks as i32);
        let threads = 128u32;
        let gx = cols.div_ceil(2 * threads as usize) as u32;
        launch!(
            &self.dev,
            "colsum_partial_bf16",
            cfg_grid((gx, chunks as u32, 1), threads),
            p_dy,
            p_x,
            p_r,
            p_part,
            rows_i,
            cols_i,
            rpc,
            mode
        );
        let p_out = dptr(&out)?;
        launch!(&self.dev, "colsum_final", cfg_1d(cols, 256), p_part, p_out, chunks_i, cols_i, accum);
        Ok(out)
    }

    fn attn_segments(&self, seg: &Segments, b: usize, t: usize) -> Result<Option<(usize, [CudaSlice<i32>; 4])>> {
        let nseg = seg.cu_seqlens.dim(0)? - 1;
        if nseg == b && seg.max_seqlen == t {
            return Ok(None); // one full-length segment per row: the dense layout
        }
        Ok(Some((
            nseg,
            [
                self.dev.alloc_zeros::<i32>(nseg.max(1))?,
                self.dev.alloc_zeros::<i32>(nseg + 1)?,
                self.dev.alloc_zeros::<i32>(nseg + 1)?,
                self.dev.alloc_zeros::<i32>(nseg + 1)?,
            ],
        )))
    }

    fn fill_ragged(&self, seg: &Segments, nseg: usize, hq: usize, hkv: usize, d: usize, r: &[CudaSlice<i32>; 4]) -> Result<()> {
        let cu = contig(&seg.cu_seqlens)?;
        let p_cu = dptr(&cu)?;
        let (nb, hq_i, hkv_i, d_i) = (nseg as i32, hq as i32, hkv as i32, d as i32);
        let (p0, p1, p2, p3) =
            (slice_ptr(&self.dev, &r[0]), slice_ptr(&self.dev, &r[1]), slice_ptr(&self.dev, &r[2]), slice_ptr(&self.dev, &r[3]));
        launch!(&self.dev, "sdpa_ragged_offsets", cfg_1d(nseg + 1, 128), p_cu, nb, hq_i, hkv_i, d_i, p0, p1, p2, p3);
        Ok(())
    }

    /// Switches `desc` and `ptrs` to the ragged (THD) layout of `nseg` packed segments and returns
    /// the token-major `(N, Hq)` stats buffer cuDNN reads or writes (filled by the caller).
    #[allow(clippy::type_complexity)]
    fn ragged_desc(
        &self,
        seg: &Segments,
        nseg: usize,
        r: &[CudaSlice<i32>; 4],
        (b, t, hq, hkv, d): (usize, usize, usize, usize, usize),
        desc: &mut sdpa::SdpaDesc,
        ptrs: &mut [u64; sdpa::SLOTS],
    ) -> Result<Tensor> {
        self.fill_ragged(seg, nseg, hq, hkv, d, r)?;
        desc.b = nseg as i64;
        desc.total = (b * t) as i64;
        desc.ragged = 1;
        let st = empty((b * t, hq), DType::F32, &self.dev)?;
        ptrs[sdpa::Slot::Stats as usize] = dptr(&st)?;
        for (slot, s) in [sdpa::Slot::SeqQ, sdpa::Slot::OffQ, sdpa::Slot::OffKv, sdpa::Slot::OffStats].into_iter().zip(r.iter()) {
            ptrs[slot as usize] = slice_ptr(&self.dev, s);
        }
        ptrs[sdpa::Slot::SeqKv as usize] = slice_ptr(&self.dev, &r[0]);
        Ok(st)
    }

    fn lse_relayout(&self, src: &Tensor, dst: &Tensor, b: usize, hq: usize, t: usize, dir: i32) -> Result<()> {
        let (ps, pd) = (dptr(src)?, dptr(dst)?);
        let (bi, hi, ti) = (b as i32, hq as i32, t as i32);
        launch!(&self.dev, "lse_relayout", cfg_1d(b * hq * t, 256), ps, pd, bi, hi, ti, dir);
        Ok(())
    }

    fn workspace(&self, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
        Ok(if bytes == 0 { None } else { Some(unsafe { self.dev.alloc::<u8>(bytes)? }) })
    }
}

impl Ops for CudaOps {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn rms_norm_fwd(&self, x: &Tensor, w: &Tensor, eps: f64) -> Result<RmsNormOut> {
        let _p = self.prof("rms_norm_fwd");
        if self.forced("rms_norm_fwd") {
            return ReferenceOps.rms_norm_fwd(x, w, eps);
        }
        let Some((rows, h)) = bf16_rows(x) else { return ReferenceOps.rms_norm_fwd(x, w, eps) };
        if w.dtype() != DType::BF16 || w.elem_count() != h {
            return ReferenceOps.rms_norm_fwd(x, w, eps);
        }
        let (x, w) = (contig(x)?, contig(w)?);
        let y = empty(x.shape(), DType::BF16, &self.dev)?;
        let rstd = empty(rows, DType::F32, &self.dev)?;
        let (px, pw, py, pr) = (dptr(&x)?, dptr(&w)?, dptr(&y)?, dptr(&rstd)?);
        let (rows_i, h_i, eps_f) = (rows as i32, h as i32, eps as f32);
        launch!(&self.dev, "rmsnorm_fwd_bf16", cfg_1d(rows * 32, 256), px, pw, py, pr, rows_i, h_i, eps_f);
        Ok(RmsNormOut { y, rstd })
    }

    fn rms_norm_bwd(&self, dy: &Tensor, x: &Tensor, w: &Tensor, rstd: &Tensor) -> Result<(Tensor, Tensor)> {
        let _p = self.prof("rms_norm_bwd");
        if self.forced("rms_norm_bwd") {
            return ReferenceOps.rms_norm_bwd(dy, x, w, rstd);
        }
        let Some((rows, h)) = bf16_rows(x) else { return ReferenceOps.rms_norm_bwd(dy, x, w, rstd) };
        if dy.dtype() != DType::BF16 || w.dtype() != DType::BF16 || rstd.dtype() != DType::F32 || w.elem_count() != h {
            return ReferenceOps.rms_norm_bwd(dy, x, w, rstd);
        }
        let (dy, x, w, rstd) = (contig(dy)?, contig(x)?, contig(w)?, contig(rstd)?);
        let dx = empty(x.shape(), DType::BF16, &self.dev)?;
        let (pdy, px, pw, pr, pdx) = (dptr(&dy)?, dptr(&x)?, dptr(&w)?, dptr(&rstd)?, dptr(&dx)?);
        let (rows_i, h_i) = (rows as i32, h as i32);
        launch!(&self.dev, "rmsnorm_bwd_dx_bf16", cfg_1d(rows * 32, 256), pdy, px, pw, pr, pdx, rows_i, h_i);
        let dw = self.colsum(&dy, Some((&x, &rstd)), None)?;
        Ok((dx, dw))
    }

    fn rope_fwd(&self, x: &Tensor, rope: &RopeCtx) -> Result<Tensor> {
        let _p = self.prof("rope_fwd");
        if self.forced("rope_fwd") {
            return ReferenceOps.rope_fwd(x, rope);
        }
        self.rope(x, rope, 1.0)
    }

    fn rope_bwd(&self, dy: &Tensor, rope: &RopeCtx) -> Result<Tensor> {
        let _p = self.prof("rope_bwd");
        if self.forced("rope_bwd") {
            return ReferenceOps.rope_bwd(dy, rope);
        }
        self.rope(dy, rope, -1.0)
    }

    fn attn_fwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, seg: &Segments, scale: f64) -> Result<AttnOut> {
        let _p = self.prof("attn_fwd");
        if self.forced("attn_fwd") {
            return ReferenceOps.attn_fwd(q, k, v, seg, scale);
        }
        let (b, t, hq, d) = q.dims4()?;
        let hkv = k.dim(2)?;
        if q.dtype() != DType::BF16 {
            return ReferenceOps.attn_fwd(q, k, v, seg, scale);
        }
        let (q, k, v) = (contig(q)?, contig(k)?, contig(v)?);
        let out = empty((b, t, hq, d), DType::BF16, &self.dev)?;
        let lse = empty((b, hq, t), DType::F32, &self.dev)?;
        let ragged = self.attn_segments(seg, b, t)?;
        let mut desc = sdpa::SdpaDesc::dense((b, t, hq, hkv, d), scale, false);
        let mut ptrs = [0u64; sdpa::SLOTS];
        ptrs[sdpa::Slot::Q as usize] = dptr(&q)?;
        ptrs[sdpa::Slot::K as usize] = dptr(&k)?;
        ptrs[sdpa::Slot::V as usize] = dptr(&v)?;
        ptrs[sdpa::Slot::O as usize] = dptr(&out)?;
        let mut stats_thd = None;
        match &ragged {
            None => ptrs[sdpa::Slot::Stats as usize] = dptr(&lse)?,
            Some((nseg, r)) => stats_thd = Some(self.ragged_desc(seg, *nseg, r, (b, t, hq, hkv, d), &mut desc, &mut ptrs)?),
        }
        let ws = self.workspace(sdpa::prepare(&self.dev, &desc)?)?;
        let pws = ws.as_ref().map(|w| slice_ptr(&self.dev, w)).unwrap_or(0);
        sdpa::run(&self.dev, &desc, &ptrs, pws)?;
        if let Some(st) = &stats_thd {
            self.lse_relayout(st, &lse, b, hq, t, 0)?;
        }
        Ok(AttnOut { out, lse })
    }

    fn attn_bwd(
        &self,
        dout: &Tensor,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        fwd: &AttnOut,
        seg: &Segments,
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let _p = self.prof("attn_bwd");
        if self.forced("attn_bwd") {
            return ReferenceOps.attn_bwd(dout, q, k, v, fwd, seg, scale);
        }
        let (b, t, hq, d) = q.dims4()?;
        let hkv = k.dim(2)?;
        if q.dtype() != DType::BF16 {
            return ReferenceOps.attn_bwd(dout, q, k, v, fwd, seg, scale);
        }
        let (dout, q, k, v, o, lse) = (contig(dout)?, contig(q)?, contig(k)?, contig(v)?, contig(&fwd.out)?, contig(&fwd.lse)?);
        let dq = empty((b, t, hq, d), DType::BF16, &self.dev)?;
        let dk = empty((b, t, hkv, d), DType::BF16, &self.dev)?;
        let dv = empty((b, t, hkv, d), DType::BF16, &self.dev)?;
        let ragged = self.attn_segments(seg, b, t)?;
        let mut desc = sdpa::SdpaDesc::dense((b, t, hq, hkv, d), scale, true);
        let mut ptrs = [0u64; sdpa::SLOTS];
        for (slot, x) in [
            (sdpa::Slot::Q, &q),
            (sdpa::Slot::K, &k),
            (sdpa::Slot::V, &v),
            (sdpa::Slot::O, &o),
            (sdpa::Slot::DO, &dout),
            (sdpa::Slot::DQ, &dq),
            (sdpa::Slot::DK, &dk),
            (sdpa::Slot::DV, &dv),
        ] {
            ptrs[slot as usize] = dptr(x)?;
        }
        let mut _stats_thd = None;
        match &ragged {
            None => ptrs[sdpa::Slot::Stats as usize] = dptr(&lse)?,
            Some((nseg, r)) => {
                let st = self.ragged_desc(seg, *nseg, r, (b, t, hq, hkv, d), &mut desc, &mut ptrs)?;
                // (B, Hq, T) → token-major (N, Hq): src is the forward's lse, dst the THD copy.
                self.lse_relayout(&lse, &st, b, hq, t, 1)?;
                _stats_thd = Some(st);
            }
        }
        let ws = self.workspace(sdpa::prepare(&self.dev, &desc)?)?;
        let pws = ws.as_ref().map(|w| slice_ptr(&self.dev, w)).unwrap_or(0);
        sdpa::run(&self.dev, &desc, &ptrs, pws)?;
        Ok((dq, dk, dv))
    }

    fn swiglu_fwd(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let _p = self.prof("swiglu_fwd");
        if self.forced("swiglu_fwd") {
            return ReferenceOps.swiglu_fwd(gate, up);
        }
        if bf16_rows(gate).is_none() || up.dtype() != DType::BF16 || gate.dims() != up.dims() {
            return ReferenceOps.swiglu_fwd(gate, up);
        }
        let (g, u) = (contig(gate)?, contig(up)?);
        let out = empty(g.shape(), DType::BF16, &self.dev)?;
        let n8 = g.elem_count() / 8;
        let (pg, pu, po) = (dptr(&g)?, dptr(&u)?, dptr(&out)?);
        launch!(&self.dev, "swiglu_fwd_bf16", cfg_1d(n8, 256), pg, pu, po, n8);
        Ok(out)
    }

    fn swiglu_bwd(&self, dy: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
        let _p = self.prof("swiglu_bwd");
        if self.forced("swiglu_bwd") {
            return ReferenceOps.swiglu_bwd(dy, gate, up);
        }
        if bf16_rows(gate).is_none()
            || up.dtype() != DType::BF16
            || dy.dtype() != DType::BF16
            || gate.dims() != up.dims()
            || gate.dims() != dy.dims()
        {
            return ReferenceOps.swiglu_bwd(dy, gate, up);
        }
        let (d, g, u) = (contig(dy)?, contig(gate)?, contig(up)?);
        let dg = empty(g.shape(), DType::BF16, &self.dev)?;
        let du = empty(g.shape(), DType::BF16, &self.dev)?;
        let n8 = g.elem_count() / 8;
        let (pd, pg, pu, pdg, pdu) = (dptr(&d)?, dptr(&g)?, dptr(&u)?, dptr(&dg)?, dptr(&du)?);
        launch!(&self.dev, "swiglu_bwd_bf16", cfg_1d(n8, 256), pd, pg, pu, pdg, pdu, n8);
        Ok((dg, du))
    }

    fn embedding_fwd(&self, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
        let _p = self.prof("embedding_fwd");
        ReferenceOps.embedding_fwd(ids, table)
    }

    fn embedding_bwd_acc(&self, ids: &Tensor, dy: &Tensor, grad: Tensor) -> Result<Tensor> {
        let _p = self.prof("embedding_bwd_acc");
        if self.forced("embedding_bwd_acc") {
            return ReferenceOps.embedding_bwd_acc(ids, dy, grad);
        }
        let Some((rows, h)) = bf16_rows(dy) else { return ReferenceOps.embedding_bwd_acc(ids, dy, grad) };
        if grad.dtype() != DType::F32 || !grad.is_contiguous() || grad.dim(1)? != h || h % 2 != 0 {
            return ReferenceOps.embedding_bwd_acc(ids, dy, grad);
        }
        // Sort on the host (16k ids: microseconds) so each vocabulary row is summed by one block
        // in token order: deterministic, no atomics.
        let host: Vec<u32> = ids.to_vec1()?;
        if host.len() != rows {
            return Err(bad(format!("embedding_bwd_acc: {} ids for {rows} gradient rows", host.len())));
        }
        let vocab = grad.dim(0)?;
        if let Some(&bad_id) = host.iter().find(|&&i| i as usize >= vocab) {
            return Err(bad(format!("embedding_bwd_acc: id {bad_id} outside the vocabulary ({vocab})")));
        }
        let mut order: Vec<u32> = (0..rows as u32).collect();
        order.sort_by_key(|&i| (host[i as usize], i));
        let mut uniq = Vec::new();
        let mut starts = Vec::new();
        for (j, &i) in order.iter().enumerate() {
            let id = host[i as usize];
            if uniq.last() != Some(&id) {
                uniq.push(id);
                starts.push(j as u32);
            }
        }
        starts.push(rows as u32);
        if uniq.is_empty() {
            return Ok(grad);
        }
        let (o, s, u) = (upload(&self.dev, &order)?, upload(&self.dev, &starts)?, upload(&self.dev, &uniq)?);
        let dy = contig(dy)?;
        let (pdy, po, ps, pu, pg) =
            (dptr(&dy)?, slice_ptr(&self.dev, &o), slice_ptr(&self.dev, &s), slice_ptr(&self.dev, &u), dptr(&grad)?);
        let h_i = h as i32;
        launch!(&self.dev, "embedding_bwd_bf16", cfg_grid((uniq.len() as u32, 1, 1), 128), pdy, po, ps, pu, pg, h_i);
        Ok(grad)
    }

    fn cross_entropy(
        &self,
        h: &Tensor,
        w: &Tensor,
        t: &CeTargets,
        grad_scale: Option<f64>,
        chunk: usize,
        dw_acc: Option<Tensor>,
    ) -> Result<CeOut> {
        let _p = self.prof("cross_entropy");
        if self.forced("cross_entropy") {
            return ReferenceOps.cross_entropy(h, w, t, grad_scale, chunk, dw_acc);
        }
        let Some((n, hid)) = bf16_rows(h) else { return ReferenceOps.cross_entropy(h, w, t, grad_scale, chunk, dw_acc) };
        if w.dtype() != DType::BF16 || w.dim(1)? != hid {
            return ReferenceOps.cross_entropy(h, w, t, grad_scale, chunk, dw_acc);
        }
        let vocab = w.dim(0)?;
        let chunk = chunk.max(1);
        let mut loss_sum = Tensor::zeros((), DType::F32, h.device())?;
        let dh = match grad_scale {
            Some(_) => Some(Tensor::zeros((n, hid), DType::BF16, h.device())?),
            None => None,
        };
        // Accumulated in place by cuBLAS (beta = 1): no second (V, H) buffer.
        let mut dw: Option<Tensor> = dw_acc;
        let (scale, want_grad) = (grad_scale.unwrap_or(0.0) as f32, grad_scale.is_some() as i32);
        let v_i = vocab as i32;
        let mut start = 0;
        while start < t.count {
            let len = chunk.min(t.count - start);
            let rows = contig(&t.rows.narrow(0, start, len)?)?;
            let tgt = contig(&t.targets.narrow(0, start, len)?)?;
            let hc = h.index_select(&rows, 0)?;
            let logits = hc.matmul(&w.t()?)?; // (len, V) bf16, cuBLAS
            let loss = empty(len, DType::F32, &self.dev)?;
            let (pl, pt, ploss) = (dptr(&logits)?, dptr(&tgt)?, dptr(&loss)?);
            launch!(&self.dev, "ce_fwd_bwd_bf16", cfg_grid((len as u32, 1, 1), 512), pl, pt, ploss, v_i, scale, want_grad);
            loss_sum = (loss_sum + loss.sum_all()?)?;
            if let Some(dh) = &dh {
                // logits now hold d(scale·loss)/dlogits in bf16
                let dhc = logits.matmul(w)?; // (len, H)
                let (ps, pr, pd) = (dptr(&dhc)?, dptr(&rows)?, dptr(dh)?);
                let (len_i, hid_i) = (len as i32, hid as i32);
                launch!(&self.dev, "scatter_rows_bf16", cfg_1d(len * hid / 8, 256), ps, pr, pd, len_i, hid_i);
                dw = Some(self.gemm_tn_acc(&logits, &hc, dw.take())?);
            }
            start += len;
        }
        Ok(CeOut { loss_sum, dh, dw })
    }

    fn linear_grad_acc(&self, dy: &Tensor, x: &Tensor, acc: Option<Tensor>) -> Result<Tensor> {
        let _p = self.prof("linear_grad_acc");
        if dy.rank() != 2 || x.rank() != 2 || dy.dtype() != x.dtype() || !matches!(dy.dtype(), DType::BF16 | DType::F32) {
            let g = dy.t()?.matmul(x)?.to_dtype(super::acc_dtype(dy.dtype()))?;
            return Ok(match acc {
                None => g,
                Some(a) => (a + g)?,
            });
        }
        self.gemm_tn_acc(dy, x, acc)
    }

    fn bias_grad_acc(&self, dy: &Tensor, acc: Option<Tensor>) -> Result<Tensor> {
        let _p = self.prof("bias_grad_acc");
        match bf16_rows(dy) {
            Some((_, cols)) if cols % 2 == 0 => {
                let dy = contig(dy)?;
                self.colsum(&dy, None, acc)
            }
            _ => {
                let g = dy.to_dtype(super::acc_dtype(dy.dtype()))?.sum(0)?;
                Ok(match acc {
                    None => g,
                    Some(a) => (a + g)?,
                })
            }
        }
    }

    fn sum_squares(&self, grads: &[Tensor]) -> Result<f64> {
        let _p = self.prof("sum_squares");
        if self.forced("sum_squares") {
            return ReferenceOps.sum_squares(grads);
        }
        if grads.iter().any(|g| g.dtype() != DType::F32) {
            return ReferenceOps.sum_squares(grads);
        }
        let grads: Vec<Tensor> = grads.iter().map(contig).collect::<Result<_>>()?;
        let entries: Vec<AdamTensor> = grads
            .iter()
            .map(|g| Ok(AdamTensor { grad: dptr(g)?, n: g.elem_count() as i64, ..Default::default() }))
            .collect::<Result<_>>()?;
        let tb = table(&self.dev, &entries)?;
        if tb.blocks == 0 {
            return Ok(0.0);
        }
        let partial = empty(tb.blocks, DType::F64, &self.dev)?;
        let out = empty(1, DType::F64, &self.dev)?;
        let (pt, pbt, pbo, pp, po) = (
            slice_ptr(&self.dev, &tb.tensors),
            slice_ptr(&self.dev, &tb.blk_tensor),
            slice_ptr(&self.dev, &tb.blk_off),
            dptr(&partial)?,
            dptr(&out)?,
        );
        let (chunk, nb) = (MT_CHUNK as i32, tb.blocks as i32);
        launch!(&self.dev, "sumsq_multi", cfg_grid((tb.blocks as u32, 1, 1), 256), pt, pbt, pbo, chunk, pp);
        launch!(&self.dev, "sum_f64_serial", cfg_grid((1, 1, 1), 32), pp, nb, po);
        Ok(out.to_vec1::<f64>()?[0])
    }

    fn adamw_step(&self, states: &mut [AdamState], grads: &[Tensor], params: &mut [Tensor], hp: &AdamWStep) -> Result<()> {
        let _p = self.prof("adamw_step");
        if self.forced("adamw_step") {
            return ReferenceOps.adamw_step(states, grads, params, hp);
        }
        if states.len() != grads.len() || states.len() != params.len() {
            return Err(bad(format!("adamw_step: {} states, {} grads, {} params", states.len(), grads.len(), params.len())));
        }
        let fused = states.iter().zip(grads).zip(params.iter()).all(|((s, g), p)| {
            let f32c = |t: &Tensor| t.dtype() == DType::F32 && t.is_contiguous() && t.elem_count() == s.master.elem_count();
            f32c(&s.master)
                && f32c(&s.exp_avg)
                && f32c(&s.exp_avg_sq)
                && f32c(g)
                && matches!(p.dtype(), DType::BF16 | DType::F32)
                && p.is_contiguous()
                && p.elem_count() == s.master.elem_count()
        });
        if !fused {
            return ReferenceOps.adamw_step(states, grads, params, hp);
        }
        let entries: Vec<AdamTensor> = states
            .iter()
            .zip(grads)
            .zip(params.iter())
            .map(|((s, g), p)| {
                Ok(AdamTensor {
                    master: dptr(&s.master)?,
                    m: dptr(&s.exp_avg)?,
                    v: dptr(&s.exp_avg_sq)?,
                    grad: dptr(g)?,
                    param: dptr(p)?,
                    n: s.master.elem_count() as i64,
                    decay: s.decay as i32,
                    param_f32: (p.dtype() == DType::F32) as i32,
                })
            })
            .collect::<Result<_>>()?;
        let tb = table(&self.dev, &entries)?;
        if tb.blocks == 0 {
            return Ok(());
        }
        let bc1 = (1.0 - hp.beta1.powi(hp.step as i32)) as f32;
        let bc2s = (1.0 - hp.beta2.powi(hp.step as i32)).sqrt() as f32;
        let (lr, b1, b2, eps, wd, gs) =
            (hp.lr as f32, hp.beta1 as f32, hp.beta2 as f32, hp.eps as f32, hp.weight_decay as f32, hp.grad_scale as f32);
        let (pt, pbt, pbo) = (slice_ptr(&self.dev, &tb.tensors), slice_ptr(&self.dev, &tb.blk_tensor), slice_ptr(&self.dev, &tb.blk_off));
        let chunk = MT_CHUNK as i32;
        launch!(&self.dev, "adamw_multi", cfg_grid((tb.blocks as u32, 1, 1), 512), pt, pbt, pbo, chunk, lr, b1, b2, eps, wd, bc1, bc2s, gs);
        Ok(())
    }

    fn set_profiling(&self, on: bool) {
        let mut p = self.prof.lock().expect("profile lock");
        match (on, p.is_some()) {
            (true, false) => *p = Some(Vec::new()),
            (false, true) => *p = None,
            _ => {}
        }
    }

    fn take_profile(&self) -> Result<Vec<UnitTime>> {
        let events = match self.prof.lock().expect("profile lock").as_mut() {
            Some(v) => std::mem::take(v),
            None => return Ok(Vec::new()),
        };
        self.dev.cuda_stream().synchronize().map_err(candle_core::Error::wrap)?;
        let mut out: Vec<UnitTime> = Vec::new();
        for (name, a, b) in events {
            let s = a.elapsed_ms(&b).map_err(candle_core::Error::wrap)? as f64 / 1e3;
            match out.iter_mut().find(|u| u.name == name) {
                Some(u) => {
                    u.seconds += s;
                    u.calls += 1;
                }
                None => out.push(UnitTime { name: name.to_string(), seconds: s, calls: 1 }),
            }
        }
        Ok(out)
    }
}

impl CudaOps {
    fn rope(&self, x: &Tensor, rope: &RopeCtx, sign: f32) -> Result<Tensor> {
        let (b, t, heads, d) = x.dims4()?;
        if x.dtype() != DType::BF16 || d % 16 != 0 || rope.cos.dtype() != DType::F32 || rope.sin.dtype() != DType::F32 {
            return if sign > 0.0 { ReferenceOps.rope_fwd(x, rope) } else { ReferenceOps.rope_bwd(x, rope) };
        }
        let x = contig(x)?;
        let (c, s) = (contig(&rope.cos)?, contig(&rope.sin)?);
        let y = empty(x.shape(), DType::BF16, &self.dev)?;
        let n = b * t;
        let (px, pc, ps, py) = (dptr(&x)?, dptr(&c)?, dptr(&s)?, dptr(&y)?);
        let (n_i, h_i, d_i) = (n as i32, heads as i32, d as i32);
        launch!(&self.dev, "rope_bf16", cfg_1d(n * heads * (d / 16), 256), px, pc, ps, py, n_i, h_i, d_i, sign);
        Ok(y)
    }
}
