//! Every unit's backward against central finite differences of its forward, in f64 on CPU.
//! L = Σ G ⊙ f(x) for a random upstream gradient G; each input coordinate is perturbed by ±h.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const H: f64 = 1e-6;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a * b).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
}

/// Numerical gradient of `l(inputs)` w.r.t. `inputs[which]`.
fn numeric(inputs: &[Tensor], which: usize, l: &dyn Fn(&[Tensor]) -> f64) -> Tensor {
    let x = &inputs[which];
    let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut grad = vec![0f64; base.len()];
    for j in 0..base.len() {
        let eval = |delta: f64| {
            let mut v = base.clone();
            v[j] += delta;
            let mut xs = inputs.to_vec();
            xs[which] = Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap();
            l(&xs)
        };
        grad[j] = (eval(H) - eval(-H)) / (2.0 * H);
    }
    Tensor::from_vec(grad, x.shape(), &Device::Cpu).unwrap()
}

/// Max |a − b| / max(|b|, 1e-3): relative error against the larger of the numeric gradient's scale.
fn assert_close(name: &str, analytic: &Tensor, numeric: &Tensor, tol: f64) {
    assert_eq!(analytic.dims(), numeric.dims(), "{name}: shape");
    let a: Vec<f64> = analytic.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let n: Vec<f64> = numeric.flatten_all().unwrap().to_vec1().unwrap();
    let scale = n.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
    let err = a.iter().zip(&n).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale;
    assert!(err < tol, "{name}: relative error {err:e} (scale {scale:e})");
    assert!(n.iter().any(|x| x.abs() > 1e-9), "{name}: numeric gradient is all zero, test is vacuous");
}

fn rope_ctx(positions: &[u32], half: usize) -> RopeCtx {
    let n = positions.len();
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for &p in positions {
        for i in 0..half {
            let a = p as f64 / 10f64.powf(i as f64 / half as f64);
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    RopeCtx {
        positions: Tensor::new(positions, &Device::Cpu).unwrap(),
        cos: Tensor::from_vec(cos, (n, half), &Device::Cpu).unwrap(),
        sin: Tensor::from_vec(sin, (n, half), &Device::Cpu).unwrap(),
    }
}

#[test]
fn rms_norm_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let ops = ReferenceOps;
    let x = randn(&mut rng, &[5, 6], 1.0);
    let w = (randn(&mut rng, &[6], 0.3) + 1.0).unwrap();
    let g = randn(&mut rng, &[5, 6], 1.0);
    let eps = 1e-5;
    let l = |xs: &[Tensor]| dot(&ops.rms_norm_fwd(&xs[0], &xs[1], eps).unwrap().y, &g);
    let fwd = ops.rms_norm_fwd(&x, &w, eps).unwrap();
    assert_eq!(fwd.rstd.dims(), [5]);
    let (dx, dw) = ops.rms_norm_bwd(&g, &x, &w, &fwd.rstd).unwrap();
    let inputs = [x, w];
    assert_close("rms dx", &dx, &numeric(&inputs, 0, &l), 1e-6);
    assert_close("rms dw", &dw, &numeric(&inputs, 1, &l), 1e-6);
}

#[test]
fn rope_backward_matches_finite_differences_and_inverts() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let ops = ReferenceOps;
    // Two rows of 4 tokens, positions reset at a segment start.
    let rope = rope_ctx(&[0, 1, 2, 0, 0, 1, 2, 3], 3);
    let x = randn(&mut rng, &[2, 4, 2, 6], 1.0);
    let g = randn(&mut rng, &[2, 4, 2, 6], 1.0);
    let l = |xs: &[Tensor]| dot(&ops.rope_fwd(&xs[0], &rope).unwrap(), &g);
    let dx = ops.rope_bwd(&g, &rope).unwrap();
    assert_close("rope dx", &dx, &numeric(std::slice::from_ref(&x), 0, &l), 1e-6);
    // Position 0 is the identity; the rotation is orthogonal (bwd ∘ fwd = id).
    let y = ops.rope_fwd(&x, &rope).unwrap();
    let back = ops.rope_bwd(&y, &rope).unwrap();
    assert!((back - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-12);
    let row0 = |t: &Tensor| t.get(0).unwrap().get(0).unwrap();
    assert!((row0(&y) - row0(&x)).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-15);
}

fn segments(ids: &[u32], b: usize, t: usize) -> Segments {
    Segments::new(ids, b, t, &Device::Cpu).unwrap()
}

#[test]
fn attention_backward_matches_finite_differences_with_gqa_and_segments() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ops = ReferenceOps;
    let (b, t, nh, nkv, d) = (2, 5, 4, 2, 3);
    // Row 0: segments of 2 and 3 tokens; row 1: one segment of 4 and a padding token.
    let seg = segments(&[0, 0, 1, 1, 1, 0, 0, 0, 0, 1], b, t);
    assert_eq!(seg.cu_seqlens.to_vec1::<u32>().unwrap(), [0, 2, 5, 9, 10]);
    assert_eq!(seg.max_seqlen, 4);
    let q = randn(&mut rng, &[b, t, nh, d], 1.0);
    let k = randn(&mut rng, &[b, t, nkv, d], 1.0);
    let v = randn(&mut rng, &[b, t, nkv, d], 1.0);
    let g = randn(&mut rng, &[b, t, nh, d], 1.0);
    let scale = 1.0 / (d as f64).sqrt();
    let l = |xs: &[Tensor]| dot(&ops.attn_fwd(&xs[0], &xs[1], &xs[2], &seg, scale).unwrap().out, &g);
    let fwd = ops.attn_fwd(&q, &k, &v, &seg, scale).unwrap();
    assert_eq!(fwd.lse.dims(), [b, nh, t]);
    let (dq, dk, dv) = ops.attn_bwd(&g, &q, &k, &v, &fwd, &seg, scale).unwrap();
    let inputs = [q, k, v];
    assert_close("attn dq", &dq, &numeric(&inputs, 0, &l), 1e-6);
    assert_close("attn dk", &dk, &numeric(&inputs, 1, &l), 1e-6);
    assert_close("attn dv", &dv, &numeric(&inputs, 2, &l), 1e-6);
    // The first token of a segment sees only itself: its output is its own value row.
    let out = fwd.out.get(0).unwrap().get(2).unwrap(); // row 0, token 2 (start of segment 1), (nh, d)
    let v_own = inputs[2].get(0).unwrap().get(2).unwrap(); // (nkv, d)
    let expect = Tensor::cat(&[v_own.get(0).unwrap(), v_own.get(0).unwrap(), v_own.get(1).unwrap(), v_own.get(1).unwrap()], 0).unwrap();
    let diff = (out.flatten_all().unwrap() - expect).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(diff < 1e-12, "segment start attends outside its segment: {diff}");
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let ops = ReferenceOps;
    let gate = randn(&mut rng, &[4, 7], 2.0);
    let up = randn(&mut rng, &[4, 7], 1.0);
    let g = randn(&mut rng, &[4, 7], 1.0);
    let l = |xs: &[Tensor]| dot(&ops.swiglu_fwd(&xs[0], &xs[1]).unwrap(), &g);
    let (dg, du) = ops.swiglu_bwd(&g, &gate, &up).unwrap();
    let inputs = [gate, up];
    assert_close("swiglu dgate", &dg, &numeric(&inputs, 0, &l), 1e-6);
    assert_close("swiglu dup", &du, &numeric(&inputs, 1, &l), 1e-6);
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let ops = ReferenceOps;
    let table = randn(&mut rng, &[6, 3], 1.0);
    // Repeated ids: their gradients add up.
    let ids = Tensor::new(&[1u32, 4, 1, 0, 1], &Device::Cpu).unwrap();
    let g = randn(&mut rng, &[5, 3], 1.0);
    let l = |xs: &[Tensor]| dot(&ops.embedding_fwd(&ids, &xs[0]).unwrap(), &g);
    let dt = ops.embedding_bwd_acc(&ids, &g, Tensor::zeros((6, 3), DType::F64, &Device::Cpu).unwrap()).unwrap();
    assert_close("embedding", &dt, &numeric(&[table], 0, &l), 1e-6);
}

