//! AdamW over fp32 master weights and fp32 moments (the model may compute in bf16), decoupled
//! weight decay with norms and biases excluded by config, and global-norm gradient clipping.
//! The update itself is one multi-tensor call into the backend ([`Ops::adamw_step`]).

use candle_core::{DType, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};
use super::model::{Grads, ParamSpec};
use super::ops::{AdamState, AdamWStep, Ops};

/// The optimizer section of a training config (PyTorch AdamW semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Peak learning rate (the schedule scales it). At most 1: AdamW moves every weight by about
    /// `lr` a step whatever the gradient's size, and initial weights are ≈ 0.02 (recipes use
    /// 1e-5 to 1e-2); 1e300 overflowed the first update into a NaN gradient naming no key.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr: f64,
    /// First-moment decay β1.
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub beta1: f64,
    /// Second-moment decay β2.
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub beta2: f64,
    /// Denominator epsilon.
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = 0.0))]
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies a decayed weight by `1 − lr × weight_decay`.
    /// At most 10 (recipes use 0 to 0.1, grokking studies up to ~1); the run's config also
    /// refuses a peak `lr × weight_decay` above 1, which flips every decayed weight's sign.
    #[schemars(range(min = 0.0, max = 10.0))]
    pub weight_decay: f64,
    /// Apply weight decay to RMSNorm weights and biases too (HF Trainer and most recipes do not).
    pub decay_norms_and_biases: bool,
    /// Clip the global gradient norm to this value (0 turns clipping off).
    #[schemars(range(min = 0.0))]
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decay_norms_and_biases: false, max_grad_norm: 1.0 }
    }
}

impl AdamWConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: &str| Err(TrainError::config(format!("optimizer.{k}"), m));
        if !(0.0..=1.0).contains(&self.lr) {
            return bad("lr", "must be in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1", "betas must be in [0, 1)");
        }
        if !(0.0..=10.0).contains(&self.weight_decay) {
            return bad("weight_decay", "must be in [0, 10]");
        }
        if !(self.eps > 0.0) || !(self.max_grad_norm >= 0.0) {
            return bad("eps", "eps must be > 0; max_grad_norm >= 0");
        }
        Ok(())
    }
}

/// What one optimizer step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// Factor applied to the gradients (1 when not clipped).
    pub clip_coef: f64,
}

/// The factor gradients of global norm `grad_norm` are scaled by to clip them to `max_norm`
/// (torch.nn.utils.clip_grad_norm_: `max / (norm + 1e-6)`, clamped to 1; 1 when `max_norm` is 0).
pub fn clip_coef(max_norm: f64, grad_norm: f64) -> f64 {
    if max_norm > 0.0 {
        (max_norm / (grad_norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

/// AdamW state of every parameter plus the count of steps taken.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Settings.
    pub cfg: AdamWConfig,
    /// Per-parameter master weight and moments, in `param_specs` order.
    pub states: Vec<AdamState>,
    /// Optimizer steps taken so far.
    pub steps: u64,
}

impl AdamW {
    /// Fresh moments for master weights `masters` (cast to f32, or kept f64).
    pub fn new(cfg: &AdamWConfig, specs: &[ParamSpec], masters: &[Tensor]) -> Result<AdamW> {
        let states = specs
            .iter()
            .zip(masters)
            .map(|(s, m)| {
                let dt = if m.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
                let master = m.to_dtype(dt)?;
                Ok(AdamState {
                    exp_avg: master.zeros_like()?,
                    exp_avg_sq: master.zeros_like()?,
                    master,
                    decay: cfg.decay_norms_and_biases || !s.is_norm_or_bias(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { cfg: cfg.clone(), states, steps: 0 })
    }

    /// Clips the global gradient norm and applies one AdamW step at learning rate `lr`; writes
    /// the new weights into `params` (the model's compute-dtype copies). Untouched gradient
    /// slots count as zero.
    pub fn step(&mut self, ops: &dyn Ops, grads: &Grads, params: &mut [Tensor], lr: f64) -> Result<StepStats> {
        let grads: Vec<Tensor> = grads
            .slots
            .iter()
            .zip(&self.states)
            .map(|(g, s)| match g {
                Some(g) => Ok(g.clone()),
                None => Ok(s.master.zeros_like()?),
            })
            .collect::<Result<_>>()?;
        let grad_norm = ops.sum_squares(&grads)?.sqrt();
        let hp = self.begin_step(lr, grad_norm)?;
        ops.adamw_step(&mut self.states, &grads, params, &hp)?;
        Ok(StepStats { grad_norm, clip_coef: hp.grad_scale })
    }

    /// Starts optimizer step `steps + 1` for a global gradient norm: refuses a non-finite norm,
    /// counts the step and gives its hyper-parameters, the clipping coefficient as `grad_scale`.
    pub fn begin_step(&mut self, lr: f64, grad_norm: f64) -> Result<AdamWStep> {
        if !grad_norm.is_finite() {
            return Err(TrainError::Data(format!("gradient norm is {grad_norm} at optimizer step {}", self.steps + 1)));
        }
        let clip = clip_coef(self.cfg.max_grad_norm, grad_norm);
        self.steps += 1;
        Ok(AdamWStep {
            lr,
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.eps,
            weight_decay: self.cfg.weight_decay,
            step: self.steps,
            grad_scale: clip,
        })
    }

    /// The master weights, in `param_specs` order.
    pub fn masters(&self) -> Vec<Tensor> {
        self.states.iter().map(|s| s.master.clone()).collect()
    }
}
