//! The corpus the docs stage builds by default: per-source clean policies keep office patents
//! that web heuristics drop, ids are unique across input files (a remaining collision is
//! counted and named), and every dropped document is in the rejects folder beside the output
//! with its reason (rows = filtered of the manifest).

use std::path::{Path, PathBuf};

use coretech::clean::policy::Policies;
use coretech::clean::CleanConfig;
use coretech::config::{DocsConfig, PipelineConfig};
use coretech::core::{RunReport, TaskSplit};
use coretech::ipc::IpcScheme;
use coretech::pipeline::docs;
use coretech::shard::documents::{read_shard, shard_files};
use coretech::shard::Manifest;
use coretech::Document;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel)
}

fn config(inputs: &[PathBuf], out: &Path, extra: &str) -> DocsConfig {
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let toml = format!("stages = [\"docs\"]\n[docs]\ninputs = {inputs:?}\noutput = {:?}\n{extra}\n", out.display().to_string());
    PipelineConfig::parse(&toml, "test.toml").expect("test config is valid").docs.expect("docs section")
}

fn run(cfg: &DocsConfig) -> (RunReport, Vec<Document>) {
    let r = docs::run(cfg, &IpcScheme::default(), TaskSplit::default(), false).expect("docs stage");
    let mut out = Vec::new();
    for f in shard_files(&cfg.output).unwrap() {
        for b in read_shard(&f, 1024).unwrap() {
            out.extend(b.unwrap());
        }
    }
    (r, out)
}

/// Every row of the rejects folder of output `dir` (`DIR.rejects`), as (stage, reason, id).
fn rejects(dir: &Path) -> Vec<(String, String, String)> {
    use arrow::array::AsArray;
    let rej = dir.with_extension("rejects");
    let m = Manifest::load(&rej).expect("rejects manifest.json");
    let mut rows = Vec::new();
    for s in &m.shards {
        let f = std::fs::File::open(rej.join(&s.file)).unwrap();
        let rd = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        for b in rd {
            let b = b.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (st, re, id) = (col("stage"), col("reason"), col("id"));
            for i in 0..b.num_rows() {
                rows.push((st.value(i).to_string(), re.value(i).to_string(), id.value(i).to_string()));
            }
        }
    }
    rows
}

#[test]
fn office_patents_are_kept_under_the_default_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&[data("uspto"), data("epo")], &tmp.path().join("docs"), "");
    let (r, docs) = run(&cfg);
    assert_eq!(r.policies.get("uspto").map(String::as_str), Some("patent"));
    assert_eq!(r.policies.get("epo").map(String::as_str), Some("patent"));
    // The design patent of the weekly grant file is there.
    assert!(docs.iter().any(|d| d.id == "uspto:USD680087S1"), "{:?}", docs.iter().map(|d| &d.id).collect::<Vec<_>>());
    // Only the readers' own skips are filtered: no text filter drops an office patent.
    for (src, s) in &r.sources {
        for reason in s.filtered.keys() {
            assert!(reason == "biblio-only" || reason.starts_with("not-a-patent"), "{src}: {reason}");
        }
    }
    // And each such skip is in rejects/ with its reason and its place.
    let rows = rejects(&cfg.output);
    let filtered: u64 = r.sources.values().map(|s| s.filtered.values().sum::<u64>()).sum();
    assert_eq!(rows.len() as u64, filtered);
    assert!(rows.iter().any(|(st, re, id)| st == "docs" && re == "biblio-only" && id.starts_with("epo:EP4090146")), "{rows:?}");
}

