//! Difficulty grading and curriculum stages.
//!
//! Heuristic grading (no model): per-example features — answer and question length in
//! tokens, number and mean depth of the IPC codes in the answer, number of listed items
//! (technologies, codes), number of turns, and the task's configured difficulty — each scaled
//! over the training examples (rank, min-max or z-score) and summed with the configured
//! weights. The score orders the training examples (ties broken by id); stage k of K holds
//! ranks [k·n/K, (k+1)·n/K), so the assignment is deterministic and monotone in the score.
//! Test examples get the stage whose lowest training score they reach.
//!
//! Model-based grading (`method = "model"`): the configured model score of each example
//! (`cond_loss`, `answer_loss` or IFD = cond_loss / answer_loss, Li et al. "From Quantity to
//! Quality", NAACL 2024), computed by [`super::grade_model`] from a checkpoint, orders the
//! examples the same way. `method = "mix"` scales the model score and the heuristic score over
//! the training examples (`grade.mix.normalization`) and sums them with the `grade.mix` weights.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::config::{FeatureWeights, GradeConfig, GradeMethod, Normalization};
use crate::error::{Error, Result};

/// Names of the features, in [`Features::values`] order (`examples.parquet` stores each as
/// `feat_{name}`: [`super::stats::feature_column`]).
pub const FEATURES: [&str; 7] = ["answer_tokens", "question_tokens", "ipc_codes", "ipc_depth", "list_items", "turns", "task_weight"];

/// The heuristic features of one example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Tokens inside assistant contents.
    pub answer_tokens: f64,
    /// Tokens inside user contents.
    pub question_tokens: f64,
    /// Distinct well-formed IPC codes in the answer.
    pub ipc_codes: f64,
    /// Their mean depth (3–5; 0 without codes).
    pub ipc_depth: f64,
    /// Top-level numbered items in the answer.
    pub list_items: f64,
    /// User/assistant exchanges.
    pub turns: f64,
    /// The task's configured difficulty.
    pub task_weight: f64,
}

impl Features {
    /// The values in [`FEATURES`] order.
    pub fn values(&self) -> [f64; 7] {
        [self.answer_tokens, self.question_tokens, self.ipc_codes, self.ipc_depth, self.list_items, self.turns, self.task_weight]
    }
}

fn weights(w: &FeatureWeights) -> [f64; 7] {
    [w.answer_tokens, w.question_tokens, w.ipc_codes, w.ipc_depth, w.list_items, w.turns, w.task]
}

/// Top-level numbered list items (`1. `, `2、`, `3) ` at the start of a line, not indented):
/// in the CoreTech answers, one per technology or per IPC code.
pub fn list_items(answer: &str) -> usize {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?m)^(?:\d{1,3}|[０-９]{1,3})[.、．)）](?:[^0-9]|$)").expect("valid regex"));
    re.find_iter(answer).count()
}

/// A feature scaler fitted on the training values.
#[derive(Debug, Clone)]
enum Scaler {
    Rank(Vec<f64>),
    MinMax(f64, f64),
    ZScore(f64, f64),
}

impl Scaler {
    fn fit(values: &[f64], how: Normalization) -> Scaler {
        match how {
            Normalization::Rank => {
                let mut v = values.to_vec();
                v.sort_by(f64::total_cmp);
                Scaler::Rank(v)
            }
            Normalization::Minmax => {
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                Scaler::MinMax(min, max)
            }
            Normalization::Zscore => {
                let n = values.len().max(1) as f64;
                let mean = values.iter().sum::<f64>() / n;
                let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
                Scaler::ZScore(mean, var.sqrt())
            }
        }
    }

