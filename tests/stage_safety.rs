//! The stage skeleton on the fixtures: what an output depends on (a same-size byte edit of an
//! input, the IPC scheme, the tokenizer, `--strict`) rebuilds each stage and nothing else does;
//! output folders that are, hold or sit inside an input, or hold someone else's files, are
//! refused with every byte left as it was; a second process on a locked output fails at once;
//! a shard whose bytes changed is refused by the next stage; `docs` with 1 and 3 tasks gives
//! the same documents and the same packed token shards; a `kill -9` resumes to the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use coretech::config::PipelineConfig;
use coretech::core::lock::OutputLock;
use coretech::core::{RunOptions, TaskSplit};
use coretech::dedup::DedupConfig;
use coretech::pack::{PackConfig, PackMode, ShuffleConfig};
use coretech::pipeline;
use coretech::shard::documents::{read_shard, shard_files};
use coretech::shard::{Manifest, WriterConfig};
use coretech::Document;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(rel: &str) -> PathBuf {
    root().join("fixtures/data").join(rel)
}

/// A docs pipeline over `inputs` into `out`, with `extra` TOML appended (e.g. an `[ipc]` table).
fn docs_pipeline(inputs: &[PathBuf], out: &Path, rows_per_shard: usize, extra: &str) -> PipelineConfig {
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let text = format!(
        "stages = [\"docs\"]\n{extra}\n[docs]\ninputs = {inputs:?}\noutput = {:?}\nrows_per_shard = {rows_per_shard}\nbatch_records = 64\n",
        out.display().to_string()
    );
    PipelineConfig::parse(&text, "test.toml").unwrap()
}

fn opts(strict: bool, force: bool) -> RunOptions {
    RunOptions { task: TaskSplit::default(), strict, force }
}

/// When `dir/manifest.json` was last written: a skipped run leaves it as it was.
fn written_at(dir: &Path) -> SystemTime {
    std::fs::metadata(dir.join(".manifest.json")).unwrap().modified().unwrap()
}

/// Runs `f` and says whether it rewrote `dir` (its manifest) or skipped it.
fn rebuilt<T>(dir: &Path, f: impl FnOnce() -> T) -> (bool, T) {
    let before = written_at(dir);
    // Coarse file-system clocks: make a rewrite visible.
    std::thread::sleep(Duration::from_millis(20));
    let r = f();
    (written_at(dir) != before, r)
}

/// Every file under `dir` (recursively) by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The documents of a shard folder, in manifest order.
fn documents(dir: &Path) -> Vec<Document> {
    shard_files(dir).unwrap().iter().flat_map(|f| read_shard(f, 256).unwrap().flat_map(|b| b.unwrap())).collect()
}

/// Replaces the first `from` in `path` by `to` (same length): a same-size edit.
fn edit_same_size(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(path).unwrap();
    let at = b.windows(from.len()).position(|w| w == from).expect("pattern present");
    b[at..at + from.len()].copy_from_slice(to);
    let len = b.len();
    std::fs::write(path, b).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), len as u64);
}

/// Flips one byte in the middle of a file (same size).
fn flip_a_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// Runs the binary; returns (success, stderr).
fn coretech(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_coretech")).args(args).env("RUST_LOG", "info").output().expect("coretech runs");
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn docs_rebuilds_on_a_changed_input_byte_scheme_or_strict_and_skips_an_unchanged_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in/wudao.jsonl");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::copy(data("wudao/coretech_wudao_demo.jsonl"), &input).unwrap();
    let out = tmp.path().join("docs");
    let scheme = format!("[ipc]\nscheme = [{:?}]\n", data("ipc/coretech_ipcDes_demo.jsonl"));
    let with_scheme = docs_pipeline(std::slice::from_ref(&input), &out, 4, &scheme);
    let without = docs_pipeline(std::slice::from_ref(&input), &out, 4, "");
    let run = |cfg: &PipelineConfig, strict: bool| pipeline::run_stage(cfg, &coretech::config::Stage::Docs, &opts(strict, false)).unwrap();

    let first = run(&with_scheme, false);
    assert_eq!(first.total().kept, 10);
    let (again, r) = rebuilt(&out, || run(&with_scheme, false));
    assert!(!again, "an unchanged rerun is skipped");
    assert_eq!(r.accounting(), first.accounting(), "the skipped run reports the finished build");

    // One character of a text, same byte length: the file's size and name are unchanged.
    edit_same_size(&input, "1994年".as_bytes(), "1995年".as_bytes());
    let (again, _) = rebuilt(&out, || run(&with_scheme, false));
    assert!(again, "a same-size edit of an input rebuilds");
    assert!(documents(&out).iter().any(|d| d.text.contains("1995年本科毕业")), "the rebuilt shards hold the edit");
    assert!(!rebuilt(&out, || run(&with_scheme, false)).0);

    // Without the [ipc] scheme, then with --strict: each a rebuild, then skipped again.
    assert!(rebuilt(&out, || run(&without, false)).0, "removing the IPC scheme rebuilds");
    assert!(rebuilt(&out, || run(&without, true)).0, "adding --strict rebuilds");
    assert!(!rebuilt(&out, || run(&without, true)).0);
    let m = Manifest::load(&out).unwrap();
    assert_eq!((m.stage.as_str(), m.kind.as_str(), m.rows()), ("docs", "documents", 10));
    assert!(!out.join(".progress.json").exists() && !out.join(coretech::core::lock::LOCK_FILE).exists());
}

