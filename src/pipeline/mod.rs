//! TOML config → stages. `coretech run` executes the stages a pipeline lists, in order; each
//! stage reads and writes files only, so a build can stop and resume between stages.

pub mod docs;
pub mod ids;
pub mod merge;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{PipelineConfig, Stage};
use crate::core::{RunOptions, RunReport};
use crate::error::{Error, Result};
use crate::ipc::IpcScheme;

/// A progress bar over `total` bytes on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The error of a stage whose section is missing (a single-stage command on a file without it;
/// `coretech run` finds this when the file is parsed).
fn missing(stage: &Stage) -> Error {
    Error::Config { file: String::new(), key: stage.section(), message: format!("stage \"{stage}\" needs a [{}] section", stage.section()) }
}

/// Runs one stage of a pipeline.
pub fn run_stage(cfg: &PipelineConfig, stage: &Stage, opts: &RunOptions) -> Result<RunReport> {
    match stage {
        Stage::Docs => {
            let docs = cfg.docs.as_ref().ok_or_else(|| missing(stage))?;
            let scheme = IpcScheme::load(&cfg.ipc)?;
            docs::run_with(docs, &scheme, opts)
        }
        Stage::Dedup => {
            let dedup = cfg.dedup.as_ref().ok_or_else(|| missing(stage))?;
            crate::dedup::stage::run_with(dedup, opts, None)
        }
        Stage::Pack => {
            let pack = cfg.pack.as_ref().ok_or_else(|| missing(stage))?;
            crate::pack::stage::run_with(pack, opts, None)
        }
        Stage::Train(name) => {
            let tc = cfg.train.get(name).ok_or_else(|| missing(stage))?;
            // distributed.mode != none: rank from the launcher
            let summary = crate::train::dist::run(tc).map_err(|e| crate::config::in_section(e.into(), &stage.section()))?;
            let mut report = RunReport::new(&stage.to_string());
            report.elapsed_s = summary.elapsed_s;
            report.notes = vec![
                format!(
                    "steps {} of {}{}, {} tokens, {:.1} tokens/s",
                    summary.steps,
                    summary.total_steps,
                    summary.resumed_from.map(|r| format!(" (resumed from step {r})")).unwrap_or_default(),
                    summary.tokens,
                    summary.tokens as f64 / summary.elapsed_s.max(1e-9)
                ),
                format!("final loss {}", summary.final_loss.map_or("-".into(), |l| format!("{l:.4}"))),
                format!("checkpoint {}", summary.checkpoint.as_ref().map_or("-".into(), |p| p.display().to_string())),
                format!("metrics {}", tc.output.join("metrics.jsonl").display()),
            ];
            Ok(report)
        }
        Stage::Sft => {
            let rep = run_sft_with(cfg, opts, crate::sft::Mode::Build)?;
            let mut report = rep.run.clone();
            // The grading lines: method, stage sizes, model grading, mean IFD per stage.
            report.notes = rep.table().lines().filter(|l| l.contains("grading") || l.starts_with("mean IFD")).map(str::to_string).collect();
            Ok(report)
        }
        Stage::Eval => {
            let ev = cfg.eval.as_ref().ok_or_else(|| missing(stage))?;
            let rep = crate::infer::eval::run_stage(ev).map_err(|e| Error::Other(format!("eval: {e}")))?;
            let mut report = RunReport::new("eval");
            report.notes = rep.summary().lines().map(str::to_string).collect();
            if let Some(p) = &ev.report {
                report.notes.push(format!("report {}", p.display()));
            }
            Ok(report)
        }
    }
}

/// Runs the SFT stage of a pipeline: its `[sft]` section, with the `[ipc]` scheme for code
/// validation (no scheme configured: codes are parsed but not looked up).
pub fn run_sft(cfg: &PipelineConfig, strict: bool, mode: crate::sft::Mode) -> Result<crate::sft::SftReport> {
    run_sft_with(cfg, &RunOptions { strict, ..Default::default() }, mode)
}

/// [`run_sft`] with every option (`--force` included).
pub fn run_sft_with(cfg: &PipelineConfig, opts: &RunOptions, mode: crate::sft::Mode) -> Result<crate::sft::SftReport> {
    let sft = cfg.sft.as_ref().ok_or_else(|| missing(&Stage::Sft))?;
    let scheme = IpcScheme::load(&cfg.ipc)?;
    let lookup: Option<&dyn crate::sft::validate::IpcLookup> = if cfg.ipc.scheme.is_empty() { None } else { Some(&scheme) };
    crate::sft::build::run_with(sft, lookup, opts, mode)
}

/// Runs every stage the pipeline lists, in order; returns their reports.
pub fn run(cfg: &PipelineConfig, opts: &RunOptions) -> Result<Vec<RunReport>> {
    if cfg.stages.is_empty() {
        return Err(Error::Config { file: String::new(), key: "stages".into(), message: "no stages listed".into() });
    }
    let mut reports = Vec::new();
    for stage in &cfg.stages {
        tracing::info!("stage {stage}");
        reports.push(run_stage(cfg, stage, opts)?);
    }
    Ok(reports)
}
