//! Per-step metrics: one JSON line per optimizer step in `metrics.jsonl`, a progress bar, and
//! the loss curve as `loss.svg` in the run directory.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};

/// The metrics section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Peak FLOP/s of the device for MFU (default: 989e12, H100 dense bf16, on CUDA; none on CPU).
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = 0.0))]
    pub peak_flops: Option<f64>,
    /// Redraw `loss.svg` every N steps (0: only at checkpoints and at the end).
    pub plot_every: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { progress: true, peak_flops: None, plot_every: 0 }
    }
}

/// H100 SXM dense bf16 FLOP/s, the MFU denominator PyTorch's reference uses.
pub const H100_BF16_PEAK: f64 = 989e12;

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based step.
    pub step: u64,
    /// Curriculum stage (highest stage among the step's rows).
    pub stage: Option<u32>,
    /// Mean loss over the step's counted targets (`null` when none counted and the step was skipped).
    pub loss: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Tokens processed (rows × seq_len over the micro-batches).
    pub tokens: u64,
    /// Counted targets.
    pub targets: u64,
    /// Tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOP utilisation 6·N·tokens/s / peak, when a peak is known.
    pub mfu: Option<f64>,
    /// Resident memory (CPU) or device memory in use, bytes, when known.
    pub memory_bytes: Option<u64>,
    /// Wall time of the step.
    pub step_s: f64,
}

/// Resident set size and its peak (bytes) of this process, from /proc (Linux).
pub fn process_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(k))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system, seconds) this process has used, from /proc (Linux): with other
/// work on the machine, tokens per CPU-second is the figure wall time cannot give.
pub fn process_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// The run's metrics file, progress bar and plot.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    bar: ProgressBar,
    cfg: MetricsConfig,
    dir: PathBuf,
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`, keeping only lines of steps `<= resume_step` (a killed run may
    /// have logged steps after its last checkpoint; they are run again).
    pub fn open(dir: &Path, resume_step: u64, total_steps: u64, cfg: &MetricsConfig) -> Result<MetricsLog> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
        let path = dir.join("metrics.jsonl");
        let kept = read_metrics(&path)?.into_iter().filter(|m| m.step <= resume_step).collect::<Vec<_>>();
        let mut file = File::create(&path).map_err(|e| TrainError::file(&path, e))?;
        for m in &kept {
            writeln!(file, "{}", serde_json::to_string(m).expect("metrics serialize")).map_err(|e| TrainError::file(&path, e))?;
        }
        drop(file);
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| TrainError::file(&path, e))?;
        let target = if cfg.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total_steps), target);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("template").progress_chars("=> "),
        );
        bar.set_prefix("train");
        bar.set_position(resume_step);
        Ok(MetricsLog { path, file, bar, cfg: cfg.clone(), dir: dir.to_path_buf() })
    }

    /// Appends one step (flushed, so a killed run keeps what it logged).
    pub fn log(&mut self, m: &StepMetrics) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(m).expect("metrics serialize")).map_err(|e| TrainError::file(&self.path, e))?;
        self.file.flush().map_err(|e| TrainError::file(&self.path, e))?;
        self.bar.set_position(m.step);
        let loss = m.loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
        self.bar.set_message(format!("loss {loss} lr {:.2e} {:.0} tok/s", m.lr, m.tokens_per_s));
        if self.cfg.plot_every > 0 && m.step.is_multiple_of(self.cfg.plot_every) {
            self.plot()?;
        }
        Ok(())
    }

    /// Redraws `loss.svg` from `metrics.jsonl`.
    pub fn plot(&self) -> Result<PathBuf> {
        let out = self.dir.join("loss.svg");
        plot_loss(&read_metrics(&self.path)?, &out)?;
        Ok(out)
    }

    /// Ends the progress bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// Parses a `metrics.jsonl` (missing file: empty). A torn last line (killed mid-write) is dropped.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::file(path, e)),
    };
    let lines: Vec<String> = BufReader::new(f).lines().collect::<std::io::Result<_>>().map_err(|e| TrainError::file(path, e))?;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<StepMetrics>(line) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(TrainError::file(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

/// Draws loss against step as an SVG.
pub fn plot_loss(metrics: &[StepMetrics], out: &Path) -> Result<()> {
    use plotters::prelude::*;
    let pts: Vec<(f64, f64)> = metrics.iter().filter_map(|m| m.loss.filter(|l| l.is_finite()).map(|l| (m.step as f64, l))).collect();
    let err = |e: &dyn std::fmt::Display| TrainError::file(out, format!("plot: {e}"));
    let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let x_max = pts.last().map(|p| p.0).unwrap_or(1.0).max(1.0);
    let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = if pts.is_empty() { (0.0, 1.0) } else { (lo.min(hi - 1e-3), hi) };
    let pad = (hi - lo) * 0.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("training loss", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(pts, &BLUE)).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