/// Docs over the WuDao JSONL fixture into `tmp/docs` (3 shards of at most 4 documents).
fn small_docs(tmp: &Path) -> (PipelineConfig, PathBuf) {
    let input = tmp.join("in/wudao.jsonl");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::copy(data("wudao/coretech_wudao_demo.jsonl"), &input).unwrap();
    let cfg = docs_pipeline(&[input], &tmp.join("docs"), 4, "");
    pipeline::run_stage(&cfg, &coretech::config::Stage::Docs, &opts(false, false)).unwrap();
    (cfg, tmp.join("docs"))
}

fn pack_config(input: &Path, output: &Path, tokenizer: Option<&Path>) -> PackConfig {
    PackConfig {
        inputs: vec![input.to_path_buf()],
        output: output.to_path_buf(),
        seq_len: 256,
        mode: PackMode::Cpt,
        tokenizer: coretech::tokenize::TokenizerConfig { path: tokenizer.map(Path::to_path_buf), ..Default::default() },
        eos_token: "<|endoftext|>".into(),
        seed: 3,
        mixture: Default::default(),
        rows_per_shard: 8,
        batch_docs: 5,
        open_bins: 8,
        shuffle: ShuffleConfig { enabled: true, chunk_rows: 6 },
        validation: None,
        writer: WriterConfig { row_group_rows: 4, ..Default::default() },
    }
}

#[test]
fn pack_and_dedup_rebuild_on_new_inputs_or_tokenizer_and_refuse_a_changed_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs_cfg, docs) = small_docs(tmp.path());
    let pack = pack_config(&docs, &tmp.path().join("tokens"), None);
    let dedup = DedupConfig::new(docs.clone(), tmp.path().join("dedup"));
    let run_pack = |cfg: &PackConfig| coretech::pack::stage::run(cfg, TaskSplit::default());
    let run_dedup = || coretech::dedup::run(&dedup, TaskSplit::default(), None);
    run_pack(&pack).unwrap();
    run_dedup().unwrap();
    assert!(!rebuilt(&pack.output, || run_pack(&pack).unwrap()).0, "pack: unchanged rerun skipped");
    assert!(!rebuilt(&dedup.output, || run_dedup().unwrap()).0, "dedup: unchanged rerun skipped");

    // The same tokenizer JSON with one more byte of whitespace: another tokenizer file.
    let zst = std::fs::read(root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst")).unwrap();
    let mut json = zstd::decode_all(&zst[..]).unwrap();
    json.push(b'\n');
    let tok = tmp.path().join("tokenizer.json");
    std::fs::write(&tok, json).unwrap();
    let pack2 = pack_config(&docs, &pack.output, Some(&tok));
    let before = tree(&pack.output);
    assert!(rebuilt(&pack.output, || run_pack(&pack2).unwrap()).0, "pack: another tokenizer rebuilds");
    assert!(!rebuilt(&pack.output, || run_pack(&pack2).unwrap()).0);
    // Same ids from the same vocabulary: the token shards are the same bytes.
    let shards = |t: &BTreeMap<String, Vec<u8>>| {
        t.iter().filter(|(k, _)| k.starts_with("part-")).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
    };
    assert_eq!(shards(&tree(&pack.output)), shards(&before));

    // A document shard whose bytes changed after docs wrote it (same size): refused by both
    // readers, naming the shard, before any output changes.
    let shard = docs.join("part-00001.parquet");
    let good = std::fs::read(&shard).unwrap();
    flip_a_byte(&shard);
    let (pack_before, dedup_before) = (tree(&pack.output), tree(&dedup.output));
    for e in [run_pack(&pack2).unwrap_err().to_string(), run_dedup().unwrap_err().to_string()] {
        assert!(e.contains("part-00001.parquet") && e.contains("checksum mismatch") && e.contains("refusing"), "{e}");
    }
    assert_eq!(tree(&pack.output), pack_before);
    assert_eq!(tree(&dedup.output), dedup_before);
    std::fs::write(&shard, good).unwrap();

    // New documents upstream (docs rebuilt after a same-size input edit): both rebuild.
    edit_same_size(&tmp.path().join("in/wudao.jsonl"), "1994年".as_bytes(), "1995年".as_bytes());
    pipeline::run_stage(&docs_cfg, &coretech::config::Stage::Docs, &opts(false, false)).unwrap();
    assert!(rebuilt(&pack.output, || run_pack(&pack2).unwrap()).0, "pack: new input shards rebuild");
    assert!(rebuilt(&dedup.output, || run_dedup().unwrap()).0, "dedup: new input shards rebuild");
    assert!(!rebuilt(&dedup.output, || run_dedup().unwrap()).0);
}