    fn apply(&self, x: f64) -> f64 {
        match self {
            Scaler::Rank(sorted) => {
                if sorted.is_empty() {
                    return 0.0;
                }
                let below = sorted.partition_point(|v| *v < x);
                let upto = sorted.partition_point(|v| *v <= x);
                (below as f64 + 0.5 * (upto - below) as f64) / sorted.len() as f64
            }
            Scaler::MinMax(min, max) => {
                if max > min {
                    (x - min) / (max - min)
                } else {
                    0.0
                }
            }
            Scaler::ZScore(mean, sd) => {
                if *sd > 0.0 {
                    (x - mean) / sd
                } else {
                    0.0
                }
            }
        }
    }
}

/// Scores and stages of the training and test examples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grades {
    /// Score of each training example (input order).
    pub train_scores: Vec<f64>,
    /// Stage of each training example.
    pub train_stages: Vec<u32>,
    /// Score of each test example.
    pub test_scores: Vec<f64>,
    /// Stage of each test example.
    pub test_stages: Vec<u32>,
    /// Lowest training score of each stage (stage 0 first).
    pub stage_min_scores: Vec<f64>,
}

/// The heuristic score of every example: features scaled over the training examples
/// (`grade.normalization`), summed with `grade.weights`.
pub fn heuristic_scores(train: &[Features], test: &[Features], cfg: &GradeConfig) -> (Vec<f64>, Vec<f64>) {
    let w = weights(&cfg.weights);
    let scalers: Vec<Scaler> = (0..FEATURES.len())
        .map(|f| {
            let col: Vec<f64> = train.iter().map(|x| x.values()[f]).collect();
            Scaler::fit(&col, cfg.normalization)
        })
        .collect();
    let score = |x: &Features| -> f64 {
        x.values().iter().zip(&scalers).zip(&w).filter(|(_, w)| **w != 0.0).map(|((v, s), w)| w * s.apply(*v)).sum()
    };
    (train.iter().map(score).collect(), test.iter().map(score).collect())
}

/// Model scores of the training and the test examples (the configured kind).
#[derive(Debug, Clone, Copy)]
pub struct ModelInput<'a> {
    /// One per training example.
    pub train: &'a [f64],
    /// One per test example.
    pub test: &'a [f64],
}

