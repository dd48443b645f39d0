//! The `coretech train` and `coretech bench train` commands: a run killed with SIGKILL at an
//! arbitrary moment resumes and logs the same losses, bit for bit, as one that ran through.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use coretech::train::metrics::read_metrics;

const BIN: &str = env!("CARGO_BIN_EXE_coretech");

fn write_config(dir: &Path, steps_rows: u64) -> std::path::PathBuf {
    let cfg = format!(
        r#"stages = ["train:t"]
[train.t]
output = "{out}"
batch_size = 2
seq_len = 64
seed = 3
[train.t.model]
preset = "test"
[train.t.optimizer]
lr = 0.003
[train.t.schedule]
warmup_steps = 4
[train.t.checkpoint]
every = 2
keep_last = 2
dtype = "f32"
[train.t.metrics]
progress = false
[train.t.data.synthetic]
rows = {rows}
"#,
        out = dir.join("run").display(),
        rows = steps_rows
    );
    let p = dir.join("train.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn loss_bits(run: &Path) -> Vec<(u64, u64)> {
    read_metrics(&run.join("metrics.jsonl")).unwrap().iter().map(|m| (m.step, m.loss.unwrap().to_bits())).collect()
}

#[test]
fn kill_9_and_resume_gives_the_same_losses() {
    let rows = 120; // 60 steps
    let a = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["train"]).arg(write_config(a.path(), rows)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["steps"], 60);
    let reference = loss_bits(&a.path().join("run"));
    assert_eq!(reference.len(), 60);
    assert!(a.path().join("run/loss.svg").is_file());

    // Killed twice (early, then late), resumed each time: the same losses as the straight run.
    let b = tempfile::tempdir().unwrap();
    let cfg = write_config(b.path(), rows);
    let run = b.path().join("run");
    for kill_at in [7, 31] {
        let mut child = Command::new(BIN)
            .args(["train"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while read_metrics(&run.join("metrics.jsonl")).map(|m| m.len()).unwrap_or(0) < kill_at {
            assert!(t0.elapsed() < Duration::from_secs(120), "the run logged nothing");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL, between checkpoints or in the middle of one
        child.wait().unwrap();
        let logged = read_metrics(&run.join("metrics.jsonl")).unwrap().len();
        eprintln!("killed after {logged} logged steps");
        assert!(logged < 60, "the run finished before it could be killed");
    }
    let out = Command::new(BIN).args(["run"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(loss_bits(&run), reference);
}

#[test]
fn bench_train_prints_json() {
    let out = Command::new(BIN)
        .args(["bench", "train", "--model", "test", "--batch", "2", "--seq", "32", "--steps", "2", "--warmup", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["n_params"], 22_816);
    assert!(v["mfu"].is_null(), "no peak on CPU unless given");
    assert!(v["loss_last"].as_f64().unwrap() < v["loss_first"].as_f64().unwrap(), "{v}");
    assert_eq!((v["plan"]["recompute_layers"].as_u64(), v["plan"]["ce_chunk"].as_u64()), (Some(0), Some(1024)), "{v}");
    // Gradient accumulation and an explicit plan: one of the two layers recomputed, 16-token chunks.
    let out = Command::new(BIN)
        .args(["bench", "train", "--model", "test", "--batch", "2", "--seq", "32", "--steps", "2", "--warmup", "1"])
        .args(["--accum", "2", "--recompute", "1", "--ce-chunk", "16", "--docs-per-row", "3", "--prompt-fraction", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["micro_batches"].as_u64(), v["plan"]["recompute_layers"].as_u64(), v["plan"]["ce_chunk"].as_u64()),
        (Some(2), Some(1), Some(16))
    );
    // Three packed documents a row, half of each a prompt: about half of the 62 predictions count.
    let t = v["targets"].as_u64().unwrap();
    assert!((24..=40).contains(&t), "{t} counted predictions");
    assert!(v["loss_last"].as_f64().unwrap() < v["loss_first"].as_f64().unwrap(), "{v}");
    let out = Command::new(BIN).args(["bench", "train", "--model", "test", "--recompute", "some"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("recompute"));
}

#[test]
fn plan_prints_what_fits_on_a_card() {
    // Qwen2.5-7B on an H200: one row of 4096 keeps every activation; the fixed state is named.
    let out = Command::new(BIN).args(["plan", "--model", "qwen2.5-7b", "--batch", "1", "--seq", "4096"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recompute 0 of 28 layers") && text.contains("fixed state 99.3 GiB"), "{text}");
    // On an 80 GB card the fixed state alone does not fit.
    let out = Command::new(BIN).args(["plan", "--model", "qwen2.5-7b", "--device-gib", "79.6"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not fit"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn train_needs_a_section_name_when_there_are_several() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("two.toml");
    std::fs::write(&p, "[train.a]\n[train.b]\n").unwrap();
    let out = Command::new(BIN).args(["train"]).arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--name") && err.contains("a, b"), "{err}");
    std::fs::write(&p, "[train.a]\nbatch_sise = 3\n").unwrap();
    let out = Command::new(BIN).args(["train"]).arg(&p).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch_sise"), "{}", String::from_utf8_lossy(&out.stderr));
}
