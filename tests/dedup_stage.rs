//! The dedup stage end to end on document shards built from fixture texts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use coretech::core::rng::SplitMix64;
use coretech::core::TaskSplit;
use coretech::dedup::bench::{char_edits, load_fixture_texts, write_shards};
use coretech::dedup::stage::{read_duplicates, Step};
use coretech::dedup::{run, DedupConfig};
use coretech::shard::documents;
use coretech::Document;
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data")
}

/// A small corpus: `n` fixture texts (patents, WuDao, IPC, EP) plus, for each, an edited copy.
fn corpus(n: usize, seed: u64) -> Vec<Document> {
    let texts = load_fixture_texts(&fixtures()).unwrap();
    let mut rng = SplitMix64::new(seed);
    let mut docs = Vec::new();
    for t in texts.iter().step_by(texts.len() / n).take(n) {
        let d = Document {
            id: t.id.clone(),
            source: t.source.clone(),
            lang: t.lang.clone(),
            date: "2020-01-01".into(),
            text: t.text.clone(),
            ..Default::default()
        };
        docs.push(Document {
            id: format!("copy:{}", t.id),
            source: "mirror".into(),
            date: "2022-01-01".into(),
            text: char_edits(&t.text, 0.005, &mut rng),
            ..d.clone()
        });
        docs.push(d);
    }
    docs
}

fn kept_ids(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in documents::shard_files(dir).unwrap() {
        for b in documents::read_shard(&f, 1000).unwrap() {
            out.extend(b.unwrap().into_iter().map(|d| d.id));
        }
    }
    out
}

/// Every file a run wrote, by name: the output folder's files (not the run report, which holds
/// the elapsed time), the duplicates table beside it and the rejects folder's files.
fn written(cfg: &DedupConfig) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (prefix, dir) in [("", cfg.output.clone()), ("rejects/", cfg.rejects_dir().unwrap())] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().is_file() && e.file_name() != ".report.json" {
                out.insert(format!("{prefix}{}", e.file_name().to_string_lossy()), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out.insert("duplicates".into(), std::fs::read(cfg.duplicates_file().unwrap()).unwrap());
    out
}

/// The `part-*.parquet` files under `dir` (task folders included), by file name.
fn parts(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir(dir) {
        let name = e.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            out.insert(name, std::fs::read(&e).unwrap());
        }
    }
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// One row of a rejects folder.
#[derive(Debug)]
struct RejectRow {
    doc: Document,
    stage: String,
    reason: String,
    kept_id: Option<String>,
    similarity: Option<f64>,
}

/// Every row of the rejects folder `dir`, in manifest order.
fn read_rejects(dir: &Path) -> Vec<RejectRow> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;
    let m = coretech::shard::Manifest::load(dir).unwrap();
    assert_eq!(m.kind, coretech::stage::REJECTS_KIND);
    let mut out = Vec::new();
    for part in &m.shards {
        let path = dir.join(&part.file);
        let f = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        for b in reader {
            let b = b.unwrap();
            let docs = documents::from_batch(&b, &path).unwrap();
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (stage, reason, kept) = (s("stage"), s("reason"), s("kept_id"));
            let sim = b.column_by_name("similarity").unwrap().as_primitive::<Float64Type>().clone();
            for (i, doc) in docs.into_iter().enumerate() {
                out.push(RejectRow {
                    doc,
                    stage: stage.value(i).into(),
                    reason: reason.value(i).into(),
                    kept_id: kept.is_valid(i).then(|| kept.value(i).to_string()),
                    similarity: sim.is_valid(i).then(|| sim.value(i)),
                });
            }
        }
    }
    out
}

/// `corpus(n, seed)` (originals and near copies) plus an exact copy, under another source and
/// id, of every fourth original: both kinds of removal.
fn corpus_with_exact(n: usize, seed: u64) -> Vec<Document> {
    let mut docs = corpus(n, seed);
    let exact: Vec<Document> = docs
        .iter()
        .filter(|d| d.source != "mirror")
        .step_by(4)
        .map(|d| Document { id: format!("exact:{}", d.id), source: "wudao".into(), ..d.clone() })
        .collect();
    docs.extend(exact);
    docs
}

