//! `python/coretech_loader.py` against the Rust loader: tests/compat/check_loader.py compares
//! its batches, labels and cursors with `coretech batches` on shard sets written here (a CPT
//! set without loss mask, an SFT set with loss mask and stage column; several shards and row
//! groups each). SKIPPED without a python3 that has pyarrow ($CORETECH_PYTHON, ./.venv).

use std::path::{Path, PathBuf};
use std::process::Command;

use coretech::shard::tokens::{self, Columns, Row};
use coretech::shard::{Manifest, ShardWriter, WriterConfig};

const BIN: &str = env!("CARGO_BIN_EXE_coretech");
const SEQ: usize = 12;

/// A shard set of `shards` files with row groups of `group` rows; SFT sets carry a loss mask
/// and a stage. Rows pack 1–3 segments and some padding.
fn write_set(dir: &Path, kind: &str, shards: &[usize], group: usize, first_id: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let sft = kind == "sft";
    let cols = Columns { loss_mask: sft, stage: sft };
    let mut m = Manifest { kind: kind.into(), tool_version: "test".into(), ..Default::default() };
    m.info.insert("seq_len".into(), SEQ.into());
    let mut id = first_id;
    for (k, &n) in shards.iter().enumerate() {
        let rows: Vec<Row> = (0..n)
            .map(|_| {
                id += 1;
                let seg_lens: Vec<u32> = match id % 3 {
                    0 => vec![SEQ as u32],
                    1 => vec![4, 5],
                    _ => vec![3, 2, 4],
                };
                let real: usize = seg_lens.iter().map(|&l| l as usize).sum();
                let mut ids: Vec<u32> = (0..real as u32).map(|t| id * 100 + t).collect();
                ids.resize(SEQ, 0);
                let loss_mask = sft.then(|| (0..SEQ).map(|t| u8::from(t < real && t % 4 != 0)).collect());
                let sources = seg_lens.iter().map(|_| "t".to_string()).collect();
                Row { input_ids: ids, seg_lens, loss_mask, sources, stage: sft.then_some(id % 3) }
            })
            .collect();
        let path = dir.join(format!("part-{k:05}.parquet"));
        let mut w =
            ShardWriter::create(&path, tokens::schema(cols), &WriterConfig { row_group_rows: group, ..Default::default() }).unwrap();
        for c in rows.chunks(group) {
            w.write(&tokens::to_batch(c, cols)).unwrap();
        }
        m.shards.push(w.finish().unwrap());
    }
    m.save(dir).unwrap();
}

/// Python with pyarrow: $CORETECH_PYTHON, ./.venv/bin/python, python3.
fn python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CORETECH_PYTHON").map(PathBuf::from).into_iter().collect();
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    candidates.push("python3".into());
    candidates.into_iter().find(|p| Command::new(p).args(["-c", "import pyarrow"]).output().is_ok_and(|o| o.status.success()))
}

#[test]
fn the_python_reader_yields_the_rust_loaders_batches_and_cursors() {
    let tmp = tempfile::tempdir().unwrap();
    let (cpt, sft) = (tmp.path().join("cpt"), tmp.path().join("sft"));
    write_set(&cpt, "tokens", &[7, 0, 11], 3, 0);
    write_set(&sft, "sft", &[5, 9], 2, 1000);
    // The reference itself: `coretech batches` prints one JSON line per batch with a cursor.
    let o = Command::new(BIN).args(["batches", "--batch-size", "4", "--epochs", "2"]).arg(&cpt).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2 * 18usize.div_ceil(4));
    assert_eq!(lines[0]["input_ids"].as_array().unwrap().len(), 4 * SEQ);
    assert_eq!(lines.last().unwrap()["state"]["cursor"], serde_json::json!({"stage": 0, "epoch": 1, "step": 5}));

    let Some(py) = python() else {
        eprintln!("SKIPPED tests/compat/check_loader.py: no python3 with pyarrow (set CORETECH_PYTHON or create .venv)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/check_loader.py");
    let out = Command::new(&py).arg(&script).arg(BIN).arg(&cpt).arg(&sft).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "check_loader.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
