//! The CPU backend: the reference units, except the three that dominate a step of a small model
//! with a large vocabulary (the `tiny` preset: 9.7 M of its 9.8 M parameters are the tied
//! embedding), which run as loops over the raw f32 buffers:
//! - the LM head's cross-entropy: logits written by one GEMM into a buffer kept across steps
//!   (the reference allocates and page-faults a fresh `chunk × V` tensor for each of its ~8
//!   element-wise ops), one exp per logit (a polynomial, vectorised) turned into the gradient in
//!   place, then two GEMMs for `dh` and `dW`;
//! - AdamW: in place over master weight and moments, three passes, no temporaries;
//! - the global gradient norm: one pass in f64, no f64 copy of every gradient.
//!
//! Every loop is split over rows or fixed-size blocks whose results are combined in a fixed
//! order, so the bytes do not depend on the thread count. Other dtypes (f64 in the
//! finite-difference tests, bf16) go through [`ReferenceOps`].

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::{AdamState, AdamWStep, AttnOut, CeOut, CeTargets, Ops, ReferenceOps, RmsNormOut, RopeCtx, Segments};
use crate::train::error::{Result, TrainError};

/// Elements per parallel task of the element-wise loops (AdamW, norm): large enough to amortise
/// a task, small enough to balance two to a few dozen threads.
const BLOCK: usize = 1 << 16;

/// Fused CPU implementation of [`Ops`] (see the module doc).
#[derive(Default)]
pub struct CpuOps {
    /// The logits of one cross-entropy chunk (`chunk × V`), kept across calls: allocating it per
    /// step costs a page fault per 4 KiB.
    logits: Mutex<Vec<f32>>,
}

impl CpuOps {
    /// A backend with an empty workspace (sized by the first cross-entropy call).
    pub fn new() -> CpuOps {
        CpuOps::default()
    }
}

/// Threads the CPU kernels use (candle's count, which follows `RAYON_NUM_THREADS`).
fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Data(msg.into())
}

/// The f32 contents of a contiguous CPU tensor, copied (for the small inputs).
fn to_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Runs `f` on the contiguous f32 buffer of a CPU tensor without copying it.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (st, layout) = t.storage_and_layout();
    match (&*st, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        _ => Err(bad("cpu ops: expected a contiguous f32 CPU tensor")),
    }
}

fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("cpu ops: expected a contiguous f32 tensor to update in place"),
    }
}

fn f32_ref<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("cpu ops: expected a contiguous f32 tensor"),
    }
}

/// `e^x`, for the softmax (`x ≤ 0`): range reduction to `[-ln2/2, ln2/2]` and a degree-6
/// Taylor polynomial, max relative error ≈ 2e-7 (f32 rounding dominates). Inputs below -87 give
/// about 1.6e-38 instead of a smaller or subnormal value (immaterial next to a sum ≥ 1).
/// Branch-free, so loops over it vectorise; libm's `expf` does not (11 % of a step's profile).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding it rounds to the nearest integer, which its low mantissa bits then hold.
    const SHIFTER: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the integer in `t`'s mantissa: n + 127 into the exponent field.
    let scale = f32::from_bits(((t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32).wrapping_add(127) << 23) as u32);
    p * scale
}

/// Lanes of the row reductions: a fixed summation order that the compiler can vectorise.
const LANES: usize = 16;

/// One logits row: writes `e^(x − max)` over it and returns `(max, Σ e^(x − max))`.
#[inline(always)]
fn exp_row_generic(row: &mut [f32]) -> (f32, f32) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
        }
    }
    let mut m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &x in chunks.remainder() {
        m = if x > m { x } else { m };
    }
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp_neg(c[i] - m);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut s = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_neg(*x - m);
        s += *x;
    }
    (m, acc.iter().sum::<f32>() + s)
}