#[test]
fn cross_entropy_gradients_match_finite_differences_for_any_chunk() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let ops = ReferenceOps;
    let (n, hdim, vocab) = (7, 4, 11);
    let h = randn(&mut rng, &[n, hdim], 1.0);
    let w = randn(&mut rng, &[vocab, hdim], 1.0);
    // Rows 1 and 5 do not count (a prompt token, a segment end).
    let rows = [0u32, 2, 3, 4, 6];
    let targets: Vec<u32> = (0..rows.len()).map(|_| rng.random_range(0..vocab as u32)).collect();
    let t = CeTargets {
        rows: Tensor::new(&rows, &Device::Cpu).unwrap(),
        targets: Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
        count: rows.len(),
    };
    let scale = 0.37;
    let l = |xs: &[Tensor]| ops.cross_entropy(&xs[0], &xs[1], &t, None, 3, None).unwrap().loss_sum.to_scalar::<f64>().unwrap() * scale;
    // The loss is the plain log-softmax definition.
    let logits = h.matmul(&w.t().unwrap()).unwrap();
    let lsm = candle_nn::ops::log_softmax(&logits, 1).unwrap();
    let expect: f64 =
        rows.iter().zip(&targets).map(|(&r, &y)| -lsm.get(r as usize).unwrap().get(y as usize).unwrap().to_scalar::<f64>().unwrap()).sum();
    let inputs = [h.clone(), w.clone()];
    let mut first = None;
    for chunk in [1, 2, 5, 64] {
        let out = ops.cross_entropy(&h, &w, &t, Some(scale), chunk, None).unwrap();
        let loss = out.loss_sum.to_scalar::<f64>().unwrap();
        assert!((loss - expect).abs() < 1e-10, "chunk {chunk}: {loss} vs {expect}");
        let dh = out.dh.unwrap();
        let dw = out.dw.unwrap();
        assert_close("ce dh", &dh, &numeric(&inputs, 0, &l), 1e-6);
        assert_close("ce dw", &dw, &numeric(&inputs, 1, &l), 1e-6);
        // Rows that do not count get no gradient.
        assert_eq!(dh.get(1).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
        if let Some((a, b)) = &first {
            assert_close("ce chunk-invariant dh", &dh, a, 1e-12);
            assert_close("ce chunk-invariant dw", &dw, b, 1e-12);
        } else {
            first = Some((dh, dw));
        }
    }
    let empty = CeTargets {
        rows: Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap(),
        targets: Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap(),
        count: 0,
    };
    let out = ops.cross_entropy(&h, &w, &empty, Some(1.0), 4, None).unwrap();
    assert_eq!(out.loss_sum.to_scalar::<f64>().unwrap(), 0.0);
    assert!(out.dw.is_none());
    assert_eq!(out.dh.unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
    // An accumulator handed in comes back with this call's gradient added (and untouched when
    // nothing counts).
    let (_, dw1) = first.unwrap();
    let acc = (&dw1 * 0.5).unwrap();
    let out = ops.cross_entropy(&h, &w, &t, Some(scale), 5, Some(acc.clone())).unwrap();
    assert_close("ce dw accumulated", &out.dw.unwrap(), &(&dw1 * 1.5).unwrap(), 1e-12);
    let out = ops.cross_entropy(&h, &w, &empty, Some(1.0), 4, Some(acc.clone())).unwrap();
    assert_close("ce dw untouched", &out.dw.unwrap(), &acc, 1e-15);
}

#[test]
fn linear_and_bias_grads_accumulate() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let ops = ReferenceOps;
    let x = randn(&mut rng, &[5, 3], 1.0);
    let w = randn(&mut rng, &[4, 3], 1.0);
    let bias = randn(&mut rng, &[4], 1.0);
    let g = randn(&mut rng, &[5, 4], 1.0);
    let l = |xs: &[Tensor]| dot(&xs[0].matmul(&xs[1].t().unwrap()).unwrap().broadcast_add(&xs[2]).unwrap(), &g);
    let inputs = [x.clone(), w, bias];
    let dw = ops.linear_grad_acc(&g, &x, None).unwrap();
    let db = ops.bias_grad_acc(&g, None).unwrap();
    assert_close("linear dw", &dw, &numeric(&inputs, 1, &l), 1e-6);
    assert_close("linear db", &db, &numeric(&inputs, 2, &l), 1e-6);
    let twice = ops.linear_grad_acc(&g, &x, Some(dw.clone())).unwrap();
    assert_close("accumulated", &twice, &(dw * 2.0).unwrap(), 1e-12);
}

