//! The whole model against candle autograd: the same Qwen2 composed from plain differentiable
//! candle ops (`Var` + `backward()`), on a packed batch with several segments, padding and
//! prompt tokens. Also: every parameter gets a gradient, recomputation changes nothing, the
//! forward matches candle-transformers' `qwen2` (the inference model `chat` will use).

use candle_core::{DType, Device, Tensor, Var, D};

use super::*;
use crate::train::ops::ReferenceOps;

pub(crate) fn cfg(tie: bool) -> Qwen2Config {
    Qwen2Config { tie_word_embeddings: tie, initializer_range: 0.1, ..Qwen2Config::preset("test").unwrap() }
}

/// Init plus noise on norms and biases, so their gradients are not special cases.
pub(crate) fn params(c: &Qwen2Config, seed: u64) -> Vec<Tensor> {
    let mut p = init_params(c, seed, DType::F32, &Device::Cpu).unwrap();
    let specs = param_specs(c);
    let noise = init_params(&Qwen2Config { initializer_range: 0.2, ..c.clone() }, seed + 1, DType::F32, &Device::Cpu).unwrap();
    for (i, s) in specs.iter().enumerate() {
        if s.is_norm_or_bias() {
            // A matrix of the noise init of the same width, first row.
            let width = s.shape[0];
            let src = noise.iter().find(|t| t.dims().len() == 2 && t.dims()[1] >= width).unwrap();
            p[i] = (&p[i] + src.get(0).unwrap().narrow(0, 0, width).unwrap()).unwrap();
        }
    }
    p
}