/// `row *= k`.
#[inline(always)]
fn scale_row_generic(row: &mut [f32], k: f32) {
    for x in row {
        *x *= k;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_row_avx2(row: &mut [f32]) -> (f32, f32) {
    exp_row_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_row_avx2(row: &mut [f32], k: f32) {
    scale_row_generic(row, k)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The two row kernels, with the widest vector unit this CPU has (same results either way:
/// the lane order is fixed and no FMA contraction is used).
#[derive(Clone, Copy)]
struct RowKernels {
    avx2: bool,
}

impl RowKernels {
    fn detect() -> RowKernels {
        RowKernels { avx2: has_avx2() }
    }

    #[inline]
    fn exp_row(self, row: &mut [f32]) -> (f32, f32) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 and FMA (checked in `detect`).
            return unsafe { exp_row_avx2(row) };
        }
        exp_row_generic(row)
    }

    #[inline]
    fn scale_row(self, row: &mut [f32], k: f32) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: as above.
            return unsafe { scale_row_avx2(row, k) };
        }
        scale_row_generic(row, k)
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    let last =
        |rows: usize, cols: usize, rs: usize, cs: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    assert!(dst.len() >= last(m, n, dst_rs, dst_cs), "gemm: dst too short");
    assert!(lhs.len() >= last(m, k, lhs_rs, lhs_cs), "gemm: lhs too short");
    assert!(rhs.len() >= last(k, n, rhs_rs, rhs_cs), "gemm: rhs too short");
    if m == 0 || n == 0 {
        return;
    }
    let th = threads();
    let par = if th > 1 { gemm::Parallelism::Rayon(th) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index the strides reach inside the slices; dst does
    // not overlap the inputs (a `&mut` borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `v = β2·v + (1 − β2)·(s·g)²`.
struct SecondMoment<'a>(&'a AdamWStep);
/// `m = β1·m + (1 − β1)·s·g`.
struct FirstMoment<'a>(&'a AdamWStep);
/// `w = w·(1 − lr·wd) − lr/bc1 · m / (√v / √bc2 + eps)` (torch order: decay first).
struct AdamUpdate<'a> {
    hp: &'a AdamWStep,
    decay: bool,
}

/// `grad[ids[i]] += dy[i]` for every row `i`, in row order (deterministic).
struct AddRows;

impl InplaceOp3 for AddRows {
    fn name(&self) -> &'static str {
        "embedding-add-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let g = f32_mut(s1, l1)?;
        let ids = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::U32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("embedding-add-rows: ids must be contiguous u32"),
        };
        let dy = f32_ref(s3, l3)?;
        let h = l1.dims()[1];
        if dy.len() != ids.len() * h {
            candle_core::bail!("embedding-add-rows: {} ids for {} gradient values of width {h}", ids.len(), dy.len());
        }
        for (i, &id) in ids.iter().enumerate() {
            let Some(row) = g.get_mut(id as usize * h..(id as usize + 1) * h) else {
                candle_core::bail!("embedding-add-rows: id {id} outside the table ({} rows)", g.len() / h.max(1));
            };
            for (a, &d) in row.iter_mut().zip(&dy[i * h..(i + 1) * h]) {
                *a += d;
            }
        }
        Ok(())
    }
}

/// Runs `f` over matching blocks of `dst` and `src` (in parallel when there are threads).
fn zip_blocks(dst: &mut [f32], src: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if threads() > 1 && dst.len() > BLOCK {
        dst.par_chunks_mut(BLOCK).zip(src.par_chunks(BLOCK)).for_each(|(d, s)| f(d, s));
    } else {
        f(dst, src)
    }
}

impl InplaceOp2 for SecondMoment<'_> {
    fn name(&self) -> &'static str {
        "adamw-second-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (v, g) = (f32_mut(s1, l1)?, f32_ref(s2, l2)?);
        let (b2, s) = (self.0.beta2 as f32, self.0.grad_scale as f32);
        zip_blocks(v, g, |v, g| {
            for (v, &g) in v.iter_mut().zip(g) {
                let g = g * s;
                *v = b2 * *v + (1.0 - b2) * (g * g);
            }
        });
        Ok(())
    }
}

