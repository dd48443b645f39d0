//! The reference backend: every unit composed from plain candle ops, statistics in f32 (f64
//! under f64 compute). It runs on any device; on CPU it is what fused kernels are tested against.
//! Attention builds the `(T, T)` scores per head group (fine for a reference, not for speed).

use candle_core::{DType, Tensor, D};

use super::{acc_dtype, AdamState, AdamWStep, AttnOut, CeOut, CeTargets, Ops, RmsNormOut, RopeCtx, Segments};
use crate::train::error::Result;

/// Composed-candle-ops implementation of [`Ops`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceOps;

/// `x` rotated by the angles (`sign = 1`) or by their negation (`sign = -1`), half-rotation layout.
fn rotate(x: &Tensor, rope: &RopeCtx, sign: f64) -> Result<Tensor> {
    let (b, t, h, d) = x.dims4()?;
    let acc = acc_dtype(x.dtype());
    let half = d / 2;
    let xf = x.to_dtype(acc)?.reshape((b * t, h, d))?;
    let x1 = xf.narrow(2, 0, half)?;
    let x2 = xf.narrow(2, half, half)?;
    let c = rope.cos.to_dtype(acc)?.unsqueeze(1)?;
    let s = (rope.sin.to_dtype(acc)?.unsqueeze(1)? * sign)?;
    let y1 = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
    let y2 = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
    Ok(Tensor::cat(&[&y1, &y2], 2)?.reshape((b, t, h, d))?.to_dtype(x.dtype())?)
}

/// Additive mask `(B, 1, 1, T, T)`: 0 where query `i` may see key `j` (`j ≤ i`, same segment), −∞ elsewhere.
fn attn_bias(seg: &Segments, dtype: DType) -> Result<Tensor> {
    let (b, t) = (seg.batch, seg.seq_len);
    let dev = seg.segment_ids.device();
    let ids = &seg.segment_ids;
    let same = ids.unsqueeze(2)?.broadcast_eq(&ids.unsqueeze(1)?)?; // (B, T, T) u8
    let causal = Tensor::tril2(t, DType::U8, dev)?;
    let allowed = same.broadcast_mul(&causal)?;
    let zero = Tensor::zeros((b, t, t), dtype, dev)?;
    let ninf = Tensor::full(f32::NEG_INFINITY, (b, t, t), dev)?.to_dtype(dtype)?;
    Ok(allowed.where_cond(&zero, &ninf)?.reshape((b, 1, 1, t, t))?)
}

/// Heads-major views for attention: q `(B, n_kv, g·T, D)`, k and v `(B, n_kv, T, D)`, in `acc`.
fn heads(q: &Tensor, k: &Tensor, v: &Tensor, acc: DType) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, nh, d) = q.dims4()?;
    let nkv = k.dim(2)?;
    let g = nh / nkv;
    let qh = q.to_dtype(acc)?.transpose(1, 2)?.contiguous()?.reshape((b, nkv, g * t, d))?;
    let kh = k.to_dtype(acc)?.transpose(1, 2)?.contiguous()?;
    let vh = v.to_dtype(acc)?.transpose(1, 2)?.contiguous()?;
    Ok((qh, kh, vh))
}

/// `(B, n_kv, g·T, D)` back to `(B, T, n_heads, D)`.
fn unheads(x: &Tensor, b: usize, t: usize, nh: usize, d: usize, dtype: DType) -> Result<Tensor> {
    Ok(x.reshape((b, nh, t, d))?.transpose(1, 2)?.contiguous()?.to_dtype(dtype)?)
}

/// Scaled, masked scores `(B, n_kv, g, T, T)`.
fn scores(qh: &Tensor, kh: &Tensor, seg: &Segments, scale: f64, g: usize) -> Result<Tensor> {
    let (b, nkv, gt, _) = qh.dims4()?;
    let t = gt / g;
    let s = (qh.matmul(&kh.t()?)? * scale)?.reshape((b, nkv, g, t, t))?;
    Ok(s.broadcast_add(&attn_bias(seg, s.dtype())?)?)
}

