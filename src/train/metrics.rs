//! Watching a run: one JSON line per optimizer step (and per validation set evaluated) in
//! `metrics.jsonl`, a progress bar on a terminal or a log line every `log_every` steps elsewhere
//! (a Slurm log), TensorBoard event files in the run directory, and `loss.svg` (training and
//! validation loss, curriculum stage boundaries, the learning rate on a second axis).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};
use super::tensorboard::EventWriter;

/// The metrics section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// Peak FLOP/s of the device for MFU (default: 989e12, H100 dense bf16, on CUDA; none on CPU).
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = 0.0))]
    pub peak_flops: Option<f64>,
    /// Redraw `loss.svg` every N steps (0: only at checkpoints and at the end).
    pub plot_every: u64,
    /// Without a progress bar on a terminal (stderr redirected to a file, as under Slurm): log
    /// step, stage, loss, learning rate, tokens/s and ETA every N steps, and the first and last
    /// step (0: never).
    pub log_every: u64,
    /// Write TensorBoard event files (`events.out.tfevents.*`) into the run directory.
    pub tensorboard: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { progress: true, peak_flops: None, plot_every: 0, log_every: 10, tensorboard: true }
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

/// The loss on one validation set at one step (a `metrics.jsonl` line told apart by `val_loss`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    /// Optimizer steps done when it was evaluated.
    pub step: u64,
    /// Curriculum stage of the last training step.
    pub stage: Option<u32>,
    /// The validation set's name.
    pub set: String,
    /// Mean loss over the set's counted targets.
    pub val_loss: f64,
    /// Counted targets evaluated.
    pub targets: u64,
    /// Micro-batches evaluated.
    pub batches: u64,
    /// Wall time of the set's evaluation (rank 0's).
    pub eval_s: f64,
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

/// The run's metrics file, progress display, TensorBoard events and plot.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    bar: ProgressBar,
    /// Log lines instead of the bar (stderr is not a terminal, or the bar is off).
    lines: bool,
    cfg: MetricsConfig,
    dir: PathBuf,
    stage_names: Vec<String>,
    total_steps: u64,
    started: Instant,
    start_step: u64,
    tb: Option<EventWriter>,
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