/// A chemistry-style claim set (formula symbols, ranges, substituent lists): fewer than 80 %
/// of its words hold a letter, so Gopher's `min_alpha_ratio = 0.8` drops it; the patent policy
/// keeps it.
#[test]
fn a_chemistry_patent_below_alpha_ratio_0_8_is_kept_by_the_patent_policy() {
    let text = "Title: Substituted pyrazolo[1,5-a]pyrimidines\n\nAbstract: Compounds of formula (I) are provided.\n\n\
                Claims: 1. A compound of formula (I), wherein R1 is H, C1-C6 alkyl, —CF3, —OCH3 or —N(CH3)2; \
                R2 is —(CH2)n—COOH with n = 1, 2, 3 or 4; R3 is 2-F, 3-Cl, 4-Br, 2,4-F2 or 3,5-(CF3)2; \
                X is —O—, —S—, —NH— or —CH2—; and m is 0, 1 or 2. 2. The compound of claim 1, wherein \
                R1 is C1-C3 alkyl, R2 is —CH2COOH and R3 is 4-F; IC50 ≤ 10 nM; pKa 4.2–4.8; 0.5–2.0 mg/kg; \
                1H NMR (400 MHz, DMSO-d6) δ 8.21 (s, 1H), 7.45 (d, J = 8.4 Hz, 2H), 7.12 (d, J = 8.4 Hz, 2H), \
                4.05 (q, J = 7.1 Hz, 2H), 2.31 (s, 3H), 1.24 (t, J = 7.1 Hz, 3H).";
    let words: Vec<&str> = text.split_whitespace().collect();
    let alpha = words.iter().filter(|w| w.chars().any(char::is_alphabetic)).count() as f64 / words.len() as f64;
    assert!(alpha < 0.8, "alpha ratio {alpha}");
    let (given, by_name) = (Default::default(), Default::default());
    let p = Policies::new(&CleanConfig::default(), &given, &by_name, &by_name, &[]).unwrap();
    let doc = |source: &str| Document {
        id: "uspto:US1".into(),
        source: source.into(),
        lang: "en".into(),
        text: text.into(),
        ..Default::default()
    };
    let patent = p.select(None, "uspto");
    assert_eq!(p.name(patent), "patent");
    assert_eq!(p.cleaner(patent).apply(&mut doc("uspto")), Ok(()));
    let web = p.select(None, "text");
    assert_eq!(p.name(web), "web");
    assert_eq!(p.cleaner(web).apply(&mut doc("text")), Err("alpha_ratio".to_string()));
}

#[test]
fn two_wudao_files_with_equal_positions_get_unique_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    for d in ["a", "b"] {
        std::fs::create_dir_all(input.join(d)).unwrap();
        std::fs::copy(data("wudao/coretech_wudao_demo.jsonl"), input.join(d).join("x.jsonl")).unwrap();
    }
    let cfg = config(std::slice::from_ref(&input), &tmp.path().join("docs"), "");
    let (r, docs) = run(&cfg);
    assert_eq!(docs.len(), 20, "{:?}", r.sources);
    let ids: std::collections::BTreeSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 20);
    assert!(ids.contains("wudao:a/x.jsonl:505950") && ids.contains("wudao:b/x.jsonl:505950"), "{ids:?}");
    // Provenance names the file and the record.
    let d = docs.iter().find(|d| d.id == "wudao:b/x.jsonl:505950").unwrap();
    assert!(d.meta["provenance"]["input"].as_str().unwrap().ends_with("b/x.jsonl"), "{:?}", d.meta);
    assert_eq!(d.meta["provenance"]["record"], 0);
}