impl Ops for ReferenceOps {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn rms_norm_fwd(&self, x: &Tensor, w: &Tensor, eps: f64) -> Result<RmsNormOut> {
        let acc = acc_dtype(x.dtype());
        let xf = x.to_dtype(acc)?;
        let rstd = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        let y = xf.broadcast_mul(&rstd)?.to_dtype(x.dtype())?.broadcast_mul(w)?;
        Ok(RmsNormOut { y, rstd: rstd.squeeze(D::Minus1)? })
    }

    fn rms_norm_bwd(&self, dy: &Tensor, x: &Tensor, w: &Tensor, rstd: &Tensor) -> Result<(Tensor, Tensor)> {
        let acc = acc_dtype(x.dtype());
        let r = rstd.to_dtype(acc)?.unsqueeze(D::Minus1)?;
        let xhat = x.to_dtype(acc)?.broadcast_mul(&r)?;
        let dyf = dy.to_dtype(acc)?;
        let dw = (&dyf * &xhat)?.sum(0)?;
        let g = dyf.broadcast_mul(&w.to_dtype(acc)?)?;
        let m = (&g * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = (g - xhat.broadcast_mul(&m)?)?.broadcast_mul(&r)?;
        Ok((dx.to_dtype(x.dtype())?, dw))
    }

    fn rope_fwd(&self, x: &Tensor, rope: &RopeCtx) -> Result<Tensor> {
        rotate(x, rope, 1.0)
    }

    fn rope_bwd(&self, dy: &Tensor, rope: &RopeCtx) -> Result<Tensor> {
        rotate(dy, rope, -1.0)
    }

    fn attn_fwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, seg: &Segments, scale: f64) -> Result<AttnOut> {
        let (b, t, nh, d) = q.dims4()?;
        let nkv = k.dim(2)?;
        let g = nh / nkv;
        let acc = acc_dtype(q.dtype());
        let (qh, kh, vh) = heads(q, k, v, acc)?;
        let s = scores(&qh, &kh, seg, scale, g)?;
        let m = s.max_keepdim(D::Minus1)?;
        let lse = (m.clone() + s.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
        let p = s.broadcast_sub(&lse)?.exp()?.reshape((b, nkv, g * t, t))?;
        let out = unheads(&p.matmul(&vh)?, b, t, nh, d, q.dtype())?;
        Ok(AttnOut { out, lse: lse.reshape((b, nh, t))? })
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
        let (b, t, nh, d) = q.dims4()?;
        let nkv = k.dim(2)?;
        let g = nh / nkv;
        let acc = acc_dtype(q.dtype());
        let (qh, kh, vh) = heads(q, k, v, acc)?;
        let lse = fwd.lse.to_dtype(acc)?.reshape((b, nkv, g, t, 1))?;
        let p = scores(&qh, &kh, seg, scale, g)?.broadcast_sub(&lse)?.exp()?.reshape((b, nkv, g * t, t))?;
        let to_heads = |x: &Tensor| -> Result<Tensor> { Ok(x.to_dtype(acc)?.transpose(1, 2)?.contiguous()?.reshape((b, nkv, g * t, d))?) };
        let dout_h = to_heads(dout)?;
        let out_h = to_heads(&fwd.out)?;
        let dv = p.t()?.matmul(&dout_h)?;
        let dp = dout_h.matmul(&vh.t()?)?;
        let di = (&dout_h * &out_h)?.sum_keepdim(D::Minus1)?;
        let ds = (&p * dp.broadcast_sub(&di)?)?;
        let dq = (ds.matmul(&kh)? * scale)?;
        let dk = (ds.t()?.matmul(&qh)? * scale)?;
        let dq = unheads(&dq, b, t, nh, d, q.dtype())?;
        let dk = dk.transpose(1, 2)?.contiguous()?.to_dtype(k.dtype())?;
        let dv = dv.transpose(1, 2)?.contiguous()?.to_dtype(v.dtype())?;
        Ok((dq, dk, dv))
    }

    fn swiglu_fwd(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let acc = acc_dtype(gate.dtype());
        Ok((gate.to_dtype(acc)?.silu()? * up.to_dtype(acc)?)?.to_dtype(gate.dtype())?)
    }

    fn swiglu_bwd(&self, dy: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
        let acc = acc_dtype(gate.dtype());
        let g = gate.to_dtype(acc)?;
        let u = up.to_dtype(acc)?;
        let dyf = dy.to_dtype(acc)?;
        let sig = (g.neg()?.exp()? + 1.0)?.recip()?;
        let silu = (&g * &sig)?;
        // d silu / dg = σ(g) · (1 + g · (1 − σ(g)))
        let dsilu = (&sig * ((&g * (1.0 - &sig)?)? + 1.0)?)?;
        let dgate = ((&dyf * &u)? * dsilu)?;
        let dup = (&dyf * silu)?;
        Ok((dgate.to_dtype(gate.dtype())?, dup.to_dtype(up.dtype())?))
    }

    fn embedding_fwd(&self, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
        Ok(table.index_select(ids, 0)?)
    }

    fn embedding_bwd_acc(&self, ids: &Tensor, dy: &Tensor, grad: Tensor) -> Result<Tensor> {
        Ok(grad.index_add(ids, &dy.to_dtype(grad.dtype())?, 0)?)
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
        let cd = h.dtype();
        let acc = acc_dtype(cd);
        let dev = h.device();
        let mut loss_sum = Tensor::zeros((), acc, dev)?;
        let mut dh_rows = Vec::new();
        let mut dw: Option<Tensor> = dw_acc;
        let chunk = chunk.max(1);
        let mut start = 0;
        while start < t.count {
            let len = chunk.min(t.count - start);
            let rows = t.rows.narrow(0, start, len)?;
            let tgt = t.targets.narrow(0, start, len)?.unsqueeze(1)?;
            let hc = h.index_select(&rows, 0)?;
            let logits = hc.matmul(&w.t()?)?.to_dtype(acc)?;
            let m = logits.max_keepdim(1)?;
            let lse = (logits.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?;
            let picked = logits.gather(&tgt, 1)?;
            loss_sum = (loss_sum + (&lse - picked)?.sum_all()?)?;
            if let Some(s) = grad_scale {
                // d(s·Σ loss)/dlogits = s · (softmax − onehot(target))
                let p = (logits.broadcast_sub(&lse)?.exp()? * s)?;
                let neg = Tensor::full(-s, (len, 1), dev)?.to_dtype(acc)?;
                let dl = p.scatter_add(&tgt, &neg, 1)?.to_dtype(cd)?;
                dh_rows.push(dl.matmul(w)?);
                let g = dl.t()?.matmul(&hc)?.to_dtype(acc)?;
                dw = Some(match dw {
                    None => g,
                    Some(a) => (a + g)?,
                });
            }
            start += len;
        }
        let dh = match grad_scale {
            None => None,
            Some(_) => {
                let zeros = Tensor::zeros(h.shape(), acc, dev)?;
                Some(if dh_rows.is_empty() {
                    zeros.to_dtype(cd)?
                } else {
                    let d = Tensor::cat(&dh_rows, 0)?.to_dtype(acc)?;
                    zeros.index_add(&t.rows, &d, 0)?.to_dtype(cd)?
                })
            }
        };
        Ok(CeOut { loss_sum, dh, dw })
    }

    fn sum_squares(&self, grads: &[Tensor]) -> Result<f64> {
        let mut total = 0f64;
        for g in grads {
            total += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(total)
    }

    fn adamw_step(&self, states: &mut [AdamState], grads: &[Tensor], params: &mut [Tensor], hp: &AdamWStep) -> Result<()> {
        let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
        let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
        for ((st, g), p) in states.iter_mut().zip(grads).zip(params.iter_mut()) {
            let g = (g.to_dtype(st.master.dtype())? * hp.grad_scale)?;
            // torch order: decay the weight, update the moments, then the Adam step.
            let mut w = st.master.clone();
            if st.decay && hp.weight_decay != 0.0 {
                w = (w * (1.0 - hp.lr * hp.weight_decay))?;
            }
            st.exp_avg = ((&st.exp_avg * hp.beta1)? + (&g * (1.0 - hp.beta1))?)?;
            st.exp_avg_sq = ((&st.exp_avg_sq * hp.beta2)? + (g.sqr()? * (1.0 - hp.beta2))?)?;
            let denom = ((st.exp_avg_sq.sqrt()? / bc2.sqrt())? + hp.eps)?;
            st.master = (w - ((&st.exp_avg / denom)? * (hp.lr / bc1))?)?;
            *p = st.master.to_dtype(p.dtype())?;
        }
        Ok(())
    }
}