fn run_on(docs: Vec<Document>, rows_per_shard: usize, threads: usize) -> (BTreeSet<String>, Vec<(String, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), docs, rows_per_shard).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| run(&cfg, TaskSplit::default(), None)).unwrap();
    let mut dups: Vec<(String, String, String)> =
        read_duplicates(&cfg.duplicates_file().unwrap()).unwrap().into_iter().map(|r| (r.removed_id, r.kept_id, r.kind)).collect();
    dups.sort();
    (kept_ids(&cfg.output), dups)
}

#[test]
fn exact_dedup_removes_identical_and_whitespace_copies_across_sources() {
    let base = "本发明涉及一种专利文本处理方法。\n包括读取、清洗和去重三个步骤。 The method is fast.";
    let docs = vec![
        Document { id: "cnipa:CN1".into(), source: "cnipa".into(), text: base.into(), ..Default::default() },
        Document { id: "wudao:7".into(), source: "wudao".into(), text: base.into(), ..Default::default() },
        Document {
            id: "epo:EP1".into(),
            source: "epo".into(),
            text: format!("  {}\n\n", base.replace(' ', "   ").replace('\n', "\r\n\t")),
            ..Default::default()
        },
        Document {
            id: "wudao:8".into(),
            source: "wudao".into(),
            text: "完全不同的一段新闻文本，讲的是天气和交通。".into(),
            ..Default::default()
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), docs, 2).unwrap();
    let mut cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    cfg.near.enabled = false; // exact alone must catch these
    let report = run(&cfg, TaskSplit::default(), None).unwrap();
    assert_eq!(kept_ids(&cfg.output), BTreeSet::from(["cnipa:CN1".to_string(), "wudao:8".to_string()]));
    let dups = read_duplicates(&cfg.duplicates_file().unwrap()).unwrap();
    assert_eq!(dups.len(), 2);
    assert!(dups.iter().all(|r| r.kind == "exact" && r.kept_id == "cnipa:CN1" && r.jaccard == 1.0), "{dups:?}");
    // Accounting: read = kept + duplicates, per source and per kind.
    let t = report.total();
    assert_eq!((t.read, t.kept, t.accounted()), (4, 2, 4));
    assert_eq!(report.sources["wudao"].duplicates["exact"], 1);
    assert_eq!(report.sources["epo"].duplicates["exact"], 1);
    let m = coretech::shard::Manifest::load(&cfg.output).unwrap();
    assert_eq!(m.rows(), 2);
    assert_eq!(m.accounting["sources"]["epo"]["duplicates"]["exact"], 1);
}

#[test]
fn near_copies_are_removed_and_outputs_are_deterministic_and_resumable() {
    let docs = corpus(40, 3);
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), docs.clone(), 25).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    let r = run(&cfg, TaskSplit::default(), None).unwrap();
    assert_eq!(r.total().read, 80);
    let dups = read_duplicates(&cfg.duplicates_file().unwrap()).unwrap();
    // Every 0.5 %-edited copy goes, in favour of its original (source priority beats `mirror`).
    let removed: BTreeSet<&str> = dups.iter().map(|r| r.removed_id.as_str()).collect();
    for d in docs.iter().filter(|d| d.source == "mirror") {
        assert!(removed.contains(d.id.as_str()), "{} not removed", d.id);
    }
    for r in dups.iter().filter(|r| r.removed_id.starts_with("copy:")) {
        assert_eq!(r.kept_id, r.removed_id.trim_start_matches("copy:"));
        assert!(r.kind == "near" && r.jaccard >= 0.8, "{r:?}");
    }
    let bytes = written;
    let first = bytes(&cfg);
    assert!(first.keys().any(|k| k.starts_with("rejects/part-")), "{:?}", first.keys());
    assert!(!cfg.work().exists(), "work files removed after a single-machine run");
    // Same input and config: up to date, same bytes.
    run(&cfg, TaskSplit::default(), None).unwrap();
    assert_eq!(bytes(&cfg), first);
    // The same build as a 2-task job array, step by step, gives the same shards and audit table.
    let mut multi = cfg.clone();
    multi.output = dir.path().join("multi");
    for step in [Step::Signatures, Step::Buckets, Step::Cluster, Step::Filter] {
        for i in 0..2 {
            run(&multi, TaskSplit::new(i, 2).unwrap(), Some(step)).unwrap();
        }
    }
    coretech::pipeline::merge::merge(&multi.output).unwrap();
    assert_eq!(kept_ids(&multi.output), kept_ids(&cfg.output));
    assert_eq!(std::fs::read(multi.duplicates_file().unwrap()).unwrap(), std::fs::read(cfg.duplicates_file().unwrap()).unwrap());
    // Each input shard's rejects part is the same bytes whichever task wrote it, and `merge`
    // counts them all.
    assert_eq!(parts(&multi.rejects_dir().unwrap()), parts(&cfg.rejects_dir().unwrap()));
    let info = |d: &Path| coretech::shard::Manifest::load(d).unwrap().info["rejects"].clone();
    assert_eq!(info(&multi.output), info(&cfg.output));
    // Resume: a run killed during the filter step (one output shard and the manifest gone,
    // work kept) finishes with the same bytes.
    let mut keep = cfg.clone();
    keep.output = dir.path().join("resume");
    keep.keep_work = true;
    run(&keep, TaskSplit::default(), None).unwrap();
    let full = bytes(&keep);
    std::fs::remove_file(keep.output.join(".manifest.json")).unwrap();
    std::fs::remove_file(keep.output.join("part-00001.parquet")).unwrap();
    std::fs::remove_file(keep.work().join("edges/b03.done")).unwrap();
    run(&keep, TaskSplit::default(), None).unwrap();
    assert_eq!(bytes(&keep), full);
}

