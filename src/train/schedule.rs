//! Learning-rate schedule: linear warmup, then cosine or linear decay to a minimum (or constant).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Shape of the decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine from the peak down to the minimum.
    #[default]
    Cosine,
    /// A straight line from the peak down to the minimum.
    Linear,
    /// Stay at the peak.
    Constant,
}

/// The schedule section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Steps of linear warmup (step s < warmup runs at peak · (s + 1) / warmup).
    pub warmup_steps: u64,
    /// Decay after warmup.
    pub decay: Decay,
    /// The minimum learning rate as a fraction of the peak (reached at the last step).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_lr_ratio: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { warmup_steps: 0, decay: Decay::Cosine, min_lr_ratio: 0.1 }
    }
}

impl ScheduleConfig {
    /// Learning rate of 0-based step `step` out of `total` steps, peaking at `peak`.
    pub fn lr(&self, peak: f64, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let min = peak * self.min_lr_ratio;
        let span = total.saturating_sub(self.warmup_steps).saturating_sub(1);
        let progress = if span == 0 { 0.0 } else { ((step - self.warmup_steps) as f64 / span as f64).min(1.0) };
        match self.decay {
            Decay::Constant => peak,
            Decay::Linear => peak - (peak - min) * progress,
            Decay::Cosine => min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_to_the_minimum() {
        let s = ScheduleConfig { warmup_steps: 4, decay: Decay::Cosine, min_lr_ratio: 0.1 };
        let lrs: Vec<f64> = (0..14).map(|i| s.lr(1.0, i, 14)).collect();
        assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert_eq!(lrs[4], 1.0);
        assert!((lrs[13] - 0.1).abs() < 1e-12);
        // Half-way through the decay of a 15-step run the cosine is at the mean of peak and minimum.
        assert!((s.lr(1.0, 4 + 5, 15) - 0.55).abs() < 1e-12);
        assert!(lrs[4..].windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
        let l = ScheduleConfig { decay: Decay::Linear, ..s.clone() };
        assert!((l.lr(2.0, 4 + 9, 14) - 0.2).abs() < 1e-12);
        assert!((l.lr(2.0, 4 + 3, 14) - (2.0 - 1.8 / 3.0)).abs() < 1e-12);
        let c = ScheduleConfig { decay: Decay::Constant, ..s };
        assert_eq!(c.lr(2.0, 13, 14), 2.0);
        // Past the end it stays at the minimum; a one-step run uses the peak after warmup.
        assert!((ScheduleConfig::default().lr(1.0, 50, 10) - 0.1).abs() < 1e-12);
        assert_eq!(ScheduleConfig { min_lr_ratio: 0.0, ..Default::default() }.lr(1.0, 0, 1), 1.0);
    }
}
