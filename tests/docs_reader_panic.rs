//! A reader that panics on one input must not bring the `docs` build down, nor hang it: the
//! panic is caught at the record (parse, render, clean) or at the file (framing), counted as a
//! `reader-panic` error naming the file, and the other inputs are built as without it; with
//! `--strict` the build fails with that error. No real input is known to panic a reader, so the
//! panics come from the test hooks `CORETECH_TEST_PANIC_PARSING` / `CORETECH_TEST_PANIC_FRAMING`
//! (test builds only), which make the reader panic on the one named file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_coretech");
/// A run still alive after this is taken as hung (the whole build takes about a second).
const LIMIT: Duration = Duration::from_secs(120);
const WUDAO: &str = "coretech_wudao_demo.jsonl";

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel)
}

struct Run {
    code: Option<i32>,
    stderr: String,
    report: Option<Value>,
}

/// `coretech docs` over three fixtures (WuDao JSONL with 10 records, an EPO XML, a USPTO APS
/// file) with the hook variable `hook` set to the WuDao file's name.
fn docs(dir: &Path, name: &str, hook: Option<&str>, strict: bool) -> Run {
    let inputs = [
        fixture(&format!("wudao/{WUDAO}")),
        fixture("epo/EP4090146A1-v1-5-1-biblio-only.xml"),
        fixture("uspto/US03937375-aps-greenbook.txt"),
    ];
    let list: Vec<String> = inputs.iter().map(|p| format!("{:?}", p.to_str().unwrap())).collect();
    let out = dir.join(name);
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, format!("[docs]\ninputs = [{}]\noutput = {:?}\nrejects = false\n", list.join(", "), out.to_str().unwrap()))
        .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("docs").arg(&cfg).env("RUST_BACKTRACE", "0").stdout(Stdio::null()).stderr(Stdio::piped());
    if strict {
        cmd.arg("--strict");
    }
    if let Some(var) = hook {
        cmd.env(var, WUDAO);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: still running after {LIMIT:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let report = std::fs::read_to_string(out.join(".report.json")).ok().map(|t| serde_json::from_str(&t).unwrap());
    Run { code, stderr, report }
}

fn count(report: &Value, source: &str, field: &str) -> u64 {
    report["sources"][source][field].as_u64().unwrap_or(0)
}

fn errors(report: &Value, source: &str, kind: &str) -> u64 {
    report["sources"][source]["errors"][kind].as_u64().unwrap_or(0)
}

#[test]
fn a_reader_panic_is_a_counted_error_of_its_file_and_the_build_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = docs(tmp.path(), "clean", None, false);
    assert_eq!(clean.code, Some(0), "{}", clean.stderr);
    let clean = clean.report.unwrap();
    assert_eq!(count(&clean, "wudao", "read"), 10);
    assert!(count(&clean, "wudao", "kept") > 0);

    // Every WuDao record panics in its reader: 10 counted errors at their records, nothing of
    // that file kept, the other two sources exactly as without the panics.
    let run = docs(tmp.path(), "parse-panic", Some("CORETECH_TEST_PANIC_PARSING"), false);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = run.report.unwrap();
    assert_eq!((count(&r, "wudao", "read"), count(&r, "wudao", "kept"), errors(&r, "wudao", "reader-panic")), (10, 0, 10), "{r}");
    for source in ["epo", "uspto"] {
        assert_eq!(r["sources"][source], clean["sources"][source], "{source}");
    }
    let sample = r["error_samples"].as_array().unwrap().iter().find(|e| e["kind"] == "reader-panic").expect("a sample").to_string();
    assert!(sample.contains(WUDAO) && sample.contains("\"offset\":0") && sample.contains("panicked"), "{sample}");

    // --strict: the first such error ends the build, naming the file and the kind.
    let run = docs(tmp.path(), "parse-panic-strict", Some("CORETECH_TEST_PANIC_PARSING"), true);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(error.contains(WUDAO) && error.contains("reader-panic") && error.contains("panicked"), "{}", run.stderr);
}

#[test]
fn a_panic_while_framing_a_file_keeps_its_earlier_records_and_skips_its_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = docs(tmp.path(), "clean", None, false).report.unwrap();
    let run = docs(tmp.path(), "frame-panic", Some("CORETECH_TEST_PANIC_FRAMING"), false);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = run.report.unwrap();
    // The first record was framed before the panic and is built; the file's other nine are not
    // read; the panic is one error naming the file.
    assert_eq!(count(&r, "wudao", "read"), 1, "{r}");
    assert_eq!(errors(&r, "unknown", "reader-panic"), 1, "{r}");
    for source in ["epo", "uspto"] {
        assert_eq!(r["sources"][source], clean["sources"][source], "{source}");
    }
    let sample = r["error_samples"].as_array().unwrap().iter().find(|e| e["kind"] == "reader-panic").expect("a sample").to_string();
    assert!(sample.contains(WUDAO) && sample.contains("rest of the file is skipped"), "{sample}");

    let run = docs(tmp.path(), "frame-panic-strict", Some("CORETECH_TEST_PANIC_FRAMING"), true);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(WUDAO) && run.stderr.contains("reader-panic"), "{}", run.stderr);
}
