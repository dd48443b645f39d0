//! The CPU backend: the reference units, except the three that dominate a step of a small model
//! with a large vocabulary (the `tiny` preset: 9.7 M of its 9.8 M parameters are the tied
//! embedding), which run as loops over the raw f32 buffers:
//! - the LM head's cross-entropy: logits written by one GEMM into a buffer kept across steps
//!   (the reference allocates and page-faults a fresh `chunk × V` tensor for each of its ~8
//!   element-wise ops), one exp per logit (a polynomial, in AVX2) turned into the gradient in
//!   place, then two GEMMs for `dh` and `dW`; without a gradient (validation, model grading) in
//!   cache-sized blocks of tokens × vocabulary with a running max and sum instead;
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
    let x = if x < EXP_MIN { EXP_MIN } else { x };
    let t = x * LOG2E + EXP_SHIFTER;
    let n = t - EXP_SHIFTER;
    let r = x - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the integer in `t`'s mantissa: n + 127 into the exponent field.
    let scale = f32::from_bits(((t.to_bits() as i32).wrapping_sub(EXP_SHIFTER.to_bits() as i32).wrapping_add(127) << 23) as u32);
    p * scale
}

/// [`exp_neg`]'s clamp: below it `2^n` would leave the normal range.
const EXP_MIN: f32 = -87.0;
/// ln 2 split in two for an exact range reduction (Cody–Waite).
const EXP_LN2_HI: f32 = 0.693_145_75;
const EXP_LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2^23: adding it rounds to the nearest integer, which its low mantissa bits then hold.
const EXP_SHIFTER: f32 = 12_582_912.0;

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

/// [`exp_row_generic`] in AVX2 intrinsics: the same operations per lane in the same order (two
/// 8-wide registers are its 16 lanes; no FMA contraction), so the same bits. Written out because
/// the dev profile builds this crate at opt-level 1, where LLVM does not vectorise the generic
/// loop: it ran scalar and took 41 % of model grading's profile, as much as the LM-head GEMM.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_row_avx2(row: &mut [f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    const _: () = assert!(LANES == 16, "two 8-wide registers hold the lanes");
    let body = row.len() / LANES * LANES;
    let p = row.as_mut_ptr();
    // SAFETY (every load and store below): offsets stay below `body` ≤ row.len().
    let (mut m0, mut m1) = (_mm256_set1_ps(f32::NEG_INFINITY), _mm256_set1_ps(f32::NEG_INFINITY));
    let mut i = 0;
    while i < body {
        // max(c, m): c where c > m, else m — the generic `if c > m { c } else { m }`.
        m0 = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(p.add(i + 8)), m1);
        i += LANES;
    }
    let mut mx = [0f32; LANES];
    _mm256_storeu_ps(mx.as_mut_ptr(), m0);
    _mm256_storeu_ps(mx.as_mut_ptr().add(8), m1);
    let mut m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &x in &row[body..] {
        m = if x > m { x } else { m };
    }
    let vm = _mm256_set1_ps(m);
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i < body {
        let e0 = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
        let e1 = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), vm));
        _mm256_storeu_ps(p.add(i), e0);
        _mm256_storeu_ps(p.add(i + 8), e1);
        a0 = _mm256_add_ps(a0, e0);
        a1 = _mm256_add_ps(a1, e1);
        i += LANES;
    }
    let mut acc = [0f32; LANES];
    _mm256_storeu_ps(acc.as_mut_ptr(), a0);
    _mm256_storeu_ps(acc.as_mut_ptr().add(8), a1);
    let mut s = 0f32;
    for x in &mut row[body..] {
        *x = exp_neg(*x - m);
        s += *x;
    }
    (m, acc.iter().sum::<f32>() + s)
}

/// [`exp_neg`] on 8 lanes, operation for operation (mul then add, never fused).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_neg_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = |v: f32| _mm256_set1_ps(v);
    let (mul, add, sub) = (|a, b| _mm256_mul_ps(a, b), |a, b| _mm256_add_ps(a, b), |a, b| _mm256_sub_ps(a, b));
    // `if x < -87 { -87 } else { x }`: max(x, -87) for every non-NaN x.
    let x = _mm256_max_ps(x, c(EXP_MIN));
    let t = add(mul(x, c(std::f32::consts::LOG2_E)), c(EXP_SHIFTER));
    let n = sub(t, c(EXP_SHIFTER));
    let r = sub(sub(x, mul(n, c(EXP_LN2_HI))), mul(n, c(EXP_LN2_LO)));
    let mut q = add(c(1.0 / 120.0), mul(r, c(1.0 / 720.0)));
    q = add(c(1.0 / 24.0), mul(r, q));
    q = add(c(1.0 / 6.0), mul(r, q));
    q = add(c(0.5), mul(r, q));
    q = add(c(1.0), mul(r, q));
    q = add(c(1.0), mul(r, q));
    let bits = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(EXP_SHIFTER.to_bits() as i32));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(127)), 23));
    mul(q, scale)
}