impl InplaceOp2 for FirstMoment<'_> {
    fn name(&self) -> &'static str {
        "adamw-first-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (m, g) = (f32_mut(s1, l1)?, f32_ref(s2, l2)?);
        let (b1, s) = (self.0.beta1 as f32, self.0.grad_scale as f32);
        zip_blocks(m, g, |m, g| {
            for (m, &g) in m.iter_mut().zip(g) {
                *m = b1 * *m + (1.0 - b1) * (g * s);
            }
        });
        Ok(())
    }
}

impl InplaceOp3 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (w, m, v) = (f32_mut(s1, l1)?, f32_ref(s2, l2)?, f32_ref(s3, l3)?);
        let hp = self.hp;
        let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
        let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
        let keep = if self.decay { (1.0 - hp.lr * hp.weight_decay) as f32 } else { 1.0 };
        let (step, rbc2, eps) = ((hp.lr / bc1) as f32, (1.0 / bc2.sqrt()) as f32, hp.eps as f32);
        let n = w.len();
        let body = |off: usize, w: &mut [f32]| {
            let (m, v) = (&m[off..off + w.len()], &v[off..off + w.len()]);
            for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                *w = *w * keep - step * m / (v.sqrt() * rbc2 + eps);
            }
        };
        if m.len() != n || v.len() != n {
            candle_core::bail!("adamw-update: {n} weights, {} and {} moments", m.len(), v.len());
        }
        if threads() > 1 && n > BLOCK {
            w.par_chunks_mut(BLOCK).enumerate().for_each(|(i, w)| body(i * BLOCK, w));
        } else {
            body(0, w);
        }
        Ok(())
    }
}

impl Ops for CpuOps {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn rms_norm_fwd(&self, x: &Tensor, w: &Tensor, eps: f64) -> Result<RmsNormOut> {
        ReferenceOps.rms_norm_fwd(x, w, eps)
    }

    fn rms_norm_bwd(&self, dy: &Tensor, x: &Tensor, w: &Tensor, rstd: &Tensor) -> Result<(Tensor, Tensor)> {
        ReferenceOps.rms_norm_bwd(dy, x, w, rstd)
    }

    fn rope_fwd(&self, x: &Tensor, rope: &RopeCtx) -> Result<Tensor> {
        ReferenceOps.rope_fwd(x, rope)
    }

    fn rope_bwd(&self, dy: &Tensor, rope: &RopeCtx) -> Result<Tensor> {
        ReferenceOps.rope_bwd(dy, rope)
    }

