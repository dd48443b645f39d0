//! The docs stage over the JSON-family fixtures (WuDao JSON and JSONL, CoreTech IPC demo and
//! expand): the documented counts with zero errors; byte-identical shards and manifest for 1
//! and 4 rayon threads; and a build interrupted after k shards that resumes to the same bytes.
//!
//! The thread-count and resume runs use the `coretech` binary, so `RAYON_NUM_THREADS` and the
//! stop hook (`CORETECH_TEST_STOP_AFTER_SHARDS`) are per process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use coretech::config::PipelineConfig;
use coretech::core::TaskSplit;
use coretech::ipc::IpcScheme;
use coretech::pipeline::docs::{self, STOP_AFTER_SHARDS_ENV};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel)
}

const WUDAO_JSON: &str = "wudao/wudaosailing_corpus_test.json";
const WUDAO_JSONL: &str = "wudao/coretech_wudao_demo.jsonl";
const IPC_DEMO: &str = "ipc/coretech_ipcDes_demo.jsonl";
const IPC_EXPAND: &str = "ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl";

/// 478 + 10 + 10 + 2,856 = 3,354 documents; 300 per shard gives 12 shards.
const ROWS_PER_SHARD: usize = 300;

fn config_text(inputs: &[&str], out: &Path) -> String {
    let inputs: Vec<String> = inputs.iter().map(|f| data(f).display().to_string()).collect();
    // Small batches so the 3,354 records cross many parallel batches and shard boundaries.
    format!(
        "stages = [\"docs\"]\n[docs]\ninputs = {inputs:?}\noutput = {:?}\nrows_per_shard = {ROWS_PER_SHARD}\nbatch_records = 64\n",
        out.display().to_string()
    )
}

#[test]
fn json_family_fixtures_read_with_their_documented_counts_and_no_errors() {
    // The expanded IPC file gives 6 codes twice with different texts (entries re-keyed onto a
    // code it also lists): the later record of each is renamed `ID#2` and counted (a strict run
    // fails on them, see below); every file reads with no error.
    for (file, source, n, dup_ids) in
        [(WUDAO_JSON, "wudao", 478, 0), (WUDAO_JSONL, "wudao", 10, 0), (IPC_DEMO, "ipc", 10, 0), (IPC_EXPAND, "ipc", 2856, 6)]
    {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PipelineConfig::parse(&config_text(&[file], &dir.path().join("docs")), "t.toml").unwrap().docs.unwrap();
        let r = docs::run(&cfg, &IpcScheme::default(), TaskSplit::default(), dup_ids == 0).unwrap();
        assert_eq!(r.sources.keys().collect::<Vec<_>>(), [source], "{file}");
        let s = &r.sources[source];
        assert_eq!((s.files, s.read), (1, n), "{file}");
        assert_eq!(s.errors.values().sum::<u64>(), 0, "{file}: {:?}", r.error_samples);
        assert_eq!(s.id_collisions.get("renamed").copied().unwrap_or(0), dup_ids, "{file}");
        assert_eq!(r.error_samples.iter().filter(|e| e.kind == "duplicate-id").count() as u64, dup_ids, "{file}");
        assert_eq!(s.read, s.accounted(), "{file}");
        assert!(r.unrecognized.is_empty());
    }
}

/// A strict build stops at the first id used twice with other text, naming both places.
#[test]
fn a_strict_build_fails_on_an_id_given_twice_with_other_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PipelineConfig::parse(&config_text(&[IPC_EXPAND], &dir.path().join("docs")), "t.toml").unwrap().docs.unwrap();
    let err = docs::run(&cfg, &IpcScheme::default(), TaskSplit::default(), true).unwrap_err().to_string();
    assert!(err.contains("duplicate-id") && err.contains("is already used by") && err.matches(" record ").count() == 2, "{err}");
    assert!(err.contains("renamed \"ipc:"), "{err}");
    assert!(err.contains("coretech_ipc_description_expand"), "{err}");
}

/// Runs `coretech docs` on a config written next to `out`; returns (success, stderr).
fn run_bin(inputs: &[&str], out: &Path, env: &[(&str, &str)]) -> (bool, String) {
    run_config(&config_text(inputs, out), out, env)
}