#[test]
fn an_id_given_twice_is_a_counted_collision_naming_both_places() {
    let tmp = tempfile::tempdir().unwrap();
    // The demo IPC file repeats entries of the big one (same code and same text 4 times: left to
    // dedup's exact step), and the big one re-keys some entries onto codes it also lists (same
    // code and other text 6 times, two editions of one entry: the later one is renamed `ID#2`).
    let cfg = config(
        &[data("ipc/coretech_ipcDes_demo.jsonl"), data("ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl")],
        &tmp.path().join("docs"),
        "",
    );
    let (r, docs) = run(&cfg);
    let ipc = &r.sources["ipc"];
    assert_eq!(r.policies["ipc"], "reference");
    assert!(ipc.filtered.is_empty(), "no quality filter for IPC entries: {:?}", ipc.filtered);
    assert_eq!(ipc.id_collisions.get("same-text"), Some(&4), "{ipc:?}");
    assert_eq!(ipc.id_collisions.get("renamed"), Some(&6), "{ipc:?}");
    assert_eq!(ipc.id_collisions.get("other-text"), None, "{ipc:?}");
    // Nothing is lost: every record is kept and accounted for; the collisions are within `kept`.
    assert_eq!((ipc.read, ipc.kept, ipc.accounted()), (2866, 2866, 2866));
    let ids: std::collections::BTreeSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(docs.len() - ids.len(), 4, "only the same-text copies share an id");
    // Both editions of G06Q 10/00 are kept: the later one under `#2`, with the id it was given.
    let g: Vec<&coretech::doc::Document> = docs.iter().filter(|d| d.ipc == ["G06Q 10/00"]).collect();
    assert_eq!(g.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["ipc:G06Q 10/00", "ipc:G06Q 10/00#2"]);
    assert_eq!(g[1].meta["id_given"], "ipc:G06Q 10/00");
    assert_ne!(g[0].text, g[1].text);
    // Two different texts under one code: named with both places.
    let named: Vec<_> = r.error_samples.iter().filter(|e| e.kind == "duplicate-id").collect();
    assert_eq!(named.len(), 6);
    for e in named {
        assert!(e.message.contains("is already used by") && e.message.matches(" record ").count() == 2, "{e}");
        assert!(e.position.offset.is_some(), "{e}");
    }
    assert!(r.table().contains("id-collision:renamed=6"), "{}", r.table());
    assert!(rejects(&cfg.output).is_empty());
}

/// An id given in two files with other text is not renamed (each file's ids are its own): the
/// whole-build check counts it as `other-text`, naming both files; within one file the later
/// record is renamed.
#[test]
fn an_id_repeated_across_files_is_counted_and_within_a_file_renamed() {
    let tmp = tempfile::tempdir().unwrap();
    let line = |code: &str, des: &str| format!("{{\"ipc\":\"{code}\",\"des\":\"{des}\",\"ori_des\":\"x\"}}\n");
    let (a, b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    std::fs::write(&a, line("A01B", "第一种说明。") + &line("A01B", "第二种说明。") + &line("A01B", "第一种说明。")).unwrap();
    std::fs::write(&b, line("A01B", "另一个文件的说明。")).unwrap();
    let (r, docs) = run(&config(&[a, b], &tmp.path().join("docs"), ""));
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    // The third record repeats the first one's text: it keeps that id (dedup's exact step).
    assert_eq!(ids, ["ipc:A01B", "ipc:A01B#2", "ipc:A01B", "ipc:A01B"]);
    let ipc = &r.sources["ipc"];
    let want: std::collections::BTreeMap<String, u64> =
        [("renamed", 1), ("same-text", 1), ("other-text", 1)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(ipc.id_collisions, want);
    let across: Vec<String> = r.error_samples.iter().filter(|e| e.message.contains("b.jsonl")).map(|e| e.message.clone()).collect();
    assert_eq!(across.len(), 1, "{:?}", r.error_samples);
    assert!(across[0].contains("a.jsonl record 0") && across[0].contains("b.jsonl record 0"), "{}", across[0]);
}

#[test]
fn the_rejects_folder_is_beside_the_output_and_configurable() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [data("wudao/wudaosailing_corpus_test.json")];
    // Default: `OUTPUT.rejects`, nothing of it inside the output.
    let cfg = config(&inputs, &tmp.path().join("docs"), "");
    let (r, _) = run(&cfg);
    assert_eq!(r.sources["wudao"].filtered.values().sum::<u64>(), 1);
    assert_eq!(rejects(&cfg.output).len(), 1);
    let m = Manifest::load(&cfg.output).unwrap();
    assert_eq!(m.info["rejects"], 1);
    assert!(m.shards.iter().all(|s| !s.file.contains('/')), "{m:?}");
    assert!(std::fs::read_dir(&cfg.output).unwrap().all(|e| !e.unwrap().path().is_dir()), "no folder inside the output");
    // An unchanged rerun is up to date; one whose rejects folder went missing rebuilds it.
    std::fs::remove_dir_all(tmp.path().join("docs.rejects")).unwrap();
    run(&cfg);
    assert_eq!(rejects(&cfg.output).len(), 1);

    // `rejects_dir` puts it elsewhere.
    let elsewhere = tmp.path().join("audit/dropped");
    let cfg = config(&inputs, &tmp.path().join("docs2"), &format!("rejects_dir = {:?}", elsewhere.display().to_string()));
    run(&cfg);
    assert_eq!(Manifest::load(&elsewhere).unwrap().shards.iter().map(|s| s.rows).sum::<u64>(), 1);
    assert!(!tmp.path().join("docs2.rejects").exists());

    // Off: no folder at all.
    let cfg = config(&inputs, &tmp.path().join("docs3"), "rejects = false");
    run(&cfg);
    assert!(!tmp.path().join("docs3.rejects").exists());
}

#[test]
fn a_rejects_folder_inside_the_output_or_holding_other_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [data("wudao/coretech_wudao_demo.jsonl")];
    let out = tmp.path().join("docs");
    let inside = config(&inputs, &out, &format!("rejects_dir = {:?}", out.join("rejects").display().to_string()));
    let err = docs::run(&inside, &IpcScheme::default(), TaskSplit::default(), false).unwrap_err().to_string();
    assert!(err.contains("overlaps the output") && err.contains("rejects_dir"), "{err}");

    let theirs = tmp.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let cfg = config(&inputs, &tmp.path().join("docs2"), &format!("rejects_dir = {:?}", theirs.display().to_string()));
    let err = docs::run(&cfg, &IpcScheme::default(), TaskSplit::default(), false).unwrap_err().to_string();
    assert!(err.contains("holds files no rejects writer made") && err.contains("notes.txt"), "{err}");
    assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "mine", "never touched");
}