#[test]
fn steps_out_of_order_and_bad_input_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DedupConfig::new(dir.path().join("missing"), dir.path().join("out"));
    let e = run(&cfg, TaskSplit::default(), None).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
    write_shards(&dir.path().join("in"), corpus(4, 1), 4).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    let e = run(&cfg, TaskSplit::new(0, 2).unwrap(), Some(Step::Buckets)).unwrap_err().to_string();
    assert!(e.contains("signatures step has not finished"), "{e}");
    let e = run(&cfg, TaskSplit::new(0, 2).unwrap(), None).unwrap_err().to_string();
    assert!(e.contains("--step"), "{e}");
    let e = run(&cfg, TaskSplit::default(), Some(Step::Filter)).unwrap_err().to_string();
    assert!(e.contains("cluster step has not finished"), "{e}");
    // A Parquet file that is not a document shard.
    std::fs::write(dir.path().join("in/part-00009.parquet"), b"not parquet").unwrap();
    std::fs::remove_file(dir.path().join("in/.manifest.json")).unwrap();
    let e = run(&cfg, TaskSplit::default(), None).unwrap_err().to_string();
    assert!(e.contains("part-00009.parquet"), "{e}");
    let mut bad = cfg.clone();
    bad.near.verify_bins = 1000;
    assert!(run(&bad, TaskSplit::default(), None).unwrap_err().to_string().contains("verify_bins"));
}

#[test]
fn verify_sample_compares_estimates_with_exact_jaccard() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), corpus(30, 5), 100).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    run(&cfg, TaskSplit::default(), None).unwrap();
    let v = coretech::dedup::verify::verify_sample(&cfg, 10, 1).unwrap();
    assert_eq!(v.pairs.len(), 10);
    assert!(v.mae() < 0.05, "{}", v.table());
    assert!(v.pairs.iter().all(|p| p.exact > 0.8), "{}", v.table());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    /// The kept set and the removals do not depend on the input order, the shard size or the
    /// thread count.
    #[test]
    fn kept_set_is_independent_of_order_and_threads(seed in 0u64..1000, rows in 7usize..40, threads in 2usize..4) {
        let docs = corpus(24, 11);
        let (kept, dups) = run_on(docs.clone(), 50, 1);
        let mut shuffled = docs;
        let mut rng = SplitMix64::new(seed);
        for i in (1..shuffled.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            shuffled.swap(i, j);
        }
        let (kept2, dups2) = run_on(shuffled, rows, threads);
        prop_assert_eq!(kept, kept2);
        prop_assert_eq!(dups, dups2);
    }
}