/// An SFT pipeline over two fixture files into `out`.
fn sft_pipeline(inputs: &[PathBuf], out: &Path, tokenizer: &Path) -> PipelineConfig {
    let mut t = format!("stages = [\"sft\"]\n[sft]\noutput = {out:?}\ntokenizer = {tokenizer:?}\n");
    for f in inputs {
        t += &format!("[[sft.inputs]]\npath = {f:?}\n");
    }
    t += "[sft.pack]\nseq_len = 4096\nrows_per_shard = 50\n";
    PipelineConfig::parse(&t, "test.toml").unwrap()
}

#[test]
fn sft_rebuilds_on_a_changed_input_tokenizer_or_strict_and_skips_an_unchanged_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = ["Paper-SFT_QA_IPC.jsonl", "Paper-SFT_QA_Tech.jsonl"]
        .iter()
        .map(|f| {
            let p = tmp.path().join(f);
            std::fs::copy(data("sft").join(f), &p).unwrap();
            p
        })
        .collect();
    let out = tmp.path().join("sft");
    let tok = root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst");
    let cfg = sft_pipeline(&inputs, &out, &tok);
    let run = |cfg: &PipelineConfig, strict: bool| pipeline::run_sft(cfg, strict, coretech::sft::Mode::Build).unwrap();
    let first = run(&cfg, false);
    assert!(first.run.total().kept > 0);
    let files = tree(&out);
    let (again, r) = rebuilt(&out, || run(&cfg, false));
    assert!(!again, "an unchanged rerun is skipped");
    assert_eq!(r.run.accounting(), first.run.accounting());
    assert_eq!(tree(&out), files);

    assert!(rebuilt(&out, || run(&cfg, true)).0, "adding --strict rebuilds");
    // One character of an answer, same byte length.
    let text = std::fs::read_to_string(&inputs[1]).unwrap();
    let ch = text.chars().find(|c| c.len_utf8() == 3 && *c != '的').unwrap();
    edit_same_size(&inputs[1], ch.to_string().as_bytes(), "的".as_bytes());
    assert!(rebuilt(&out, || run(&cfg, true)).0, "a same-size input edit rebuilds");
    // The decompressed tokenizer: the same vocabulary in another file, one byte longer.
    let mut json = zstd::decode_all(&std::fs::read(&tok).unwrap()[..]).unwrap();
    json.push(b'\n');
    let tok2 = tmp.path().join("tokenizer.json");
    std::fs::write(&tok2, json).unwrap();
    let cfg2 = sft_pipeline(&inputs, &out, &tok2);
    assert!(rebuilt(&out, || run(&cfg2, true)).0, "another tokenizer rebuilds");
    assert!(!rebuilt(&out, || run(&cfg2, true)).0);
}