    fn attn_fwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, seg: &Segments, scale: f64) -> Result<AttnOut> {
        ReferenceOps.attn_fwd(q, k, v, seg, scale)
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
        ReferenceOps.attn_bwd(dout, q, k, v, fwd, seg, scale)
    }

    fn swiglu_fwd(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        ReferenceOps.swiglu_fwd(gate, up)
    }

    fn swiglu_bwd(&self, dy: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
        ReferenceOps.swiglu_bwd(dy, gate, up)
    }

    fn embedding_fwd(&self, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
        ReferenceOps.embedding_fwd(ids, table)
    }

    fn embedding_bwd_acc(&self, ids: &Tensor, dy: &Tensor, grad: Tensor) -> Result<Tensor> {
        let f32c = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous();
        if !f32c(dy) || !f32c(&grad) || ids.dtype() != DType::U32 || grad.rank() != 2 {
            return ReferenceOps.embedding_bwd_acc(ids, dy, grad);
        }
        // In place (the accumulator is handed over): the reference's index_add copies the whole
        // (V, H) gradient, 39 MB for the Qwen vocabulary at width 64.
        let ids = ids.contiguous()?;
        grad.inplace_op3(&ids, dy, &AddRows)?;
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
        if h.dtype() != DType::F32 || w.dtype() != DType::F32 || !h.device().is_cpu() || !w.is_contiguous() {
            return ReferenceOps.cross_entropy(h, w, t, grad_scale, chunk, dw_acc);
        }
        let (n, hd) = h.dims2()?;
        let (v, hd2) = w.dims2()?;
        if hd != hd2 {
            return Err(bad(format!("cross_entropy: hidden {hd}, head weight {v}×{hd2}")));
        }
        let hs = to_f32(h)?;
        let rows = t.rows.to_vec1::<u32>()?;
        let targets = t.targets.to_vec1::<u32>()?;
        if rows.len() != t.count || targets.len() != t.count {
            return Err(bad(format!("cross_entropy: {} counted, {} rows, {} targets", t.count, rows.len(), targets.len())));
        }
        if let Some((&r, &tg)) = rows.iter().zip(&targets).find(|(&r, &tg)| r as usize >= n || tg as usize >= v) {
            return Err(bad(format!("cross_entropy: row {r} of {n} or target {tg} of {v} out of range")));
        }
        let chunk = chunk.clamp(1, t.count.max(1));
        let kern = RowKernels::detect();
        let mut buf = self.logits.lock().map_err(|_| bad("cross_entropy: workspace lock poisoned"))?;
        if buf.len() < chunk * v {
            // Sized once for the largest chunk seen; zero-filled pages are mapped on first use.
            *buf = vec![0f32; chunk * v];
        }
        let mut loss = 0f64;
        let mut dh = grad_scale.map(|_| vec![0f32; n * hd]);
        let mut dw: Option<Vec<f32>> = None;
        let mut hc = vec![0f32; chunk * hd];
        let mut dhc = vec![0f32; chunk * hd];
        let mut row_loss = vec![0f32; chunk];
        let mut start = 0;
        while start < t.count {
            let len = chunk.min(t.count - start);
            let (rs, ts) = (&rows[start..start + len], &targets[start..start + len]);
            for (i, &r) in rs.iter().enumerate() {
                hc[i * hd..(i + 1) * hd].copy_from_slice(&hs[r as usize * hd..(r as usize + 1) * hd]);
            }
            let logits = &mut buf[..len * v];
            // logits = hc · Wᵀ
            with_f32(w, |w| gemm(len, v, hd, logits, (v, 1), false, &hc, (hd, 1), w, (1, hd)))?;
            // Per row: loss = lse − x[target]; with a gradient, the row becomes
            // s · (softmax − onehot(target)).
            let per_row = |(row, (out, &tg)): (&mut [f32], (&mut f32, &u32))| {
                let picked = row[tg as usize];
                let (m, sum) = kern.exp_row(row);
                *out = m + sum.ln() - picked;
                if let Some(s) = grad_scale {
                    kern.scale_row(row, s as f32 / sum);
                    row[tg as usize] -= s as f32;
                }
            };
            let lr = &mut row_loss[..len];
            if threads() > 1 {
                logits.par_chunks_mut(v).zip(lr.par_iter_mut().zip(ts.par_iter())).for_each(per_row);
            } else {
                logits.chunks_mut(v).zip(lr.iter_mut().zip(ts.iter())).for_each(per_row);
            }
            loss += lr.iter().map(|&x| x as f64).sum::<f64>();
            if let Some(dh) = &mut dh {
                let dl = &buf[..len * v];
                // dh rows = dl · W
                with_f32(w, |w| gemm(len, hd, v, &mut dhc, (hd, 1), false, dl, (v, 1), w, (hd, 1)))?;
                for (i, &r) in rs.iter().enumerate() {
                    for (d, &x) in dh[r as usize * hd..(r as usize + 1) * hd].iter_mut().zip(&dhc[i * hd..(i + 1) * hd]) {
                        *d += x;
                    }
                }
                // dW (+)= dlᵀ · hc
                let acc = dw.is_some();
                let g = dw.get_or_insert_with(|| vec![0f32; v * hd]);
                gemm(v, hd, len, g, (hd, 1), acc, dl, (1, v), &hc, (hd, 1));
            }
            start += len;
        }
        let dev = h.device();
        Ok(CeOut {
            loss_sum: Tensor::new(loss as f32, dev)?,
            dh: dh.map(|d| Tensor::from_vec(d, (n, hd), dev)).transpose()?,
            dw: match (dw_acc, dw) {
                (acc, None) => acc,
                (None, Some(d)) => Some(Tensor::from_vec(d, (v, hd), dev)?),
                (Some(a), Some(d)) => Some((a + Tensor::from_vec(d, (v, hd), dev)?)?),
            },
        })
    }

    fn sum_squares(&self, grads: &[Tensor]) -> Result<f64> {
        if grads.iter().any(|g| g.dtype() != DType::F32 || !g.device().is_cpu() || !g.is_contiguous()) {
            return ReferenceOps.sum_squares(grads);
        }
        let mut total = 0f64;
        for g in grads {
            total += with_f32(g, |x| {
                let block = |b: &[f32]| b.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                // Block sums added in block order: the same bytes at any thread count.
                if threads() > 1 && x.len() > BLOCK {
                    x.par_chunks(BLOCK).map(block).collect::<Vec<f64>>().iter().sum::<f64>()
                } else {
                    x.chunks(BLOCK).map(block).sum::<f64>()
                }
            })?;
        }
        Ok(total)
    }

    fn adamw_step(&self, states: &mut [AdamState], grads: &[Tensor], params: &mut [Tensor], hp: &AdamWStep) -> Result<()> {
        if states.len() != grads.len() || states.len() != params.len() {
            return Err(bad(format!("adamw_step: {} states, {} grads, {} params", states.len(), grads.len(), params.len())));
        }
        let fused = states.iter().zip(grads).all(|(s, g)| {
            let ok =
                |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous() && t.elem_count() == s.master.elem_count();
            ok(&s.master) && ok(&s.exp_avg) && ok(&s.exp_avg_sq) && ok(g)
        });
        if !fused {
            return ReferenceOps.adamw_step(states, grads, params, hp);
        }
        for ((st, g), p) in states.iter_mut().zip(grads).zip(params.iter_mut()) {
            // In place, as the CUDA backend does: the master (which an f32 model's parameter
            // shares) and the moments are the optimizer's own.
            st.exp_avg_sq.inplace_op2(g, &SecondMoment(hp))?;
            st.exp_avg.inplace_op2(g, &FirstMoment(hp))?;
            st.master.inplace_op3(&st.exp_avg, &st.exp_avg_sq, &AdamUpdate { hp, decay: st.decay && hp.weight_decay != 0.0 })?;
            *p = st.master.to_dtype(p.dtype())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn randn(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn exp_neg_is_close_to_libm() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (a, b) = (exp_neg(x), x.exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 1e-6, "max relative error {worst:e}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-1000.0) < 1e-37 && exp_neg(f32::NEG_INFINITY) < 1e-37);
    }

    /// The fused cross-entropy against the reference: loss, dh, dW, with repeated and skipped
    /// rows, a vocabulary that is not a multiple of the vector width and several chunks.
    #[test]
    fn cross_entropy_matches_the_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, hd, v) = (13, 8, 1037);
        let h = randn(&mut rng, &[n, hd], 1.0);
        let w = randn(&mut rng, &[v, hd], 0.5);
        let rows: Vec<u32> = vec![0, 2, 3, 5, 5, 8, 9, 12];
        let targets: Vec<u32> = rows.iter().map(|_| rng.random_range(0..v as u32)).collect();
        let t = CeTargets {
            rows: Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(),
            targets: Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
            count: rows.len(),
        };
        let ops = CpuOps::new();
        for chunk in [3, 8, 100] {
            let r = ReferenceOps.cross_entropy(&h, &w, &t, Some(0.25), chunk, None).unwrap();
            let c = ops.cross_entropy(&h, &w, &t, Some(0.25), chunk, None).unwrap();
            let (lr, lc) = (r.loss_sum.to_scalar::<f32>().unwrap(), c.loss_sum.to_scalar::<f32>().unwrap());
            assert!((lr - lc).abs() / lr < 1e-5, "chunk {chunk}: loss {lc} vs {lr}");
            assert!(max_rel(c.dh.as_ref().unwrap(), r.dh.as_ref().unwrap()) < 1e-5, "chunk {chunk}: dh");
            assert!(max_rel(c.dw.as_ref().unwrap(), r.dw.as_ref().unwrap()) < 1e-5, "chunk {chunk}: dw");
            let f = ops.cross_entropy(&h, &w, &t, None, chunk, None).unwrap();
            assert_eq!(f.loss_sum.to_scalar::<f32>().unwrap(), lc, "forward-only loss");
            assert!(f.dh.is_none() && f.dw.is_none());
        }
        let none = CeTargets { rows: t.rows.narrow(0, 0, 0).unwrap(), targets: t.targets.narrow(0, 0, 0).unwrap(), count: 0 };
        let c = ops.cross_entropy(&h, &w, &none, Some(1.0), 4, None).unwrap();
        assert_eq!(c.loss_sum.to_scalar::<f32>().unwrap(), 0.0);
        assert!(c.dw.is_none());
        assert_eq!(c.dh.unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn embedding_backward_matches_the_reference_in_place() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ids = Tensor::new(&[3u32, 0, 3, 9, 3], &Device::Cpu).unwrap();
        let dy = randn(&mut rng, &[5, 4], 1.0);
        let start = randn(&mut rng, &[10, 4], 1.0);
        let want = ReferenceOps.embedding_bwd_acc(&ids, &dy, start.copy().unwrap()).unwrap();
        let got = CpuOps::new().embedding_bwd_acc(&ids, &dy, start.copy().unwrap()).unwrap();
        assert!(max_rel(&got, &want) < 1e-6);
        let out_of_range = Tensor::new(&[10u32], &Device::Cpu).unwrap();
        let one = dy.narrow(0, 0, 1).unwrap();
        let err = CpuOps::new().embedding_bwd_acc(&out_of_range, &one, start.copy().unwrap()).unwrap_err();
        assert!(err.to_string().contains("id 10 outside the table"), "{err}");
    }

    /// In-place AdamW against the reference over three steps, with and without decay and clipping.
    #[test]
    fn adamw_matches_the_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let shapes: [&[usize]; 3] = [&[70_001], &[5, 7], &[3]];
        let fresh = |rng: &mut ChaCha8Rng| -> Vec<AdamState> {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let m = randn(rng, s, 1.0);
                    AdamState { exp_avg: m.zeros_like().unwrap(), exp_avg_sq: m.zeros_like().unwrap(), master: m, decay: i != 2 }
                })
                .collect()
        };
        let mut a = fresh(&mut rng);
        let mut b: Vec<AdamState> = a
            .iter()
            .map(|s| AdamState {
                master: s.master.copy().unwrap(),
                exp_avg: s.exp_avg.copy().unwrap(),
                exp_avg_sq: s.exp_avg_sq.copy().unwrap(),
                decay: s.decay,
            })
            .collect();
        let mut pa: Vec<Tensor> = a.iter().map(|s| s.master.clone()).collect();
        let mut pb: Vec<Tensor> = b.iter().map(|s| s.master.copy().unwrap()).collect();
        let ops = CpuOps::new();
        for step in 1..=3u64 {
            let grads: Vec<Tensor> = shapes.iter().map(|s| randn(&mut rng, s, 0.1)).collect();
            let hp = AdamWStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                step,
                grad_scale: if step == 2 { 0.5 } else { 1.0 },
            };
            ops.adamw_step(&mut a, &grads, &mut pa, &hp).unwrap();
            ReferenceOps.adamw_step(&mut b, &grads, &mut pb, &hp).unwrap();
            let want = ReferenceOps.sum_squares(&grads).unwrap();
            assert!((ops.sum_squares(&grads).unwrap() - want).abs() / want < 1e-12);
        }
        for i in 0..shapes.len() {
            assert!(max_rel(&a[i].master, &b[i].master) < 1e-6, "master {i}");
            assert!(max_rel(&a[i].exp_avg, &b[i].exp_avg) < 1e-6, "exp_avg {i}");
            assert!(max_rel(&a[i].exp_avg_sq, &b[i].exp_avg_sq) < 1e-5, "exp_avg_sq {i}");
            assert!(max_rel(&pa[i], &pb[i]) < 1e-6, "param {i}");
        }
    }
}