/// IPC reference entries (issue 14): read from the fixture IPC files by the docs stage, every
/// code survives dedup under the default policy (sibling entries are templated near copies,
/// e.g. `A01B 1/12` and `A01B 1/04`), exact copies of an entry under its own code collapse,
/// and a web page that copies an entry goes in favour of the entry. Without the identity rule
/// the same run removes more than a hundred entries.
#[test]
fn ipc_entries_keep_every_code_while_copies_of_them_go() {
    use coretech::config::PipelineConfig;
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<String> = ["ipc/coretech_ipcDes_demo.jsonl", "ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl"]
        .iter()
        .map(|f| fixtures().join(f).display().to_string())
        .collect();
    let text = format!("stages = [\"docs\"]\n[docs]\ninputs = {inputs:?}\noutput = {:?}\n", dir.path().join("docs").display().to_string());
    let docs_cfg = PipelineConfig::parse(&text, "t.toml").unwrap().docs.unwrap();
    coretech::pipeline::docs::run(&docs_cfg, &coretech::ipc::IpcScheme::default(), TaskSplit::default(), false).unwrap(); // not strict: 6 codes given twice with other text are duplicate-id errors
    let mut docs: Vec<Document> = Vec::new();
    for f in documents::shard_files(&dir.path().join("docs")).unwrap() {
        for b in documents::read_shard(&f, 1000).unwrap() {
            docs.extend(b.unwrap());
        }
    }
    let codes = |docs: &[Document]| -> BTreeSet<String> { docs.iter().filter(|d| d.source == "ipc").flat_map(|d| d.ipc.clone()).collect() };
    let all_codes = codes(&docs);
    assert!(all_codes.len() > 2800, "{}", all_codes.len());
    // An entry repeated under its own code, and a web copy of another entry.
    let long: Vec<&Document> = docs.iter().filter(|d| d.text.chars().count() > 60).take(2).collect();
    let (twin, copied) = (long[0].clone(), long[1].clone());
    docs.push(Document { id: format!("{}#again", twin.id), ..twin.clone() });
    docs.push(Document { id: "wudao:copy".into(), source: "wudao".into(), ipc: Vec::new(), ..copied.clone() });
    write_shards(&dir.path().join("in"), docs, 1000).unwrap();

    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    run(&cfg, TaskSplit::default(), None).unwrap();
    let kept: Vec<Document> = documents::shard_files(&cfg.output)
        .unwrap()
        .iter()
        .flat_map(|f| documents::read_shard(f, 1000).unwrap().flat_map(|b| b.unwrap()))
        .collect();
    assert_eq!(codes(&kept), all_codes, "every IPC code survives");
    let dups = read_duplicates(&cfg.duplicates_file().unwrap()).unwrap();
    let got: BTreeSet<(String, String)> = dups.iter().map(|r| (r.removed_id.clone(), r.kept_id.clone())).collect();
    assert!(got.contains(&(format!("{}#again", twin.id), twin.id.clone())), "{got:?}");
    assert!(got.contains(&("wudao:copy".to_string(), copied.id.clone())), "{got:?}");
    // Nothing else goes but entries repeated under their own code (the two fixture files share a
    // few entries, e.g. `A01`).
    for r in &dups {
        assert!(r.removed_id == "wudao:copy" || r.removed_id.trim_end_matches("#again") == r.kept_id, "{r:?}");
        assert_eq!(r.kind, "exact", "{r:?}");
    }

    // The rule switched off: templated siblings are near copies of each other.
    let mut off = cfg.clone();
    off.output = dir.path().join("off");
    off.sources
        .insert("ipc".into(), coretech::dedup::SourcePolicy { identity: Some(coretech::dedup::Identity::None), ..Default::default() });
    run(&off, TaskSplit::default(), None).unwrap();
    let near = read_duplicates(&off.duplicates_file().unwrap()).unwrap().into_iter().filter(|r| r.removed_source == "ipc").count();
    assert!(near > 100, "{near} IPC entries removed without the identity rule");
}