/// Runs `coretech docs` on the config `text`, written next to `out`; returns (success, stderr).
fn run_config(text: &str, out: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let cfg = out.with_extension("toml");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coretech"));
    cmd.arg("docs").arg(&cfg).env("RUST_LOG", "info").env_remove(STOP_AFTER_SHARDS_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("coretech binary runs");
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Every file of an output directory (and of its sub-folders) except the timing-bearing
/// `.report.json`, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            for (n, b) in files(&e.path()) {
                out.insert(format!("{name}/{n}"), b);
            }
        } else if name != ".report.json" {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn shard_names(n: usize) -> Vec<String> {
    (0..n).map(docs::shard_name).collect()
}

const ALL: [&str; 4] = [WUDAO_JSON, WUDAO_JSONL, IPC_DEMO, IPC_EXPAND];

#[test]
fn one_and_four_threads_write_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    // Same output path for both runs (the path is part of the config hash in the manifest).
    let out = tmp.path().join("docs");
    let (ok, log) = run_bin(&ALL, &out, &[("RAYON_NUM_THREADS", "1")]);
    assert!(ok, "{log}");
    let one = files(&out);
    let rejects = tmp.path().join("docs.rejects");
    let one_rejects = files(&rejects);
    std::fs::rename(&out, tmp.path().join("docs-1")).unwrap();
    let (ok, log) = run_bin(&ALL, &out, &[("RAYON_NUM_THREADS", "4")]);
    assert!(ok, "{log}");
    let four = files(&out);
    let mut want: Vec<String> = vec![".manifest.json".into()];
    want.extend(shard_names(12));
    assert_eq!(one.keys().cloned().collect::<Vec<_>>(), want, "the rejects are beside the output, not in it");
    assert_eq!(four.keys().collect::<Vec<_>>(), one.keys().collect::<Vec<_>>());
    for (name, bytes) in &one {
        assert!(four[name] == *bytes, "{name} differs between 1 and 4 threads");
    }
    let four_rejects = files(&rejects);
    assert_eq!(one_rejects.keys().cloned().collect::<Vec<_>>(), [".manifest.json", "part-00000.parquet"]);
    assert!(one_rejects == four_rejects, "rejects differ between 1 and 4 threads");
    let m: serde_json::Value = serde_json::from_slice(&one[".manifest.json"]).unwrap();
    let rows: u64 = m["shards"].as_array().unwrap().iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    // 3,354 JSON-family records; the web policy drops one (WuDao 272, a sentence repeated
    // 15 times: `repeated_10_grams`), and it is the one rejects row. 10 IPC entries given
    // twice stay (4 with the same text, 6 with other text renamed `ID#2`: counted).
    assert_eq!(rows, 3353);
    assert_eq!(m["info"]["rejects"], 1);
    assert_eq!(m["accounting"]["sources"]["ipc"]["id_collisions"], serde_json::json!({"same-text": 4, "renamed": 6}));
}

#[test]
fn interrupted_build_resumes_to_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("docs");
    let (ok, log) = run_bin(&ALL, &out, &[]);
    assert!(ok, "{log}");
    let reference = files(&out);
    let rejects = tmp.path().join("docs.rejects");
    let reference_rejects = files(&rejects);
    std::fs::remove_dir_all(&out).unwrap();

    // Stopped right after the 5th shard and its progress record, as a kill at that point would.
    let (ok, log) = run_bin(&ALL, &out, &[(STOP_AFTER_SHARDS_ENV, "5"), ("RAYON_NUM_THREADS", "2")]);
    assert!(!ok && log.contains("stopped after 5 shards"), "{log}");
    let mut left: Vec<String> = files(&out).into_keys().collect();
    left.sort();
    let mut want = shard_names(5);
    want.push(".progress.json".into());
    want.sort();
    assert_eq!(left, want);
    // What a kill a moment later could also leave: the next shard renamed into place before
    // progress.json was updated, and a temp file of the one after.
    std::fs::write(out.join(docs::shard_name(5)), b"finished but not recorded").unwrap();
    std::fs::write(out.join(format!("{}.tmp", docs::shard_name(6))), b"half written").unwrap();

    let (ok, log) = run_bin(&ALL, &out, &[("RAYON_NUM_THREADS", "3")]);
    assert!(ok, "{log}");
    assert!(log.contains("resuming after 5 finished shards"), "{log}");
    let resumed = files(&out);
    assert_eq!(resumed.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    for (name, bytes) in &reference {
        assert!(resumed[name] == *bytes, "{name} differs after resuming");
    }
    assert!(files(&rejects) == reference_rejects, "the rejects differ after resuming");
    // The report's accounting covers the whole input, not just the resumed part.
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(".report.json")).unwrap()).unwrap();
    assert_eq!(report["sources"]["wudao"]["read"], 488);
    assert_eq!(report["sources"]["ipc"]["read"], 2866);
}

/// A build resumed between two records of one file that share an id (the re-keyed old edition
/// of G06Q 10/00 is record 1244 of the expand file, the current entry record 1250; a shard of
/// 1,247 rows ends between them) renames the later one exactly as an uninterrupted build does:
/// the resumed run reads the file's earlier records again for their ids.
#[test]
fn a_resume_between_two_records_sharing_an_id_renames_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("docs");
    let text = config_text(&[IPC_EXPAND], &out).replace(&format!("rows_per_shard = {ROWS_PER_SHARD}"), "rows_per_shard = 1247");
    let run = |env: &[(&str, &str)]| run_config(&text, &out, env);
    let (ok, log) = run(&[]);
    assert!(ok, "{log}");
    let reference = files(&out);
    let m: serde_json::Value = serde_json::from_slice(&reference[".manifest.json"]).unwrap();
    assert_eq!(m["accounting"]["sources"]["ipc"]["id_collisions"], serde_json::json!({"renamed": 6, "same-text": 1}));
    std::fs::remove_dir_all(&out).unwrap();

    let (ok, log) = run(&[(STOP_AFTER_SHARDS_ENV, "1")]);
    assert!(!ok && log.contains("stopped after 1 shards"), "{log}");
    let (ok, log) = run(&[]);
    assert!(ok && log.contains("resuming after 1 finished shards"), "{log}");
    let resumed = files(&out);
    assert_eq!(resumed.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    for (name, bytes) in &reference {
        assert!(resumed[name] == *bytes, "{name} differs after resuming");
    }
}