/// Writes `cfg` as TOML next to `dir` and returns its path.
fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn outputs_that_are_hold_or_sit_inside_an_input_are_refused_with_every_byte_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, docs) = small_docs(tmp.path());
    let input_dir = tmp.path().join("in");
    std::fs::copy(data("ipc/coretech_ipcDes_demo.jsonl"), input_dir.join("ipc.jsonl")).unwrap();
    let snapshot = || (tree(&input_dir), tree(&docs));
    let before = snapshot();
    let docs_cfg = |out: &Path| {
        format!("stages = [\"docs\"]\n[docs]\ninputs = [{:?}]\noutput = {:?}\n", input_dir.display().to_string(), out.display().to_string())
    };
    let dedup_cfg = |out: &Path| format!("stages = [\"dedup\"]\n[dedup]\ninput = {docs:?}\noutput = {out:?}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("docs", docs_cfg(&input_dir), "is the input"),
        ("docs", docs_cfg(&input_dir.join("out")), "is inside the input"),
        ("docs", docs_cfg(tmp.path()), "holds the input"),
        ("dedup", dedup_cfg(&docs), "is the input"),
        ("dedup", dedup_cfg(&docs.join("dedup")), "is inside the input"),
        ("dedup", dedup_cfg(tmp.path()), "holds the input"),
    ];
    let conf = tempfile::tempdir().unwrap();
    for (i, (stage, text, why)) in cases.iter().enumerate() {
        let cfg = write_config(conf.path(), &format!("c{i}.toml"), text);
        let (ok, err) = coretech(&[stage, &cfg]);
        assert!(!ok && err.contains(why) && err.contains("never writes where it reads"), "{stage} {why}: {err}");
        assert!(snapshot() == before, "{stage} {why}: an input changed");
        assert!(!input_dir.join("out").exists() && !docs.join("dedup").exists(), "nothing created");
    }
}

#[test]
fn a_folder_holding_other_files_is_refused_and_force_writes_beside_them_without_touching_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, docs) = small_docs(tmp.path());
    let conf = tempfile::tempdir().unwrap();
    for stage in ["docs", "dedup"] {
        let out = tmp.path().join(format!("{stage}-out"));
        std::fs::create_dir_all(&out).unwrap();
        // A user's files, one with the name of a shard the stage does not reach (3 shards).
        std::fs::write(out.join("part-00007.parquet"), b"someone's shard").unwrap();
        std::fs::write(out.join("notes.tmp"), b"someone's notes").unwrap();
        let text = match stage {
            "docs" => format!(
                "stages = [\"docs\"]\n[docs]\ninputs = [{:?}]\noutput = {out:?}\nrows_per_shard = 4\n",
                tmp.path().join("in/wudao.jsonl").display().to_string()
            ),
            _ => format!("stages = [\"dedup\"]\n[dedup]\ninput = {docs:?}\noutput = {out:?}\n"),
        };
        let cfg = write_config(conf.path(), &format!("{stage}.toml"), &text);
        let foreign = tree(&out);
        let (ok, err) = coretech(&[stage, &cfg]);
        assert!(!ok && err.contains("holds files this stage did not write") && err.contains("--force"), "{stage}: {err}");
        assert_eq!(tree(&out), foreign, "{stage}: refused, nothing touched");

        // --force: the build goes in beside them; theirs stay byte for byte, and a second
        // (up to date) and a third (changed) run leave them too.
        let (ok, err) = coretech(&[stage, &cfg, "--force"]);
        assert!(ok, "{stage}: {err}");
        let after = tree(&out);
        for (k, v) in &foreign {
            assert_eq!(after.get(k), Some(v), "{stage}: {k} changed");
        }
        assert!(after.contains_key(".manifest.json") && after.contains_key("part-00000.parquet"));
        let (ok, err) = coretech(&[stage, &cfg]);
        assert!(ok && err.contains("up to date"), "{stage}: the folder is the stage's now: {err}");
        let (ok, err) = coretech(&[stage, &cfg, "--strict"]);
        assert!(ok, "{stage}: {err}");
        let after = tree(&out);
        for (k, v) in &foreign {
            assert_eq!(after.get(k), Some(v), "{stage}: {k} changed on a rebuild");
        }
    }
    // A user's file under a name the stage would write: never overwritten, even with --force.
    let out = tmp.path().join("taken");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("part-00000.parquet"), b"someone's shard").unwrap();
    let text = format!(
        "stages = [\"docs\"]\n[docs]\ninputs = [{:?}]\noutput = {out:?}\n",
        tmp.path().join("in/wudao.jsonl").display().to_string()
    );
    let cfg = write_config(conf.path(), "taken.toml", &text);
    let (ok, err) = coretech(&["docs", &cfg, "--force"]);
    assert!(!ok && err.contains("part-00000.parquet") && err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(out.join("part-00000.parquet")).unwrap(), b"someone's shard");
}