/// Issue 14's demo check on the demo's own inputs and settings (`pipelines/demo.toml`: every CPT
/// source, its IPC scheme, its dedup table): the set of IPC codes in the dedup output equals the
/// set in the docs output — for the IPC reference entries, and over every document's codes.
#[test]
fn demo_build_keeps_every_ipc_code_through_dedup() {
    use coretech::config::PipelineConfig;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = PipelineConfig::load(&root.join("pipelines/demo.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut docs_cfg = demo.docs.clone().unwrap();
    docs_cfg.inputs = docs_cfg.inputs.iter().map(|p| root.join(p).display().to_string()).collect();
    docs_cfg.output = dir.path().join("documents");
    let mut ipc = demo.ipc.clone();
    ipc.scheme = ipc.scheme.iter().map(|p| root.join(p)).collect();
    let scheme = coretech::ipc::IpcScheme::load(&ipc).unwrap();
    coretech::pipeline::docs::run(&docs_cfg, &scheme, TaskSplit::default(), false).unwrap(); // not strict: see above (duplicate-id)
    let mut cfg = demo.dedup.clone().unwrap();
    cfg.input = docs_cfg.output.clone();
    cfg.output = dir.path().join("dedup");
    let report = run(&cfg, TaskSplit::default(), None).unwrap();

    let read = |d: &Path| -> Vec<Document> {
        documents::shard_files(d).unwrap().iter().flat_map(|f| documents::read_shard(f, 1000).unwrap().flat_map(|b| b.unwrap())).collect()
    };
    let (before, after) = (read(&docs_cfg.output), read(&cfg.output));
    // Ids are unique in the corpus dedup hands on: repeats within a file were renamed by docs
    // (`#2`), the same-text copies across files went with the exact step.
    let ids: BTreeSet<&str> = after.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), after.len(), "every id once in the dedup output");
    let codes = |docs: &[Document], ipc_only: bool| -> BTreeSet<String> {
        docs.iter().filter(|d| !ipc_only || d.source == "ipc").flat_map(|d| d.ipc.clone()).collect()
    };
    assert!(codes(&before, true).len() > 2800, "{}", codes(&before, true).len());
    assert_eq!(codes(&after, true), codes(&before, true), "every IPC entry's code survives dedup");
    assert_eq!(codes(&after, false), codes(&before, false), "every IPC code any document carries survives dedup");
    // Dedup still does its work on the demo: the web text has copies, and nothing is lost.
    let removed = read_duplicates(&cfg.duplicates_file().unwrap()).unwrap();
    assert!(!removed.is_empty());
    assert_eq!(before.len(), after.len() + removed.len());
    let dups: u64 = report.sources.values().flat_map(|s| s.duplicates.values()).sum();
    assert_eq!(dups as usize, removed.len());
    // The demo's rejects beside the dedup output hold exactly those documents.
    let rejects = read_rejects(&cfg.rejects_dir().unwrap());
    assert_eq!(
        rejects.iter().map(|r| r.doc.id.as_str()).collect::<Vec<_>>(),
        removed.iter().map(|r| r.removed_id.as_str()).collect::<Vec<_>>()
    );
    assert!(report.notes.contains(&"dedup policy ipc: exact on, near on, identity ipc (built-in)".to_string()), "{:?}", report.notes);
}

/// Templated documents (a shared boilerplate of 164 words and 100 words of their own: pairwise
/// Jaccard ≈ 0.45, so about 14 % of the 28,680 pairs share an LSH band by chance at the
/// default 18 × 6, enough to join most of them through unverified bucket pairs) are not chained into one
/// candidate group: groups are joined only by pairs whose MinHash estimate passes the
/// pre-check, so only the genuine near copies and their originals are grouped, and exactly
/// the copies go.
#[test]
fn chance_band_collisions_do_not_chain_templated_documents() {
    let mut rng = SplitMix64::new(11);
    let word = |rng: &mut SplitMix64| -> String {
        let n = 4 + (rng.next_u64() % 6) as usize;
        (0..n).map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char).collect()
    };
    let boilerplate: Vec<String> = (0..164).map(|_| word(&mut rng)).collect();
    let mut docs = Vec::new();
    for i in 0..240 {
        let own: Vec<String> = (0..100).map(|_| word(&mut rng)).collect();
        let text = format!("{} {}", boilerplate.join(" "), own.join(" "));
        let d = Document { id: format!("t{i:03}"), source: "web".into(), date: "2020-01-01".into(), text, ..Default::default() };
        if i % 24 == 0 {
            docs.push(Document { id: format!("t{i:03}.copy"), text: char_edits(&d.text, 0.002, &mut rng), ..d.clone() });
        }
        docs.push(d);
    }
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), docs, 64).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    run(&cfg, TaskSplit::default(), None).unwrap();
    let removed: BTreeSet<String> = read_duplicates(&cfg.duplicates_file().unwrap()).unwrap().into_iter().map(|r| r.removed_id).collect();
    let copies: BTreeSet<String> = (0..240).step_by(24).map(|i| format!("t{i:03}.copy")).collect();
    // The copy sorts after its original's id, so the original is kept.
    assert_eq!(removed, copies);
    let manifest = coretech::shard::manifest::Manifest::load(&cfg.output).unwrap();
    let grouped = manifest.info["grouped_documents"].as_u64().unwrap();
    // 10 copies + 10 originals; a templated pair passing the pre-check by chance would add two.
    assert!((20..=30).contains(&grouped), "grouped documents: {grouped} (chained groups?)");
}

