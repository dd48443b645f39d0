//! `eval` and `chat` end to end with a tiny random checkpoint: the library calls and the CLI.

#[path = "infer_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use coretech::infer::eval::{self, EvalConfig, EvalReport, Task};
use coretech::infer::score::Level;
use coretech::infer::{Checkpoint, GenerationConfig, LoadOptions};
use support::{tiny_checkpoint, Tiny};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/sft").join(name)
}

/// A small mixed split: the first two records of the GovPatent IPC file (one with
/// `task_type`, one without) and two of the Paper key-technology file, copied verbatim.
fn mixed_split(dir: &Path) -> PathBuf {
    let mut lines: Vec<String> = Vec::new();
    let ipc = std::fs::read_to_string(fixture("GovPatent-SFT_QA_IPC.jsonl")).unwrap();
    let ipc: Vec<&str> = ipc.lines().collect();
    let with_type = ipc.iter().find(|l| l.contains("\"task_type\"")).unwrap();
    let without = ipc.iter().find(|l| !l.contains("\"task_type\"")).unwrap();
    lines.push(with_type.to_string());
    lines.push(without.to_string());
    let tech = std::fs::read_to_string(fixture("Paper-SFT_QA_Tech.jsonl")).unwrap();
    lines.extend(tech.lines().take(2).map(str::to_string));
    let p = dir.join("test.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn cfg(max_new_tokens: usize) -> EvalConfig {
    EvalConfig { generation: GenerationConfig { max_new_tokens, ..Default::default() }, ..Default::default() }
}

#[test]
fn eval_runs_end_to_end_and_its_report_is_reproducible() {
    let ckpt_dir = tiny_checkpoint(&Tiny::default(), 21);
    let work = tempfile::tempdir().unwrap();
    let split = mixed_split(work.path());
    let mut ckpt = Checkpoint::load(ckpt_dir.path(), &LoadOptions::default()).unwrap();
    let mut seen = Vec::new();
    let report = eval::run(&mut ckpt, &split, &cfg(12), |r| seen.push(r.index)).unwrap();
    assert_eq!(seen, [0, 1, 2, 3]);
    let a = &report.aggregate;
    assert_eq!((a.examples, a.ipc_examples, a.tech_examples), (4, 2, 2));
    assert_eq!(a.ipc.iter().map(|l| l.level).collect::<Vec<_>>(), [Level::Section, Level::Class, Level::Subclass, Level::Group]);
    assert!(a.tech.is_some());
    assert_eq!(a.generated_tokens, report.examples.iter().map(|e| e.generated_tokens).sum::<usize>());
    for e in &report.examples {
        match e.task {
            Task::Ipc => {
                let ipc = e.ipc.as_ref().unwrap();
                assert!(e.tech.is_none());
                assert!(!ipc.reference_codes.is_empty());
                // The reference side of every level comes from the reference answer.
                assert_eq!(ipc.levels[2].prf.counts.reference, ipc.levels[2].reference_set.len());
            }
            Task::Tech => {
                let t = e.tech.as_ref().unwrap();
                assert!(e.ipc.is_none());
                assert!(t.reference.len() >= 3, "{:?}", t.reference);
            }
            other => panic!("the split holds IPC and tech examples only, not {other}"),
        }
        assert!(e.generated_tokens <= 12);
    }
    assert!(report.examples[1].task_inferred);
    assert!(!report.examples[0].task_inferred);

    // The JSON report: written, read back, the same on a second run.
    let p1 = work.path().join("r1.json");
    report.write(&p1).unwrap();
    let back: EvalReport = serde_json::from_slice(&std::fs::read(&p1).unwrap()).unwrap();
    assert_eq!(back, report);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p1).unwrap()).unwrap();
    for key in ["checkpoint", "sft_test", "tokenizer", "dtype", "config", "examples_in_file", "aggregate", "examples"] {
        assert!(v.get(key).is_some(), "report lacks {key}");
    }
    assert!(v["aggregate"]["ipc"][0]["micro"].get("precision").is_some());
    assert!(v["examples"][0]["ipc"]["levels"][3].get("f1").is_some());
    let again = eval::run(&mut Checkpoint::load(ckpt_dir.path(), &LoadOptions::default()).unwrap(), &split, &cfg(12), |_| {}).unwrap();
    let p2 = work.path().join("r2.json");
    again.write(&p2).unwrap();
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());

    // The summary shows every level and both technology measures.
    let s = report.summary();
    for word in ["section", "class", "subclass", "group", "exact", "fuzzy ≥ 0.5", "4 of 4 examples (2 IPC, 2 tech)"] {
        assert!(s.contains(word), "{word}: {s}");
    }
}

#[test]
fn limit_and_empty_splits() {
    let ckpt_dir = tiny_checkpoint(&Tiny::default(), 22);
    let work = tempfile::tempdir().unwrap();
    let split = mixed_split(work.path());
    let mut ckpt = Checkpoint::load(ckpt_dir.path(), &LoadOptions::default()).unwrap();
    let report = eval::run(&mut ckpt, &split, &EvalConfig { limit: Some(1), ..cfg(4) }, |_| {}).unwrap();
    assert_eq!((report.aggregate.examples, report.examples_in_file), (1, 4));
    assert!(report.aggregate.tech.is_none());
    let empty = work.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let err = eval::run(&mut ckpt, &empty, &cfg(4), |_| {}).unwrap_err().to_string();
    assert!(err.contains("empty.jsonl") && err.contains("no examples"), "{err}");
    let err = eval::run(&mut ckpt, &split, &EvalConfig { tech_match_threshold: 0.0, ..cfg(4) }, |_| {}).unwrap_err().to_string();
    assert!(err.contains("tech-threshold"), "{err}");
}