/// Two rows of 12: row 0 packs segments of 5, 4 and 3 tokens (SFT-like mask on the second),
/// row 1 one segment of 9 and 3 padding tokens.
pub(crate) fn packed_batch(vocab: u32) -> Batch {
    let t = 12;
    let mut b = Batch { batch: 2, seq_len: t, ..Default::default() };
    Batch::row_layout(&[5, 4, 3], t, &mut b.position_ids, &mut b.segment_ids);
    Batch::row_layout(&[9], t, &mut b.position_ids, &mut b.segment_ids);
    b.input_ids = (0..24u32).map(|i| (i * 37 + 11) % vocab).collect();
    b.loss_mask = vec![1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, /* row 1 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];
    b
}

fn rms(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let r = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps).unwrap().sqrt().unwrap().recip().unwrap();
    x.broadcast_mul(&r).unwrap().broadcast_mul(w).unwrap()
}

/// The reference: plain differentiable candle ops, repeat_kv by concatenation, additive mask,
/// composed softmax and log-softmax. Returns the mean loss over counted targets.
fn reference_loss(c: &Qwen2Config, p: &[Tensor], b: &Batch) -> Tensor {
    let dev = Device::Cpu;
    let (bs, t, d) = (b.batch, b.seq_len, c.head_dim());
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    let n = bs * t;
    let ids = Tensor::new(b.input_ids.as_slice(), &dev).unwrap();
    // RoPE tables from scratch (f64 angles of f32 frequencies, as HF).
    let inv: Vec<f32> = (0..d).step_by(2).map(|i| 1.0 / c.rope_theta.powf(i as f64 / d as f64) as f32).collect();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &pos in &b.position_ids {
        for f in &inv {
            let a = (pos as f32 * f) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (bs, t, 1, d / 2), &dev).unwrap().transpose(1, 2).unwrap();
    let sin = Tensor::from_vec(sin, (bs, t, 1, d / 2), &dev).unwrap().transpose(1, 2).unwrap();
    let rope = |x: &Tensor| {
        let x1 = x.narrow(D::Minus1, 0, d / 2).unwrap();
        let x2 = x.narrow(D::Minus1, d / 2, d / 2).unwrap();
        let y1 = (x1.broadcast_mul(&cos).unwrap() - x2.broadcast_mul(&sin).unwrap()).unwrap();
        let y2 = (x2.broadcast_mul(&cos).unwrap() + x1.broadcast_mul(&sin).unwrap()).unwrap();
        Tensor::cat(&[y1, y2], D::Minus1).unwrap()
    };
    let mut mask = vec![f32::NEG_INFINITY; bs * t * t];
    for r in 0..bs {
        for i in 0..t {
            for j in 0..=i {
                if b.segment_ids[r * t + i] == b.segment_ids[r * t + j] {
                    mask[(r * t + i) * t + j] = 0.0;
                }
            }
        }
    }
    let mask = Tensor::from_vec(mask, (bs, 1, t, t), &dev).unwrap();
    let lin = |x: &Tensor, w: &Tensor| x.matmul(&w.t().unwrap()).unwrap();
    let mut x = p[0].index_select(&ids, 0).unwrap();
    for l in 0..c.num_hidden_layers {
        let q_ = |k: usize| &p[1 + l * 12 + k];
        let hs = rms(&x, q_(0), c.rms_norm_eps);
        let heads = |y: Tensor, n: usize| y.reshape((bs, t, n, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let q = rope(&heads(lin(&hs, q_(1)).broadcast_add(q_(2)).unwrap(), nh));
        let k = rope(&heads(lin(&hs, q_(3)).broadcast_add(q_(4)).unwrap(), nkv));
        let v = heads(lin(&hs, q_(5)).broadcast_add(q_(6)).unwrap(), nkv);
        let rep = |x: &Tensor| {
            let parts: Vec<Tensor> = (0..nh).map(|hh| x.narrow(1, hh / (nh / nkv), 1).unwrap()).collect();
            Tensor::cat(&parts, 1).unwrap()
        };
        let (k, v) = (rep(&k), rep(&v));
        let s = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap().broadcast_add(&mask).unwrap();
        let pr = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        let o = pr.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((n, nh * d)).unwrap();
        x = (x + lin(&o, q_(7))).unwrap();
        let hs = rms(&x, q_(8), c.rms_norm_eps);
        let m = (lin(&hs, q_(9)).silu().unwrap() * lin(&hs, q_(10))).unwrap();
        x = (x + lin(&m, q_(11))).unwrap();
    }
    let norm = 1 + 12 * c.num_hidden_layers;
    let hs = rms(&x, &p[norm], c.rms_norm_eps);
    let head = if c.tie_word_embeddings { &p[0] } else { &p[norm + 1] };
    let lsm = candle_nn::ops::log_softmax(&lin(&hs, head), D::Minus1).unwrap();
    let (mut rows, mut tg) = (Vec::new(), Vec::new());
    for i in 0..n - 1 {
        if (i + 1) % t != 0 && b.loss_mask[i + 1] == 1 && b.segment_ids[i + 1] == b.segment_ids[i] {
            rows.push(i as u32);
            tg.push(b.input_ids[i + 1]);
        }
    }
    let count = rows.len();
    let picked = lsm
        .index_select(&Tensor::new(rows.as_slice(), &dev).unwrap(), 0)
        .unwrap()
        .gather(&Tensor::from_vec(tg, (count, 1), &dev).unwrap(), 1)
        .unwrap();
    (picked.sum_all().unwrap().neg().unwrap() / count as f64).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64;
    let norm = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64;
    diff / norm.max(1e-30)
}

fn ours(c: &Qwen2Config, p: &[Tensor], b: &Batch, recompute_layers: usize, chunk: usize) -> (f64, Grads) {
    let mut m = Qwen2::new(c, DType::F32, p, &Device::Cpu).unwrap();
    m.recompute_layers = recompute_layers;
    m.ce_chunk = chunk;
    let inp = m.inputs(b).unwrap();
    let mut g = Grads::new(p.len());
    let scale = 1.0 / inp.targets.count as f64;
    let loss = m.forward_backward(&ReferenceOps, &inp, scale, &mut g).unwrap() * scale;
    (loss, g)
}

#[test]
fn gradients_match_candle_autograd_on_a_packed_batch() {
    for tie in [true, false] {
        let c = cfg(tie);
        let p = params(&c, 11);
        let b = packed_batch(c.vocab_size as u32);
        assert_eq!(b.target_count(), 4 + 2 + 2 + 8);
        let vars: Vec<Var> = p.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let vt: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let ref_loss = reference_loss(&c, &vt, &b);
        let store = ref_loss.backward().unwrap();
        let (loss, g) = ours(&c, &p, &b, 0, 5);
        let rl = ref_loss.to_scalar::<f32>().unwrap() as f64;
        assert!((loss - rl).abs() < 1e-5 * rl, "loss {loss} vs autograd {rl}");
        let specs = param_specs(&c);
        let mut worst = (0.0, String::new());
        for (i, s) in specs.iter().enumerate() {
            let r = store.get(&vt[i]).unwrap_or_else(|| panic!("autograd gave {} no gradient", s.name));
            let e = rel_err(g.slots[i].as_ref().unwrap(), r);
            if e > worst.0 {
                worst = (e, s.name.clone());
            }
        }
        eprintln!("tie={tie}: loss {loss} vs {rl}; worst relative gradient error {:e} ({})", worst.0, worst.1);
        assert!(worst.0 < 1e-5, "tie={tie}: worst relative gradient error {:e} on {}", worst.0, worst.1);
    }
}

#[test]
fn every_parameter_gets_a_nonzero_gradient_and_recompute_is_exact() {
    for tie in [true, false] {
        let c = cfg(tie);
        let p = params(&c, 12);
        let b = packed_batch(c.vocab_size as u32);
        let (loss, g) = ours(&c, &p, &b, 0, 1024);
        // Some layers recomputed (the first one), and every layer.
        for r in [1, c.num_hidden_layers, 99] {
            let (loss_rc, g_rc) = ours(&c, &p, &b, r, 1024);
            assert_eq!(loss.to_bits(), loss_rc.to_bits());
            for (i, s) in param_specs(&c).iter().enumerate() {
                let gi = g.slots[i].as_ref().unwrap_or_else(|| panic!("{} got no gradient", s.name));
                let sq = gi.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(sq > 0.0, "{} has an all-zero gradient", s.name);
                let a: Vec<f32> = gi.flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = g_rc.slots[i].as_ref().unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{}: recomputing {r} layers changed the gradient",
                    s.name
                );
            }
        }
    }
}

#[test]
fn two_micro_batches_accumulate_the_gradient_of_their_mean() {
    // The same batch twice at half the scale: every gradient (the head's accumulates inside the
    // cross-entropy, the embedding's in its backward) equals one pass at full scale.
    for tie in [true, false] {
        let c = cfg(tie);
        let p = params(&c, 14);
        let b = packed_batch(c.vocab_size as u32);
        let (loss, g) = ours(&c, &p, &b, 0, 3);
        let m = Qwen2::new(&c, DType::F32, &p, &Device::Cpu).unwrap();
        let inp = m.inputs(&b).unwrap();
        let scale = 0.5 / inp.targets.count as f64;
        let mut g2 = Grads::new(p.len());
        let l2 = (m.forward_backward(&ReferenceOps, &inp, scale, &mut g2).unwrap()
            + m.forward_backward(&ReferenceOps, &inp, scale, &mut g2).unwrap())
            * scale;
        assert!((l2 - loss).abs() < 1e-6 * loss, "{l2} vs {loss}");
        for (i, s) in param_specs(&c).iter().enumerate() {
            let e = rel_err(g2.slots[i].as_ref().unwrap(), g.slots[i].as_ref().unwrap());
            assert!(e < 1e-6, "tie={tie} {}: relative error {e:e}", s.name);
        }
    }
}

#[test]
fn loss_ignores_prompt_and_cross_segment_predictions() {
    // A padding token is no counted target and lies in its own segment, invisible to every
    // counted prediction: changing it must not change the loss by a single bit.
    let c = cfg(true);
    let p = params(&c, 13);
    let b = packed_batch(c.vocab_size as u32);
    let (loss, _) = ours(&c, &p, &b, 0, 1024);
    let mut b2 = b.clone();
    b2.input_ids[23] = (b2.input_ids[23] + 1) % c.vocab_size as u32;
    let (loss2, _) = ours(&c, &p, &b2, 0, 1024);
    assert_eq!(loss.to_bits(), loss2.to_bits());
    // A counted target changes it.
    b2.input_ids[3] = (b2.input_ids[3] + 1) % c.vocab_size as u32;
    let (loss3, _) = ours(&c, &p, &b2, 0, 1024);
    assert_ne!(loss.to_bits(), loss3.to_bits());
}

#[test]
fn forward_matches_candle_transformers_qwen2() {
    use candle_transformers::models::qwen2;
    let c = Qwen2Config { rope_theta: 10_000.0, ..cfg(true) };
    let p = params(&c, 14);
    let m = Qwen2::new(&c, DType::F32, &p, &Device::Cpu).unwrap();
    // candle-transformers' model is plain causal: one segment per row.
    let (bs, t) = (2, 10);
    let mut b = Batch {
        batch: bs,
        seq_len: t,
        input_ids: (0..20u32).map(|i| (i * 13 + 5) % 128).collect(),
        loss_mask: vec![1; 20],
        ..Default::default()
    };
    for _ in 0..bs {
        Batch::row_layout(&[t as u32], t, &mut b.position_ids, &mut b.segment_ids);
    }
    let ours = m.hidden(&ReferenceOps, &m.inputs(&b).unwrap()).unwrap().reshape((bs, t, c.hidden_size)).unwrap();
    let tensors: std::collections::HashMap<String, Tensor> = param_specs(&c).into_iter().map(|s| s.name).zip(p.iter().cloned()).collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let hf: qwen2::Config = serde_json::from_value(c.to_hf_json("float32")).unwrap();
    let mut theirs = qwen2::Model::new(&hf, vb).unwrap();
    let ids = Tensor::from_vec(b.input_ids.clone(), (bs, t), &Device::Cpu).unwrap();
    let h = theirs.forward(&ids, 0, None).unwrap();
    let diff = (ours - h).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "max |ours - candle-transformers| = {diff}");
}