/// Issue 14 item 2 and issue 16: every removed document is in `OUTPUT.rejects/` (the full
/// document as it was read, the kind, the kept id and the similarity), the rejects' row count
/// equals the manifest's duplicates, and the output folder holds nothing a folder reader would
/// take for a shard (the duplicates table lies beside it).
#[test]
fn every_removed_document_is_in_the_rejects_with_its_kept_id_and_similarity() {
    let docs = corpus_with_exact(30, 7);
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), docs.clone(), 9).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    run(&cfg, TaskSplit::default(), None).unwrap();

    // Only shards and dot-prefixed side files in the output folder; the audits are beside it.
    for e in std::fs::read_dir(&cfg.output).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        assert!(n.starts_with('.') || (n.starts_with("part-") && n.ends_with(".parquet")), "{n} in the output folder");
    }
    assert_eq!(cfg.duplicates_file().unwrap(), dir.path().join("out.duplicates.parquet"));
    assert_eq!(cfg.rejects_dir().unwrap(), dir.path().join("out.rejects"));

    let m = coretech::shard::Manifest::load(&cfg.output).unwrap();
    let duplicates: u64 = m.accounting["sources"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["duplicates"].as_object().into_iter().flat_map(|d| d.values().map(|n| n.as_u64().unwrap())))
        .sum();
    let rows = read_rejects(&cfg.rejects_dir().unwrap());
    let dups = read_duplicates(&cfg.duplicates_file().unwrap()).unwrap();
    assert!(duplicates > 20, "{duplicates}");
    assert_eq!(rows.len() as u64, duplicates, "rejects rows = the manifest's duplicates");
    assert_eq!(m.info["rejects"].as_u64(), Some(duplicates));
    assert_eq!(dups.len() as u64, duplicates);
    assert_eq!(m.rows() + duplicates, docs.len() as u64);
    let rm = coretech::shard::Manifest::load(&cfg.rejects_dir().unwrap()).unwrap();
    assert_eq!((rm.stage.as_str(), rm.shards.iter().map(|s| s.rows).sum::<u64>()), ("dedup", duplicates));
    assert_eq!(rm.accounting, m.accounting);
    assert!(rm.shards.len() > 1, "one part per input shard with removals");

    // Row by row: the removed document exactly as it was read (full text, meta, ipc, date), and
    // the pair the duplicates table names, in the same (input) order.
    let input: HashMap<&str, &Document> = docs.iter().map(|d| (d.id.as_str(), d)).collect();
    let kept = kept_ids(&cfg.output);
    let kinds: BTreeSet<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["exact", "near"]));
    for (r, d) in rows.iter().zip(&dups) {
        assert_eq!(&&r.doc, input.get(r.doc.id.as_str()).unwrap(), "the whole removed document");
        assert_eq!(r.stage, "dedup");
        assert_eq!(
            (r.doc.id.as_str(), r.reason.as_str(), r.kept_id.as_deref()),
            (d.removed_id.as_str(), d.kind.as_str(), Some(d.kept_id.as_str()))
        );
        assert_eq!(r.similarity, Some(d.jaccard));
        assert!(kept.contains(d.kept_id.as_str()), "{} kept in place of {}", d.kept_id, r.doc.id);
        match r.reason.as_str() {
            "exact" => assert_eq!(r.similarity, Some(1.0)),
            _ => assert!((0.8..=1.0).contains(&r.similarity.unwrap()), "{r:?}"),
        }
    }

    // `coretech inspect` reads it by reason, and lists one reason with the kept id.
    let all = coretech::inspect::inspect_with(&cfg.rejects_dir().unwrap(), 0, None).unwrap();
    let exact = rows.iter().filter(|r| r.reason == "exact").count();
    assert!(all.contains(&format!("{duplicates} rows")) && all.contains("near"), "{all}");
    assert!(all.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["exact", &exact.to_string()]), "{all}");
    let near = coretech::inspect::inspect_with(&cfg.rejects_dir().unwrap(), 2, Some("near")).unwrap();
    assert!(near.contains("kept_id: ") && near.contains("similarity: ") && near.contains("stage: dedup"), "{near}");
}