#[test]
fn a_second_process_on_a_locked_output_fails_at_once_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, docs) = small_docs(tmp.path());
    let conf = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dedup");
    let cfg = write_config(conf.path(), "d.toml", &format!("stages = [\"dedup\"]\n[dedup]\ninput = {docs:?}\noutput = {out:?}\n"));
    for (stage, dir, cfg) in [("docs", docs.clone(), None), ("dedup", out.clone(), Some(cfg))] {
        std::fs::create_dir_all(&dir).unwrap();
        let before = tree(&dir);
        // This test process holds the folder's lock, as a running build would.
        let lock = OutputLock::acquire(&dir).unwrap();
        let cfg = cfg.unwrap_or_else(|| {
            write_config(
                conf.path(),
                "docs.toml",
                &format!(
                    "stages = [\"docs\"]\n[docs]\ninputs = [{:?}]\noutput = {dir:?}\nrows_per_shard = 4\n",
                    tmp.path().join("in/wudao.jsonl").display().to_string()
                ),
            )
        });
        let mut child = Command::new(env!("CARGO_BIN_EXE_coretech"))
            .args([stage, cfg.as_str(), "--strict"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // It must give up by itself while the lock is still held (no waiting for it).
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{stage}: the second process waits for the lock");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success() && err.contains(&format!("output locked by pid {}", std::process::id())), "{stage}: {err}");
        drop(lock);
        let mut after = tree(&dir);
        after.remove(coretech::core::lock::LOCK_FILE);
        assert_eq!(after, before, "{stage}: the locked folder is unchanged");
    }
}

/// Docs over four JSON-family fixture files (3,354 records) with `count` tasks, merged.
fn inputs_of_docs_in_tasks() -> Vec<PathBuf> {
    [
        "wudao/wudaosailing_corpus_test.json",
        "wudao/coretech_wudao_demo.jsonl",
        "ipc/coretech_ipcDes_demo.jsonl",
        "ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl",
    ]
    .iter()
    .map(|f| data(f))
    .collect()
}

fn docs_in_tasks(tmp: &Path, count: usize) -> PathBuf {
    let inputs = inputs_of_docs_in_tasks();
    let out = tmp.join(format!("docs-{count}"));
    let cfg = docs_pipeline(&inputs, &out, 300, "");
    for i in 0..count {
        // Not strict: the expand file gives 6 IPC codes twice with other text (counted id
        // collisions; a strict build fails on them, whatever the task count: see below).
        let o = RunOptions { task: TaskSplit::new(i, count).unwrap(), strict: false, force: false };
        pipeline::run_stage(&cfg, &coretech::config::Stage::Docs, &o).unwrap();
    }
    if count > 1 {
        pipeline::merge::merge(&out).unwrap();
    }
    out
}

#[test]
fn one_and_three_docs_tasks_give_the_same_documents_and_the_same_token_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let one = docs_in_tasks(tmp.path(), 1);
    let three = docs_in_tasks(tmp.path(), 3);
    let (a, b) = (documents(&one), documents(&three));
    assert_eq!(a.len(), 3353);
    assert!(a == b, "the merged 3-task output holds the 1-task documents in the same order");
    let (ma, mb) = (Manifest::load(&one).unwrap(), Manifest::load(&three).unwrap());
    assert_eq!(ma.accounting["sources"], mb.accounting["sources"]);
    assert!(mb.shards.len() > ma.shards.len(), "the tasks cut their own shards");
    // The ids are checked across the tasks at the merge (the same counts as one task), and the
    // merged rejects folder lists every task's parts.
    assert_eq!(ma.accounting["sources"]["ipc"]["id_collisions"]["same-text"], 4);
    let rejects = |out: &Path| Manifest::load(&out.with_extension("rejects")).unwrap().shards.iter().map(|s| s.rows).sum::<u64>();
    assert_eq!((rejects(&one), rejects(&three)), (1, 1));
    assert_eq!(mb.info["rejects"], 1);
    assert_eq!(ma.accounting["sources"]["ipc"]["id_collisions"]["renamed"], 6);
    for m in [&ma, &mb] {
        let errors: u64 = m.accounting["sources"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|s| s["errors"].as_object().unwrap().values())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(errors, 0, "every record reads");
    }

    // Strict, the collisions fail the build whatever the task count, naming both places: the
    // expand file repeats ids within itself, so the task reading it fails as it reads (an id
    // given twice across files would fail one task at its end, three at the merge).
    for count in [1, 3] {
        let out = tmp.path().join(format!("strict-{count}"));
        let cfg = docs_pipeline(&inputs_of_docs_in_tasks(), &out, 300, "");
        let mut failed = None;
        for i in 0..count {
            let o = RunOptions { task: TaskSplit::new(i, count).unwrap(), strict: true, force: false };
            if let Err(e) = pipeline::run_stage(&cfg, &coretech::config::Stage::Docs, &o) {
                failed = Some(e.to_string());
            }
        }
        let err = failed.expect("a strict build fails on an id given twice with other text");
        assert!(err.contains("duplicate-id") && err.contains("ipc:G06Q 10/00") && err.matches(" record ").count() == 2, "{count}: {err}");
    }

    // Packed: byte-identical token shards (documents batched across shard boundaries).
    let mut pa = pack_config(&one, &tmp.path().join("tokens-1"), None);
    pa.seq_len = 512;
    pa.batch_docs = 37;
    pa.shuffle.chunk_rows = 50;
    pa.rows_per_shard = 100;
    let pb = PackConfig { inputs: vec![three.clone()], output: tmp.path().join("tokens-3"), ..pa.clone() };
    coretech::pack::stage::run(&pa, TaskSplit::default()).unwrap();
    coretech::pack::stage::run(&pb, TaskSplit::default()).unwrap();
    let shards = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        Manifest::load(dir).unwrap().shards.iter().map(|s| (s.file.clone(), std::fs::read(dir.join(&s.file)).unwrap())).collect()
    };
    let (sa, sb) = (shards(&pa.output), shards(&pb.output));
    assert!(sa.len() > 1);
    assert!(sa == sb, "token shards differ between 1 and 3 docs tasks");
}