#[test]
fn inspect_shows_the_rejects_by_reason_and_lists_one_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // One WuDao record fails the web policy (`repeated_10_grams`), one EPO record is `biblio-only`.
    let cfg = config(&[data("wudao/wudaosailing_corpus_test.json"), data("epo")], &tmp.path().join("docs"), "");
    run(&cfg);
    let rej = tmp.path().join("docs.rejects");
    let all = coretech::inspect::inspect(&rej, 5).unwrap();
    assert!(all.contains("rejects: 1 shards, 2 rows"), "{all}");
    for line in ["biblio-only", "repeated_10_grams", "epo          biblio-only", "wudao        repeated_10_grams"] {
        assert!(all.lines().any(|l| l.trim_start().starts_with(line.trim_start()) && l.trim_end().ends_with(" 1")), "{line}: {all}");
    }
    // One reason: only its rows, with where the document came from.
    let one = coretech::inspect::inspect_with(&rej, 5, Some("biblio-only")).unwrap();
    assert!(one.contains("first 1 of 1 rows with reason \"biblio-only\""), "{one}");
    assert!(one.contains("id: epo:EP4090146") && one.contains("provenance") && !one.contains("id: wudao:"), "{one}");

    // A reason no row has: the error names the reasons there are.
    let err = coretech::inspect::inspect_with(&rej, 5, Some("min_lenght")).unwrap_err().to_string();
    assert!(err.contains("no rejected document has reason \"min_lenght\"") && err.contains("biblio-only, repeated_10_grams"), "{err}");
    // A reason asked of document shards: not a rejects folder.
    let err = coretech::inspect::inspect_with(&cfg.output, 5, Some("biblio-only")).unwrap_err().to_string();
    assert!(err.contains("needs a rejects folder"), "{err}");

    // The command line passes `--reason` through.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_coretech"))
        .args(["inspect", "--rows", "1", "--reason", "repeated_10_grams"])
        .arg(&rej)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && stdout.contains("reason: repeated_10_grams") && !stdout.contains("reason: biblio-only"), "{stdout}");
}