/// The rejects (and everything else the stage writes) are the same bytes for 1 and 4 threads and
/// after a build interrupted in the filter step, whose leftovers (a torn part of a shard it had
/// not recorded, a temp file) the resumed build replaces.
#[test]
fn rejects_are_the_same_bytes_for_any_thread_count_and_after_an_interrupted_build() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), corpus_with_exact(30, 9), 6).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let clear = || {
        std::fs::remove_dir_all(&cfg.output).unwrap();
        std::fs::remove_dir_all(cfg.rejects_dir().unwrap()).unwrap();
        std::fs::remove_file(cfg.duplicates_file().unwrap()).unwrap();
    };
    pool(1).install(|| run(&cfg, TaskSplit::default(), None)).unwrap();
    let one = written(&cfg);
    let all_parts: Vec<String> = one.keys().filter(|k| k.starts_with("rejects/part-")).cloned().collect();
    assert!(all_parts.len() >= 6, "{all_parts:?}");
    clear();
    pool(4).install(|| run(&cfg, TaskSplit::default(), None)).unwrap();
    assert!(written(&cfg) == one, "1 and 4 threads differ");

    // Stopped right after the 5th progress save (the start, the filter's start, 3 shards), as a
    // kill would stop it. One thread: the hook counts the saves of the thread it is set on.
    clear();
    let e = pool(1)
        .install(|| {
            coretech::stage::test_hooks::interrupt_after_saves(5);
            run(&cfg, TaskSplit::default(), None)
        })
        .unwrap_err();
    assert!(e.to_string().contains("interrupted"), "{e}");
    let rej = cfg.rejects_dir().unwrap();
    let before: Vec<String> = parts(&rej).into_keys().collect();
    assert!(!before.is_empty() && before.len() < all_parts.len(), "{before:?}");
    let last = all_parts.last().unwrap().trim_start_matches("rejects/");
    assert!(!before.contains(&last.to_string()));
    std::fs::write(rej.join(last), b"torn part of a shard the killed run had not recorded").unwrap();
    std::fs::write(rej.join(format!("{last}.tmp")), b"temp").unwrap();
    pool(3).install(|| run(&cfg, TaskSplit::default(), None)).unwrap();
    assert!(written(&cfg) == one, "the resumed build differs from the uninterrupted one");
    assert!(!rej.join(format!("{last}.tmp")).exists());
}