/// `row *= k` in AVX2 (one multiply per lane: the generic's bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_row_avx2(row: &mut [f32], k: f32) {
    use std::arch::x86_64::*;
    let body = row.len() / 8 * 8;
    let (p, vk) = (row.as_mut_ptr(), _mm256_set1_ps(k));
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 ≤ body ≤ row.len().
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), vk));
        i += 8;
    }
    scale_row_generic(&mut row[body..], k)
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

thread_local! {
    /// Set inside tasks that are themselves parallel: their GEMMs run on the calling thread.
    static SERIAL_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's GEMMs serial.
fn serial_gemm<R>(f: impl FnOnce() -> R) -> R {
    let was = SERIAL_GEMM.with(|c| c.replace(true));
    let r = f();
    SERIAL_GEMM.with(|c| c.set(was));
    r
}

/// Tokens per block of the forward-only cross-entropy.
const CE_FWD_TOKENS: usize = 128;
/// Vocabulary rows per block of the forward-only cross-entropy: the block of the head weight
/// (at width 64: 256 KiB) and of the logits (`CE_FWD_TOKENS ×` this: 128 KiB) stay in a core's
/// L2 cache, where the chunked path writes and rereads `chunk × V` logits through DRAM.
const CE_FWD_VOCAB: usize = 1024;

/// The loss of each counted row without a gradient (validation, model grading): per block of
/// [`CE_FWD_TOKENS`] rows, the logits of [`CE_FWD_VOCAB`] vocabulary rows at a time, merged
/// into a running `(max, Σ e^(x − max))` per row. Blocks run in parallel, each row's blocks in
/// vocabulary order, so a row's loss does not depend on the thread count. Equals the chunked
/// path's loss up to f32 rounding (the sum is taken in another order).
fn ce_forward_blocked(kern: RowKernels, hs: &[f32], hd: usize, w: &[f32], v: usize, rows: &[u32], targets: &[u32]) -> Vec<f32> {
    let one_block = |(rs, ts): (&[u32], &[u32])| -> Vec<f32> {
        let tb = rs.len();
        let mut hc = vec![0f32; tb * hd];
        for (i, &r) in rs.iter().enumerate() {
            hc[i * hd..(i + 1) * hd].copy_from_slice(&hs[r as usize * hd..(r as usize + 1) * hd]);
        }
        let mut buf = vec![0f32; tb * CE_FWD_VOCAB];
        let (mut m, mut s, mut picked) = (vec![f32::NEG_INFINITY; tb], vec![0f32; tb], vec![0f32; tb]);
        let mut v0 = 0;
        while v0 < v {
            let vb = CE_FWD_VOCAB.min(v - v0);
            let logits = &mut buf[..tb * vb];
            serial_gemm(|| gemm(tb, vb, hd, logits, (vb, 1), false, &hc, (hd, 1), &w[v0 * hd..(v0 + vb) * hd], (1, hd)));
            for (i, row) in logits.chunks_mut(vb).enumerate() {
                let tg = ts[i] as usize;
                if (v0..v0 + vb).contains(&tg) {
                    picked[i] = row[tg - v0];
                }
                let (bm, bs) = kern.exp_row(row);
                if bm > m[i] {
                    s[i] = s[i] * exp_neg(m[i] - bm) + bs;
                    m[i] = bm;
                } else {
                    s[i] += bs * exp_neg(bm - m[i]);
                }
            }
            v0 += vb;
        }
        (0..tb).map(|i| m[i] + s[i].ln() - picked[i]).collect()
    };
    let blocks = rows.chunks(CE_FWD_TOKENS).zip(targets.chunks(CE_FWD_TOKENS));
    if threads() > 1 {
        blocks.collect::<Vec<_>>().into_par_iter().map(one_block).collect::<Vec<_>>().concat()
    } else {
        blocks.map(one_block).collect::<Vec<_>>().concat()
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
    let th = if SERIAL_GEMM.with(|c| c.get()) { 1 } else { threads() };
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
        let kern = RowKernels::detect();
        if grad_scale.is_none() {
            let losses = with_f32(w, |w| ce_forward_blocked(kern, &hs, hd, w, v, &rows, &targets))?;
            let loss = losses.iter().map(|&x| x as f64).sum::<f64>();
            return Ok(CeOut { loss_sum: Tensor::new(loss as f32, h.device())?, dh: None, dw: dw_acc });
        }
        let chunk = chunk.clamp(1, t.count.max(1));
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

    /// The AVX2 row kernels give the generic kernels' bits (the trainer's numbers must not
    /// depend on the CPU), on rows of every remainder length and with very negative logits.
    #[test]
    fn avx2_row_kernels_equal_the_generic_bits() {
        if !has_avx2() {
            eprintln!("SKIPPED: this CPU has no AVX2+FMA");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for len in (1..=40).chain([151_936, 1000 * LANES + 7]) {
            let mut row: Vec<f32> = (0..len).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * 30.0).collect();
            row[rng.random_range(0..len)] = -1e4;
            let mut a = row.clone();
            let mut b = row.clone();
            // SAFETY: checked above.
            let ra = unsafe { exp_row_avx2(&mut a) };
            let rb = exp_row_generic(&mut b);
            assert_eq!((ra.0.to_bits(), ra.1.to_bits()), (rb.0.to_bits(), rb.1.to_bits()), "row of {len}");
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "row of {len}");
            // SAFETY: as above.
            unsafe { scale_row_avx2(&mut a, 0.37) };
            scale_row_generic(&mut b, 0.37);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "scaled row of {len}");
        }
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
            let lf = f.loss_sum.to_scalar::<f32>().unwrap();
            assert!((lf - lc).abs() / lc < 1e-6, "forward-only loss {lf} vs {lc}");
            assert!(f.dh.is_none() && f.dw.is_none());
        }
        let none = CeTargets { rows: t.rows.narrow(0, 0, 0).unwrap(), targets: t.targets.narrow(0, 0, 0).unwrap(), count: 0 };
        let c = ops.cross_entropy(&h, &w, &none, Some(1.0), 4, None).unwrap();
        assert_eq!(c.loss_sum.to_scalar::<f32>().unwrap(), 0.0);
        assert!(c.dw.is_none());
        assert_eq!(c.dh.unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    /// The forward-only path (blocks of tokens × vocabulary, running max and sum) against the
    /// reference's per-row losses: several token blocks, a vocabulary of three blocks that is
    /// no multiple of either block, targets in every block, and rows whose maximum lies in a
    /// later block than their first (the running sum is rescaled).
    #[test]
    fn forward_only_cross_entropy_matches_the_reference_per_row() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (n, hd, v) = (2 * CE_FWD_TOKENS + 11, 16, 2 * CE_FWD_VOCAB + 37);
        let h = randn(&mut rng, &[n, hd], 1.0);
        let mut w: Vec<f32> = randn(&mut rng, &[v, hd], 1.5).flatten_all().unwrap().to_vec1().unwrap();
        // The last block's rows aligned with h's first rows: their maxima come late.
        for k in 0..8 {
            for d in 0..hd {
                w[(v - 1 - k) * hd + d] *= 4.0;
            }
        }
        let w = Tensor::from_vec(w, (v, hd), &Device::Cpu).unwrap();
        let rows: Vec<u32> = (0..n as u32).filter(|r| r % 7 != 3).collect();
        let targets: Vec<u32> = rows.iter().enumerate().map(|(i, _)| ((i * 977) % v) as u32).collect();
        let ops = CpuOps::new();
        for (i, (&r, &tg)) in rows.iter().zip(&targets).enumerate() {
            let one =
                CeTargets { rows: Tensor::new(&[r], &Device::Cpu).unwrap(), targets: Tensor::new(&[tg], &Device::Cpu).unwrap(), count: 1 };
            let want = ReferenceOps.cross_entropy(&h, &w, &one, Some(1.0), 1, None).unwrap().loss_sum.to_scalar::<f32>().unwrap();
            let got = ops.cross_entropy(&h, &w, &one, None, 1, None).unwrap().loss_sum.to_scalar::<f32>().unwrap();
            assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "row {i}: {got} vs {want}");
        }
        let all = CeTargets {
            rows: Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(),
            targets: Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
            count: rows.len(),
        };
        let want = ReferenceOps.cross_entropy(&h, &w, &all, Some(1.0), 7, None).unwrap().loss_sum.to_scalar::<f32>().unwrap();
        let got = ops.cross_entropy(&h, &w, &all, None, 7, None).unwrap().loss_sum.to_scalar::<f32>().unwrap();
        assert!((got - want).abs() / want < 1e-5, "sum {got} vs {want}");
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