/// Grades the examples: scalers and stage boundaries come from the training examples only.
/// `train_ids` breaks score ties. `model` holds the model scores (`method = "model"` or `"mix"`).
pub fn grade(train: &[Features], train_ids: &[String], test: &[Features], model: Option<ModelInput>, cfg: &GradeConfig) -> Result<Grades> {
    if cfg.stages == 0 {
        return Err(Error::Config { file: String::new(), key: "sft.grade.stages".into(), message: "must be at least 1".into() });
    }
    let need_model = || {
        model.filter(|m| m.train.len() == train.len() && m.test.len() == test.len()).ok_or_else(|| Error::Config {
            file: String::new(),
            key: "sft.grade.method".into(),
            message: format!("{:?} grading needs a model score for every example", cfg.method).to_lowercase(),
        })
    };
    let (train_scores, test_scores) = match cfg.method {
        GradeMethod::Heuristic => heuristic_scores(train, test, cfg),
        GradeMethod::Model => {
            let m = need_model()?;
            (m.train.to_vec(), m.test.to_vec())
        }
        GradeMethod::Mix => {
            let m = need_model()?;
            let (h_train, h_test) = heuristic_scores(train, test, cfg);
            let sm = Scaler::fit(m.train, cfg.mix.normalization);
            let sh = Scaler::fit(&h_train, cfg.mix.normalization);
            let mix = |m: f64, h: f64| cfg.mix.model * sm.apply(m) + cfg.mix.heuristic * sh.apply(h);
            (
                m.train.iter().zip(&h_train).map(|(&m, &h)| mix(m, h)).collect(),
                m.test.iter().zip(&h_test).map(|(&m, &h)| mix(m, h)).collect(),
            )
        }
    };
    if let Some(i) = train_scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::Other(format!("grading: example {} has a non-finite score {}", train_ids[i], train_scores[i])));
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.sort_by(|&a, &b| train_scores[a].total_cmp(&train_scores[b]).then_with(|| train_ids[a].cmp(&train_ids[b])));
    let k = cfg.stages;
    let n = train.len();
    let mut train_stages = vec![0u32; n];
    let mut stage_min_scores = vec![f64::INFINITY; k];
    for (rank, &i) in order.iter().enumerate() {
        let s = rank * k / n.max(1);
        train_stages[i] = s as u32;
        stage_min_scores[s] = stage_min_scores[s].min(train_scores[i]);
    }
    let test_stages = test_scores
        .iter()
        .map(|&s| (1..k).rev().find(|&st| stage_min_scores[st].is_finite() && s >= stage_min_scores[st]).unwrap_or(0) as u32)
        .collect();
    Ok(Grades { train_scores, train_stages, test_scores, test_stages, stage_min_scores })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feat(a: f64, q: f64) -> Features {
        Features { answer_tokens: a, question_tokens: q, ..Default::default() }
    }

    #[test]
    fn list_items_count_top_level_numbers_only() {
        let a = "引言。\n3.5 GHz 不是列表\n1. **人工智能硬件平台**\n   - 简介\n   1. nested\n2. **通用技术**\n3、知识图谱\n10) 第十\n在2020年。";
        assert_eq!(list_items(a), 4);
    }

    #[test]
    fn stages_are_quantiles_and_monotone() {
        let train: Vec<Features> = (0..10).map(|i| feat(i as f64 * 10.0, 0.0)).rev().collect();
        let ids: Vec<String> = (0..10).map(|i| format!("x:{i}")).collect();
        let cfg = GradeConfig { stages: 3, ..Default::default() };
        let g = grade(&train, &ids, &[feat(95.0, 0.0), feat(-1.0, 0.0)], None, &cfg).unwrap();
        // Sizes 4/3/3 by rank: ranks 0–3 → 0, 4–6 → 1, 7–9 → 2.
        let mut sizes = [0; 3];
        for &s in &g.train_stages {
            sizes[s as usize] += 1;
        }
        assert_eq!(sizes, [4, 3, 3]);
        for i in 0..10 {
            for j in 0..10 {
                if g.train_scores[i] < g.train_scores[j] {
                    assert!(g.train_stages[i] <= g.train_stages[j]);
                }
            }
        }
        assert_eq!(g.test_stages, [2, 0]);
        // Deterministic.
        assert_eq!(grade(&train, &ids, &[], None, &cfg).unwrap().train_stages, g.train_stages);
    }

    #[test]
    fn model_and_mix_order_by_their_scores() {
        let train: Vec<Features> = (0..6).map(|i| feat(i as f64, 0.0)).collect();
        let ids: Vec<String> = (0..6).map(|i| format!("x:{i}")).collect();
        // The model score runs against the heuristic (answer length).
        let m: Vec<f64> = (0..6).map(|i| 10.0 - i as f64).collect();
        let cfg = GradeConfig { method: GradeMethod::Model, stages: 2, ..Default::default() };
        let g = grade(&train, &ids, &[], Some(ModelInput { train: &m, test: &[] }), &cfg).unwrap();
        assert_eq!(g.train_stages, [1, 1, 1, 0, 0, 0]);
        assert_eq!(g.train_scores, m);
        // Mix with the heuristic weighted more: the heuristic order wins.
        let mut mix = GradeConfig { method: GradeMethod::Mix, stages: 2, ..Default::default() };
        mix.mix.heuristic = 2.0;
        let g = grade(&train, &ids, &[], Some(ModelInput { train: &m, test: &[] }), &mix).unwrap();
        assert_eq!(g.train_stages, [0, 0, 0, 1, 1, 1]);
        // Model methods without model scores say so.
        let e = grade(&train, &ids, &[], None, &cfg).unwrap_err().to_string();
        assert!(e.contains("sft.grade.method") && e.contains("model score"), "{e}");
        let nan = [f64::NAN; 6];
        assert!(grade(&train, &ids, &[], Some(ModelInput { train: &nan, test: &[] }), &cfg).unwrap_err().to_string().contains("x:0"));
    }
}