#[test]
fn a_docs_build_killed_with_sigkill_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [data("wudao/wudaosailing_corpus_test.json"), data("ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl")];
    let cfg_at = |out: &Path| {
        let c = write_config(
            tmp.path(),
            &format!("{}.toml", out.file_name().unwrap().to_string_lossy()),
            &format!(
                "stages = [\"docs\"]\n[docs]\ninputs = {:?}\noutput = {:?}\nrows_per_shard = 40\nbatch_records = 16\n",
                inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                out.display().to_string()
            ),
        );
        c
    };
    // The reference, built without interruption into the same path (the path is part of
    // the fingerprint), then moved away.
    let out = tmp.path().join("docs");
    let cfg = cfg_at(&out);
    let (ok, err) = coretech(&["docs", &cfg]);
    assert!(ok, "{err}");
    let mut reference = tree(&out);
    reference.remove(".report.json");
    std::fs::rename(&out, tmp.path().join("reference")).unwrap();

    // Killed (SIGKILL) once its progress lists two finished shards.
    let mut child = Command::new(env!("CARGO_BIN_EXE_coretech"))
        .args(["docs", &cfg])
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let progress = out.join(".progress.json");
    let killed_at = loop {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the build finished ({s}) before it could be killed");
        }
        let shards = std::fs::read(&progress)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["state"]["shards"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        if shards >= 2 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break shards;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(killed_at >= 2 && !out.join(".manifest.json").exists(), "killed mid-build");
    let (ok, err) = coretech(&["docs", &cfg]);
    assert!(ok && err.contains("resuming after"), "{err}");
    let mut resumed = tree(&out);
    resumed.remove(".report.json");
    assert_eq!(resumed.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    for (k, v) in &reference {
        assert!(resumed[k] == *v, "{k} differs after a kill -9 and resume");
    }
}