fn write_line(file: &mut File, path: &Path, v: &impl Serialize) -> Result<()> {
    writeln!(file, "{}", serde_json::to_string(v).expect("metrics serialize")).map_err(|e| TrainError::file(path, e))?;
    // Flushed, so a killed run keeps what it logged.
    file.flush().map_err(|e| TrainError::file(path, e))
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`, keeping only records of steps `<= resume_step` (a killed run
    /// may have logged steps after its last checkpoint; they are run again). `stage_names` name
    /// the curriculum stages in log lines, TensorBoard tags and the plot.
    pub fn open(dir: &Path, resume_step: u64, total_steps: u64, cfg: &MetricsConfig, stage_names: &[String]) -> Result<MetricsLog> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
        let path = dir.join("metrics.jsonl");
        let kept = read_records(&path)?.into_iter().filter(|v| v.get("step").and_then(|s| s.as_u64()).is_some_and(|s| s <= resume_step));
        let mut file = File::create(&path).map_err(|e| TrainError::file(&path, e))?;
        for v in kept {
            writeln!(file, "{v}").map_err(|e| TrainError::file(&path, e))?;
        }
        drop(file);
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| TrainError::file(&path, e))?;
        let bar_shown = cfg.progress && std::io::stderr().is_terminal();
        let target = if bar_shown { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total_steps), target);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("template").progress_chars("=> "),
        );
        bar.set_prefix("train");
        bar.set_position(resume_step);
        let tb = if cfg.tensorboard { Some(EventWriter::create(dir)?) } else { None };
        Ok(MetricsLog {
            path,
            file,
            bar,
            lines: !bar_shown,
            cfg: cfg.clone(),
            dir: dir.to_path_buf(),
            stage_names: stage_names.to_vec(),
            total_steps,
            started: Instant::now(),
            start_step: resume_step,
            tb,
        })
    }

    fn stage_name(&self, stage: Option<u32>) -> String {
        match stage {
            Some(k) => match self.stage_names.get(k as usize) {
                Some(n) => format!("{k} ({n})"),
                None => k.to_string(),
            },
            None => "-".into(),
        }
    }

    /// Appends one step; shows it on the bar or (every `log_every` steps) as a log line; writes
    /// its scalars to TensorBoard.
    pub fn log(&mut self, m: &StepMetrics) -> Result<()> {
        write_line(&mut self.file, &self.path, m)?;
        self.bar.set_position(m.step);
        let loss = m.loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
        self.bar.set_message(format!("loss {loss} lr {:.2e} {:.0} tok/s", m.lr, m.tokens_per_s));
        let every = self.cfg.log_every;
        let due = every > 0 && (m.step.is_multiple_of(every) || m.step == self.start_step + 1 || m.step == self.total_steps);
        if self.lines && due {
            let elapsed = self.started.elapsed().as_secs_f64();
            let done = m.step.saturating_sub(self.start_step).max(1);
            let eta = elapsed / done as f64 * self.total_steps.saturating_sub(m.step) as f64;
            let grad = m.grad_norm.map(|g| format!(" | grad norm {g:.3}")).unwrap_or_default();
            tracing::info!(
                "step {}/{} ({:.0}%) | stage {} | loss {loss} | lr {:.3e}{grad} | {:.0} tokens/s | elapsed {} | eta {}",
                m.step,
                self.total_steps,
                100.0 * m.step as f64 / self.total_steps.max(1) as f64,
                self.stage_name(m.stage),
                m.lr,
                m.tokens_per_s,
                fmt_duration(elapsed),
                fmt_duration(eta)
            );
        }
        if let Some(tb) = self.tb.as_mut() {
            let mut s: Vec<(&str, f32)> = vec![("train/lr", m.lr as f32), ("train/tokens_per_s", m.tokens_per_s as f32)];
            if let Some(l) = m.loss {
                s.push(("train/loss", l as f32));
            }
            if let Some(g) = m.grad_norm {
                s.push(("train/grad_norm", g as f32));
            }
            if let Some(k) = m.stage {
                s.push(("train/stage", k as f32));
            }
            tb.scalars(m.step, &s)?;
            tb.flush()?;
        }
        if self.cfg.plot_every > 0 && m.step.is_multiple_of(self.cfg.plot_every) {
            self.plot()?;
        }
        Ok(())
    }

    /// Appends the validation losses of one evaluation (one record per set), logs them and writes
    /// `val/loss` (over all sets) and `val/<set>/loss` to TensorBoard.
    pub fn log_val(&mut self, vals: &[ValMetrics]) -> Result<()> {
        for v in vals {
            write_line(&mut self.file, &self.path, v)?;
            let line = format!(
                "step {} | validation {} | loss {:.4} ({} targets, {} batches, {:.1}s)",
                v.step, v.set, v.val_loss, v.targets, v.batches, v.eval_s
            );
            if self.lines {
                tracing::info!("{line}");
            } else {
                self.bar.println(line);
            }
        }
        if let (Some(tb), Some(first)) = (self.tb.as_mut(), vals.first()) {
            let targets: u64 = vals.iter().map(|v| v.targets).sum();
            let mean = vals.iter().map(|v| v.val_loss * v.targets as f64).sum::<f64>() / targets.max(1) as f64;
            let tags: Vec<String> = vals.iter().map(|v| format!("val/{}/loss", v.set)).collect();
            let mut s: Vec<(&str, f32)> = vec![("val/loss", mean as f32)];
            s.extend(tags.iter().zip(vals).map(|(t, v)| (t.as_str(), v.val_loss as f32)));
            tb.scalars(first.step, &s)?;
            tb.flush()?;
        }
        Ok(())
    }

    /// Redraws `loss.svg` from `metrics.jsonl`.
    pub fn plot(&self) -> Result<PathBuf> {
        let out = self.dir.join("loss.svg");
        plot_loss(&read_metrics(&self.path)?, &read_val_metrics(&self.path)?, &self.stage_names, &out)?;
        Ok(out)
    }

    /// Ends the progress bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// The JSON records of a `metrics.jsonl` (missing file: none). A torn last line (killed
/// mid-write) is dropped.
fn read_records(path: &Path) -> Result<Vec<serde_json::Value>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::file(path, e)),
    };
    let lines: Vec<String> = BufReader::new(f).lines().collect::<std::io::Result<_>>().map_err(|e| TrainError::file(path, e))?;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.is_object() => out.push(v),
            Err(_) if i + 1 == lines.len() => {}
            Ok(_) => return Err(TrainError::file(path, format!("line {}: not a JSON object", i + 1))),
            Err(e) => return Err(TrainError::file(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

fn is_val(v: &serde_json::Value) -> bool {
    v.get("val_loss").is_some()
}

/// The training steps of a `metrics.jsonl` (missing file: empty).
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    read_records(path)?
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !is_val(v))
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| TrainError::file(path, format!("record {}: {e}", i + 1))))
        .collect()
}

/// The validation records of a `metrics.jsonl` (missing file: empty).
pub fn read_val_metrics(path: &Path) -> Result<Vec<ValMetrics>> {
    read_records(path)?
        .into_iter()
        .enumerate()
        .filter(|(_, v)| is_val(v))
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| TrainError::file(path, format!("record {}: {e}", i + 1))))
        .collect()
}

/// Steps where the curriculum moves to another stage: (first step of the stage, stage).
pub fn stage_starts(metrics: &[StepMetrics]) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut last = None;
    for m in metrics {
        if let Some(s) = m.stage {
            if last != Some(s) {
                out.push((m.step, s));
                last = Some(s);
            }
        }
    }
    out
}

/// Draws training loss (and validation loss per set) against step as an SVG, with a dashed
/// line and the stage name where each curriculum stage starts, and the learning rate on the
/// right axis. Steps are integers on the x axis.
pub fn plot_loss(metrics: &[StepMetrics], vals: &[ValMetrics], stage_names: &[String], out: &Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| TrainError::file(out, format!("plot: {e}"));
    let train: Vec<(u64, f64)> = metrics.iter().filter_map(|m| m.loss.filter(|l| l.is_finite()).map(|l| (m.step, l))).collect();
    let lr: Vec<(u64, f64)> = metrics.iter().map(|m| (m.step, m.lr)).collect();
    let mut sets: Vec<&str> = Vec::new();
    for v in vals {
        if !sets.contains(&v.set.as_str()) {
            sets.push(&v.set);
        }
    }
    let x_max = metrics.iter().map(|m| m.step).chain(vals.iter().map(|v| v.step)).max().unwrap_or(1).max(1);
    let ys = train.iter().map(|p| p.1).chain(vals.iter().map(|v| v.val_loss).filter(|l| l.is_finite()));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo.min(hi - 1e-3), hi) };
    let pad = (hi - lo) * 0.08;
    let (y0, y1) = (lo - pad, hi + 2.0 * pad);
    let lr_max = lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12) * 1.1;

    let root = SVGBackend::new(out, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("loss", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0u64..x_max, y0..y1)
        .map_err(|e| err(&e))?
        .set_secondary_coord(0u64..x_max, 0f64..lr_max);
    // Integer steps: at most one label per step.
    chart.configure_mesh().x_labels((x_max as usize + 1).min(12)).x_desc("step").y_desc("loss").draw().map_err(|e| err(&e))?;
    chart.configure_secondary_axes().y_desc("learning rate").y_label_formatter(&|v| format!("{v:.1e}")).draw().map_err(|e| err(&e))?;

    let grey = RGBColor(150, 150, 150);
    for (step, stage) in stage_starts(metrics) {
        // The boundary sits before the stage's first step.
        let x = step.saturating_sub(1);
        let name = stage_names.get(stage as usize).cloned().unwrap_or_else(|| format!("stage {stage}"));
        chart.draw_series(DashedLineSeries::new([(x, y0), (x, y1)], 4, 4, grey.stroke_width(1))).map_err(|e| err(&e))?;
        let label = EmptyElement::at((x, y1)) + Text::new(name, (4, 4), ("sans-serif", 13).into_font().color(&grey));
        chart.draw_series(std::iter::once(label)).map_err(|e| err(&e))?;
    }
    let lr_color = RGBColor(230, 140, 30);
    chart
        .draw_secondary_series(LineSeries::new(lr, lr_color.stroke_width(1)))
        .map_err(|e| err(&e))?
        .label("learning rate (right axis)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], lr_color));
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("training loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    let palette = [RGBColor(200, 30, 30), RGBColor(30, 150, 60), RGBColor(140, 60, 180), RGBColor(20, 150, 160), RGBColor(120, 90, 40)];
    for (i, set) in sets.iter().enumerate() {
        let c = palette[i % palette.len()];
        let pts: Vec<(u64, f64)> = vals.iter().filter(|v| v.set == *set && v.val_loss.is_finite()).map(|v| (v.step, v.val_loss)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)).point_size(3))
            .map_err(|e| err(&e))?
            .label(format!("validation loss: {set}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(grey)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
