//! Checkpoints other engines can use: an SFT run's checkpoint has `generation_config.json` with
//! `<|im_end|>` and `<|endoftext|>` as eos ids and `tokenizer_config.json` with the Qwen2.5 chat
//! template; a CPT run's ends at `<|endoftext|>`; every file has the process umask's mode (not
//! the 0600 of a temp file); `RUN/latest` points at the newest complete checkpoint; `coretech
//! chat`/`eval` take a run directory and name a missing one once. With torch and transformers,
//! tests/compat/check_generate.py checks that generate() stops at `<|im_end|>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use coretech::train::checkpoint::{self, CheckpointConfig, SaveDtype};
use coretech::train::config::{ModelConfig, TrainConfig};
use coretech::train::data::{DataConfig, StageConfig, StageKind, SyntheticConfig};
use coretech::train::metrics::MetricsConfig;
use coretech::train::trainer::{open_source, Trainer};

const BIN: &str = env!("CARGO_BIN_EXE_coretech");

fn tokenizer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizers/qwen2.5")
}

/// A 2-step run of the `tiny` preset (the Qwen2.5 vocabulary) with one stage of `kind`.
fn train(dir: &Path, kind: StageKind) -> PathBuf {
    let cfg = TrainConfig {
        output: dir.to_path_buf(),
        model: ModelConfig { preset: Some("tiny".into()), ..Default::default() },
        batch_size: 2,
        seq_len: 16,
        max_steps: Some(2),
        data: DataConfig {
            stages: vec![StageConfig { name: "s".into(), kind, ..Default::default() }],
            synthetic: SyntheticConfig { rows: 8, vocab: 500, pool_docs: 4, min_doc_len: 4, max_doc_len: 12, prompt_fraction: 0.5 },
            ..Default::default()
        },
        checkpoint: CheckpointConfig {
            every: 1,
            keep_last: 1,
            dtype: SaveDtype::F32,
            tokenizer: Some(tokenizer_dir()),
            ..Default::default()
        },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        ..Default::default()
    };
    let arch = cfg.model.arch().unwrap();
    Trainer::new(&cfg, open_source(&cfg, arch.vocab_size).unwrap()).unwrap().run().unwrap().checkpoint.unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sft_checkpoints_tell_other_engines_how_to_stop_and_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("sft");
    let ckpt = train(&run, StageKind::Sft);
    // Two checkpoints were written (every step), one kept; `latest` names it, relatively.
    let latest = run.join(checkpoint::LATEST);
    assert_eq!(std::fs::read_link(&latest).unwrap(), Path::new("checkpoints/step-00000002"));
    assert_eq!(std::fs::canonicalize(&latest).unwrap(), std::fs::canonicalize(&ckpt).unwrap());

    let gen = json(&ckpt.join("generation_config.json"));
    assert_eq!(gen["eos_token_id"], serde_json::json!([151645, 151643]), "{gen}");
    assert_eq!((gen["pad_token_id"].as_u64(), gen["do_sample"].as_bool()), (Some(151643), Some(true)));
    assert_eq!((gen["temperature"].as_f64(), gen["top_p"].as_f64(), gen["top_k"].as_u64()), (Some(0.7), Some(0.8), Some(20)));
    let tc = json(&ckpt.join("tokenizer_config.json"));
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["pad_token"], "<|endoftext|>");
    assert_eq!(tc["tokenizer_class"], "Qwen2Tokenizer");
    assert!(tc["chat_template"].as_str().unwrap().contains("<|im_start|>assistant\\n"), "{}", tc["chat_template"]);
    assert_eq!(tc["added_tokens_decoder"]["151645"]["content"], "<|im_end|>");
    assert_eq!(tc["added_tokens_decoder"]["151645"]["special"], true);
    assert!(tc["additional_special_tokens"].as_array().unwrap().iter().any(|t| t == "<|im_start|>"));

    // Every file has the mode this process gives new files (0644 under umask 022), the weights
    // included (the safetensors writer makes them 0600).
    #[cfg(unix)]
    {
        let probe = tmp.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let want = mode(&probe);
        for e in std::fs::read_dir(&ckpt).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), want, "{} has mode {:o}, new files get {want:o}", p.display(), mode(&p));
        }
        assert_ne!(want & 0o044, 0, "the test needs a umask that lets others read (022)");
    }

    // chat takes the run directory (its newest checkpoint), as model.from and [eval] do.
    let o =
        Command::new(BIN).args(["chat", "--checkpoint"]).arg(&run).args(["--prompt", "hello", "--max-new-tokens", "2"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("step-00000002"), "{err}");
    // A missing directory is named once, with no doubled OS message.
    let missing = tmp.path().join("no-such-run");
    let o = Command::new(BIN).args(["chat", "--checkpoint"]).arg(&missing).args(["--prompt", "x"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no-such-run") && err.contains("no such directory"), "{err}");
    assert_eq!(err.matches("os error").count(), 0, "{err}");
    let o = Command::new(BIN).args(["eval", "--checkpoint"]).arg(&missing).args(["--sft-test", "x.jsonl"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no-such-run"), "{err}");
    assert!(err.matches("No such file or directory").count() <= 1, "{err}");

    compat_generate(&latest);
}

#[test]
fn cpt_checkpoints_are_base_models() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = train(&tmp.path().join("cpt"), StageKind::Cpt);
    let gen = json(&ckpt.join("generation_config.json"));
    assert_eq!(gen["eos_token_id"], 151643);
    assert_eq!(gen["do_sample"], false);
    assert_eq!(json(&ckpt.join("tokenizer_config.json"))["eos_token"], "<|endoftext|>");
}

/// Python with torch and transformers: $CORETECH_PYTHON, ./.venv/bin/python, python3.
fn compat_generate(ckpt: &Path) {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CORETECH_PYTHON").map(PathBuf::from).into_iter().collect();
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    candidates.push("python3".into());
    let Some(py) = candidates
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import torch, transformers"]).output().is_ok_and(|o| o.status.success()))
    else {
        eprintln!("SKIPPED tests/compat/check_generate.py: no python3 with torch and transformers (set CORETECH_PYTHON)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/check_generate.py");
    let o = Command::new(py).arg(script).arg(ckpt).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        o.status.success(),
        "check_generate.py failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
