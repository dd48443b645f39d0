//! Issue 16 item 4: the demo's shard folders (and each whole SFT split, stage folders and all)
//! open in the Python loaders researchers use, with nothing but the folder's path. Builds the demo's corpus and SFT outputs with its own config
//! (`pipelines/demo.toml`, the training stages left out) in a temporary directory, checks that
//! every shard folder shows only its shards (side files are dot-prefixed), and runs
//! `tests/compat/check_loaders.py` over them (`datasets.load_dataset("parquet", data_dir=…)`,
//! `load_dataset(DIR)`, `pl.scan_parquet("DIR/*.parquet")`, a polars folder read,
//! `pyarrow.dataset`) when a Python with datasets, polars and pyarrow is found
//! ($CORETECH_PYTHON, ./.venv/bin/python, python3); without one that part is skipped and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use coretech::shard::{Manifest, MANIFEST_FILE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Python with datasets, polars and pyarrow.
fn python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CORETECH_PYTHON").map(PathBuf::from).into_iter().collect();
    candidates.push(root().join(".venv/bin/python"));
    candidates.push("python3".into());
    candidates
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import datasets, polars, pyarrow"]).output().is_ok_and(|o| o.status.success()))
}

/// Files under `dir` (paths relative to it) with no dot-prefixed name on the way, sorted.
fn visible(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if e.path().is_dir() {
                walk(&e.path(), &format!("{prefix}{name}/"), out);
            } else {
                out.push(format!("{prefix}{name}"));
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, "", &mut v);
    v.sort();
    v
}

#[test]
fn the_demos_shard_folders_open_in_datasets_polars_and_pyarrow() {
    // The Python reader names the manifest as Rust does (one name, two languages).
    let py_reader = std::fs::read_to_string(root().join("python/coretech_loader.py")).unwrap();
    assert!(py_reader.contains(&format!("MANIFEST_FILE = \"{MANIFEST_FILE}\"")), "python/coretech_loader.py names another manifest");

    // The demo's config, run from a temporary directory that sees the fixtures.
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("fixtures"), tmp.path().join("fixtures")).unwrap();
    let demo = std::fs::read_to_string(root().join("pipelines/demo.toml")).unwrap();
    let stages = demo.lines().find(|l| l.starts_with("stages = ")).expect("demo.toml lists its stages").to_string();
    // No training stages; the SFT set graded by heuristics alone, since model grading needs the
    // CPT run left out here (tests/sft_grade_model.rs runs the demo's model grading).
    let demo = demo.replace(&stages, r#"stages = ["docs", "dedup", "pack", "sft"]"#).replace("method = \"mix\"", "method = \"heuristic\"");
    assert!(demo.contains("method = \"heuristic\""), "demo.toml's [sft.grade] method changed: update this test");
    std::fs::write(tmp.path().join("demo.toml"), demo).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_coretech")).args(["run", "demo.toml"]).current_dir(tmp.path()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // The demo's grading checkpoint, left in the config, is said to be unused.
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains(r#"sft.grade.model = "runs/demo-cpt" is not used: method = "heuristic""#), "{said}");

    // Every shard folder (the dedup rejects too: a Parquet folder beside the output): its
    // visible files are exactly its manifest's shards; the dedup folder's duplicates table lies
    // beside it.
    assert!(tmp.path().join("out/demo/dedup.duplicates.parquet").is_file());
    let out = tmp.path().join("out/demo");
    let mut dirs: Vec<PathBuf> =
        ["documents", "dedup", "dedup.rejects", "tokens", "tokens-validation"].iter().map(|d| out.join(d)).collect();
    for split in ["train", "validation", "test"] {
        for k in 0..3 {
            dirs.push(out.join(format!("sft/{split}/stage-{k}")));
        }
        // The whole split: its manifest lists every stage's shards (`stage-K/part-*.parquet`).
        dirs.push(out.join(format!("sft/{split}")));
    }
    for d in &dirs {
        let m = Manifest::load(d).unwrap();
        let mut shards: Vec<String> = m.shards.iter().map(|s| s.file.clone()).collect();
        shards.sort();
        assert!(!shards.is_empty() && m.rows() > 0, "{}: no rows", d.display());
        assert_eq!(visible(d), shards, "{}", d.display());
    }

    // A folder of the old layout (side files without the dot): refused by name rather than read
    // as a folder without a manifest, and its stage's next run replaces it.
    let tokens = out.join("tokens");
    for (new, old) in [(MANIFEST_FILE, "manifest.json"), (coretech::stage::REPORT_FILE, "report.json")] {
        std::fs::rename(tokens.join(new), tokens.join(old)).unwrap();
    }
    let e = coretech::shard::verified_shards(&tokens).unwrap_err().to_string();
    assert!(e.contains("manifest.json") && e.contains("older coretech"), "{e}");
    let run = Command::new(env!("CARGO_BIN_EXE_coretech")).args(["run", "demo.toml"]).current_dir(tmp.path()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(visible(&tokens), Manifest::load(&tokens).unwrap().shards.iter().map(|s| s.file.clone()).collect::<Vec<_>>());

    let Some(py) = python() else {
        eprintln!(
            "SKIPPED tests/compat/check_loaders.py: no python with datasets, polars and pyarrow (set CORETECH_PYTHON or create .venv)"
        );
        return;
    };
    let r = Command::new(&py).arg(root().join("tests/compat/check_loaders.py")).args(&dirs).output().unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&r.stderr));
    assert!(!stdout.contains("SKIPPED"), "{stdout}");
    eprintln!("{stdout}");
}