#[test]
fn adamw_matches_the_pytorch_update() {
    // One tensor, two steps, against the closed form of torch.optim.AdamW.
    let ops = ReferenceOps;
    let dev = Device::Cpu;
    let w0 = [0.5f64, -1.0, 2.0];
    let g = [[0.1f64, -0.2, 0.3], [-0.05, 0.4, 0.0]];
    let mut st = vec![AdamState {
        master: Tensor::new(&w0, &dev).unwrap(),
        exp_avg: Tensor::zeros(3, DType::F64, &dev).unwrap(),
        exp_avg_sq: Tensor::zeros(3, DType::F64, &dev).unwrap(),
        decay: true,
    }];
    let mut params = vec![Tensor::new(&w0, &dev).unwrap()];
    let (lr, b1, b2, eps, wd, clip) = (1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5);
    let (mut w, mut m, mut v) = (w0, [0f64; 3], [0f64; 3]);
    for (i, gi) in g.iter().enumerate() {
        let step = i as u64 + 1;
        let hp = AdamWStep { lr, beta1: b1, beta2: b2, eps, weight_decay: wd, step, grad_scale: clip };
        ops.adamw_step(&mut st, &[Tensor::new(gi, &dev).unwrap()], &mut params, &hp).unwrap();
        for j in 0..3 {
            let gj = gi[j] * clip;
            w[j] *= 1.0 - lr * wd;
            m[j] = b1 * m[j] + (1.0 - b1) * gj;
            v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
            let bc1 = 1.0 - b1.powi(step as i32);
            let bc2 = 1.0 - b2.powi(step as i32);
            w[j] -= lr / bc1 * m[j] / (v[j].sqrt() / bc2.sqrt() + eps);
        }
    }
    let got: Vec<f64> = params[0].to_vec1().unwrap();
    for j in 0..3 {
        assert!((got[j] - w[j]).abs() < 1e-14, "{got:?} vs {w:?}");
    }
    assert_eq!(ops.sum_squares(&[Tensor::new(&[3f32, 4.0], &dev).unwrap(), Tensor::new(&[12f32], &dev).unwrap()]).unwrap(), 169.0);
}