fn coretech() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coretech"))
}

#[test]
fn cli_eval_chat_and_repl() {
    let ckpt_dir = tiny_checkpoint(&Tiny::default(), 23);
    let work = tempfile::tempdir().unwrap();
    let split = mixed_split(work.path());
    let report = work.path().join("report.json");
    let out = coretech()
        .args(["eval", "--checkpoint"])
        .arg(ckpt_dir.path())
        .arg("--sft-test")
        .arg(&split)
        .args(["--limit", "3", "--max-new-tokens", "6", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("IPC (micro)") && stdout.contains("key tech (micro)") && stdout.contains("report:"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["aggregate"]["examples"], 3);

    // One question, sampled.
    let out = coretech()
        .args(["chat", "--checkpoint"])
        .arg(ckpt_dir.path())
        .args([
            "--prompt",
            "智能芯片涉及的IPC分类编号有哪些？",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.7",
            "--top-p",
            "0.8",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = out.stdout.clone();
    let again = coretech()
        .args(["chat", "--checkpoint"])
        .arg(ckpt_dir.path())
        .args([
            "--prompt",
            "智能芯片涉及的IPC分类编号有哪些？",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.7",
            "--top-p",
            "0.8",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(first, again.stdout);

    // The REPL: a question, a blank line, a follow-up, a reset, the first question again, then
    // /exit (what follows is not read). Greedy: after /reset the first question gets the answer
    // a one-shot `--prompt` gets.
    let one_shot = coretech()
        .args(["chat", "--checkpoint"])
        .arg(ckpt_dir.path())
        .args(["--prompt", "你好", "--max-new-tokens", "4"])
        .output()
        .unwrap();
    assert!(one_shot.status.success());
    let first_answer = String::from_utf8(one_shot.stdout).unwrap();
    let mut child = coretech()
        .args(["chat", "--checkpoint"])
        .arg(ckpt_dir.path())
        .args(["--max-new-tokens", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all("你好\n\n再见\n/reset\n你好\n/exit\n不会被读到\n".as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with(&first_answer) && stdout.ends_with(&first_answer), "{stdout:?} vs {first_answer:?}");
    assert!(stdout.len() > 2 * first_answer.len());
    assert!(stderr.contains("(conversation reset)"));
    // One prompt at the start and one after each of the five lines before /exit.
    assert_eq!(stderr.matches("> ").count(), 6, "{stderr}");
}

#[test]
fn cli_errors_name_what_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no-such-checkpoint");
    let out = coretech().args(["chat", "--checkpoint"]).arg(&missing).args(["--prompt", "hi"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-checkpoint") && err.contains("config.json"), "{err}");

    let ckpt_dir = tiny_checkpoint(&Tiny::default(), 24);
    let out = coretech().args(["chat", "--checkpoint"]).arg(ckpt_dir.path()).args(["--prompt", "hi", "--top-p", "2"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top-p"));

    let out = coretech().args(["chat", "--checkpoint"]).arg(ckpt_dir.path()).args(["--prompt", "hi", "--dtype", "int4"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("dtype"));

    let out = coretech().args(["chat", "--checkpoint"]).arg(ckpt_dir.path()).args(["--prompt", "hi", "--device", "tpu"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("device"));

    let bad = work.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"instruction\": \"q\"}\n").unwrap();
    let out = coretech().args(["eval", "--checkpoint"]).arg(ckpt_dir.path()).arg("--sft-test").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:1") && err.contains("missing \"output\""), "{err}");
}

#[test]
fn the_eval_stage_resolves_a_run_directory_and_writes_its_report() {
    let ckpt_dir = tiny_checkpoint(&Tiny::default(), 21);
    let work = tempfile::tempdir().unwrap();
    let split = mixed_split(work.path());
    // A training run directory: checkpoints/step-N with a trainer_state.json marks it complete.
    let run = work.path().join("run");
    let step = run.join("checkpoints/step-00000003");
    std::fs::create_dir_all(&step).unwrap();
    for e in std::fs::read_dir(ckpt_dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), step.join(e.file_name())).unwrap();
    }
    std::fs::write(step.join("trainer_state.json"), "{}").unwrap();
    let report = work.path().join("eval.json");
    let stage = eval::EvalStageConfig {
        checkpoint: run.clone(),
        sft_test: split.clone(),
        report: Some(report.clone()),
        device: "cpu".into(),
        settings: EvalConfig { limit: Some(2), ..cfg(8) },
    };
    let rep = eval::run_stage(&stage).unwrap();
    assert_eq!(rep.checkpoint, step);
    assert_eq!(rep.aggregate.examples, 2);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(written["aggregate"]["examples"], 2);

    let missing = eval::EvalStageConfig { checkpoint: work.path().join("no-run"), ..stage };
    let e = eval::run_stage(&missing).unwrap_err().to_string();
    assert!(e.contains("eval.checkpoint") && e.contains("no-run"), "{e}");
}