/// `dedup.rejects_dir` has `docs.rejects_dir`'s semantics: beside the output by default,
/// elsewhere when set, off with `rejects = false`, refused inside the output, over files no
/// rejects writer made, or over another stage's rejects. A file where the duplicates table goes
/// that is not one is refused before any work and never overwritten.
#[test]
fn rejects_dir_and_duplicates_table_are_beside_the_output_and_never_over_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_shards(&input, corpus_with_exact(8, 1), 8).unwrap();
    let parse = |out: &str, extra: &str| {
        let text = format!("stages = [\"dedup\"]\n[dedup]\ninput = {input:?}\noutput = {:?}\n{extra}\n", dir.path().join(out));
        coretech::config::PipelineConfig::parse(&text, "t.toml").unwrap().dedup.unwrap()
    };
    let elsewhere = dir.path().join("audit");
    let cfg = parse("a", &format!("rejects_dir = {elsewhere:?}"));
    run(&cfg, TaskSplit::default(), None).unwrap();
    let m = coretech::shard::Manifest::load(&cfg.output).unwrap();
    assert_eq!(m.info["rejects_dir"].as_str(), Some(elsewhere.to_str().unwrap()));
    assert!(m.info["rejects"].as_u64().unwrap() > 0 && !dir.path().join("a.rejects").exists());
    assert_eq!(read_rejects(&elsewhere).len() as u64, m.info["rejects"].as_u64().unwrap());

    let off = parse("b", "rejects = false");
    run(&off, TaskSplit::default(), None).unwrap();
    let m = coretech::shard::Manifest::load(&off.output).unwrap();
    assert!(!dir.path().join("b.rejects").exists() && !m.info.contains_key("rejects"));
    assert!(off.duplicates_file().unwrap().exists(), "the duplicates table is written either way");

    let inside = parse("c", &format!("rejects_dir = {:?}", dir.path().join("c/rejects")));
    let e = run(&inside, TaskSplit::default(), None).unwrap_err().to_string();
    assert!(e.contains("overlaps the output") && e.contains("rejects_dir"), "{e}");

    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), b"mine").unwrap();
    let e = run(&parse("d", &format!("rejects_dir = {theirs:?}")), TaskSplit::default(), None).unwrap_err().to_string();
    assert!(e.contains("holds files no rejects writer made") && e.contains("notes.txt"), "{e}");
    assert_eq!(std::fs::read(theirs.join("notes.txt")).unwrap(), b"mine");

    // Another stage's finished rejects (docs and dedup given one `rejects_dir`).
    let docs_rejects = dir.path().join("docs.rejects");
    std::fs::create_dir_all(&docs_rejects).unwrap();
    coretech::shard::Manifest { kind: coretech::stage::REJECTS_KIND.into(), stage: "docs".into(), ..Default::default() }
        .save(&docs_rejects)
        .unwrap();
    let e = run(&parse("e", &format!("rejects_dir = {docs_rejects:?}")), TaskSplit::default(), None).unwrap_err().to_string();
    assert!(e.contains("rejects of the docs stage"), "{e}");
    assert!(coretech::shard::Manifest::load(&docs_rejects).is_ok_and(|m| m.stage == "docs"));

    let f = parse("f", "");
    std::fs::write(f.duplicates_file().unwrap(), b"someone's table").unwrap();
    let e = run(&f, TaskSplit::default(), None).unwrap_err().to_string();
    assert!(e.contains("f.duplicates.parquet") && e.contains("not a duplicates table") && e.contains("never overwritten"), "{e}");
    assert_eq!(std::fs::read(f.duplicates_file().unwrap()).unwrap(), b"someone's table");
    assert!(!f.output.exists(), "refused before anything was created");
}

/// A folder of the old layout (`duplicates.parquet` inside the output, listed in its manifest):
/// readers of the table name the old layout, and the next build moves the table beside the
/// output and leaves only shards and side files in the folder.
#[test]
fn a_dedup_folder_of_the_old_layout_is_rebuilt_with_the_table_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(&dir.path().join("in"), corpus_with_exact(12, 4), 8).unwrap();
    let cfg = DedupConfig::new(dir.path().join("in"), dir.path().join("out"));
    run(&cfg, TaskSplit::default(), None).unwrap();
    let table = std::fs::read(cfg.duplicates_file().unwrap()).unwrap();
    let old = cfg.output.join(coretech::dedup::stage::LEGACY_DUPLICATES_FILE);
    std::fs::rename(cfg.duplicates_file().unwrap(), &old).unwrap();
    let mut m = coretech::shard::Manifest::load(&cfg.output).unwrap();
    m.files.push(coretech::dedup::stage::LEGACY_DUPLICATES_FILE.into());
    m.save(&cfg.output).unwrap();

    let e = coretech::dedup::verify::verify_sample(&cfg, 1, 1).unwrap_err().to_string();
    assert!(e.contains("old layout") && e.contains("duplicates.parquet"), "{e}");
    run(&cfg, TaskSplit::default(), None).unwrap();
    assert!(!old.exists(), "the old table left the output folder");
    assert_eq!(std::fs::read(cfg.duplicates_file().unwrap()).unwrap(), table);
    let mut names: Vec<String> =
        std::fs::read_dir(&cfg.output).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    assert!(names.iter().all(|n| n.starts_with('.') || n.starts_with("part-")), "{names:?}");
    assert!(!coretech::shard::Manifest::load(&cfg.output).unwrap().files.iter().any(|f| f.contains("duplicates")));
}
