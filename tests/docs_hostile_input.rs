//! Hostile input through the whole docs stage: nesting deep enough to overflow a stack,
//! symlink cycles and named pipes in an input folder, small damaged gzip files, UTF-16 text and
//! bidi overrides. Each case checks that the run finishes (no abort, no hang), counts the problem
//! with its file and position, keeps everything else, and that the accounting adds up.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use coretech::config::{DocsConfig, PipelineConfig};
use coretech::core::{RunReport, TaskSplit};
use coretech::ipc::IpcScheme;
use coretech::pipeline::docs;
use coretech::shard::documents::{read_shard, shard_files};
use coretech::Document;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel)
}

fn config(inputs: &[PathBuf], out: &Path) -> DocsConfig {
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let toml = format!(
        // Reading is under test: the quality filters are off so that every record read is kept.
        "stages = [\"docs\"]\n[docs]\ninputs = {inputs:?}\noutput = {:?}\nrows_per_shard = 1000\n\
         [docs.clean.length]\nmin_chars = 1\n[docs.clean.quality]\nenabled = false\n[docs.clean.repetition]\nenabled = false\n",
        out.display().to_string()
    );
    PipelineConfig::parse(&toml, "test.toml").expect("test config is valid").docs.expect("docs section")
}

/// Runs the docs stage on a worker thread, failing (instead of hanging) after a generous bound.
fn run(inputs: &[PathBuf]) -> (RunReport, Vec<Document>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(inputs, &dir.path().join("docs"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(docs::run(&cfg, &IpcScheme::default(), TaskSplit::default(), false).map_err(|e| e.to_string()));
    });
    let report = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the docs stage hangs").expect("the docs stage fails");
    for (name, s) in &report.sources {
        assert_eq!(s.read, s.accounted(), "source {name}: accounting does not add up: {s:?}");
    }
    let mut docs = Vec::new();
    for f in shard_files(&dir.path().join("docs")).unwrap() {
        for b in read_shard(&f, 1024).unwrap() {
            docs.extend(b.unwrap());
        }
    }
    (report, docs, dir)
}

/// (read, kept, errors by kind) of a source.
fn counts(r: &RunReport, source: &str) -> (u64, u64, Vec<(String, u64)>) {
    let s = &r.sources[source];
    (s.read, s.kept, s.errors.iter().map(|(k, v)| (k.clone(), *v)).collect())
}

fn errs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn line_of(bytes: &[u8], needle: &str) -> u64 {
    let at = memchr::memmem::find(bytes, needle.as_bytes()).expect("needle");
    1 + bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64
}

/// Inserts `what` right after the first `>` that follows `anchor`.
fn insert_after(doc: &str, anchor: &str, what: &str) -> String {
    let at = doc.find(anchor).expect("anchor");
    let gt = at + doc[at..].find('>').unwrap() + 1;
    format!("{}{what}{}", &doc[..gt], &doc[gt..])
}

fn nest(open: &str, close: &str, n: usize) -> String {
    format!("{}deep{}", open.repeat(n), close.repeat(n))
}

const DEEP: usize = 100_000;

#[test]
fn deeply_nested_xml_is_one_counted_error_per_document_and_the_rest_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    // A USPTO bulk file: a grant whose abstract nests 100,000 inline elements, then two good
    // applications.
    let grant = std::fs::read_to_string(data("uspto/US08930553-grant-v45.xml")).unwrap();
    let deep_grant = insert_after(&grant, "<abstract", &nest("<b>", "</b>", DEEP));
    let apps = std::fs::read_to_string(data("uspto/ipa130117.two-applications.xml")).unwrap();
    let bulk = tmp.path().join("uspto-bulk.xml");
    std::fs::write(&bulk, format!("{}\n{apps}", deep_grant.trim_end())).unwrap();
    // EPO: a deep abstract, deep claims (nested claim-text), and a good publication.
    let ep = std::fs::read_to_string(data("epo/EP3782854A1-v1-5.xml")).unwrap();
    let ep_abstract = tmp.path().join("ep-deep-abstract.xml");
    std::fs::write(&ep_abstract, insert_after(&ep, "<abstract", &nest("<i>", "</i>", DEEP))).unwrap();
    let ep_claims = tmp.path().join("ep-deep-claims.xml");
    std::fs::write(&ep_claims, insert_after(&ep, "<claim-text", &nest("<claim-text>", "</claim-text>", DEEP))).unwrap();
    let inputs = [bulk.clone(), ep_abstract.clone(), ep_claims.clone(), data("epo/EP1873405A2-v1-2.xml")];
    let (r, docs, _dir) = run(&inputs);

    assert_eq!(counts(&r, "uspto"), (3, 2, errs(&[("xml-too-deep", 1)])));
    assert_eq!(counts(&r, "epo"), (3, 1, errs(&[("xml-too-deep", 2)])));
    // Output order follows the input paths, and the fixture path may sort before or after the
    // temp dir depending on where the checkout lives: compare as a set.
    let mut ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["epo:EP1873405A2", "uspto:US20130014306A1", "uspto:US20130014308A1"], "{ids:?}");
    for (file, anchor) in [(&bulk, "<abstract"), (&ep_abstract, "<abstract"), (&ep_claims, "<claim-text")] {
        let bytes = std::fs::read(file).unwrap();
        let e = r.error_samples.iter().find(|e| e.position.file == file.display().to_string()).expect("the error names its file");
        assert_eq!(e.kind, "xml-too-deep");
        assert_eq!(e.position.line, Some(line_of(&bytes, anchor)), "{e}");
        assert!(e.to_string().contains("deeper than 256 levels"), "{e}");
    }
}

#[cfg(unix)]
#[test]
fn self_links_and_a_fifo_in_the_input_folder_read_the_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("in");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(data("wudao/coretech_wudao_demo.jsonl"), d.join("wudao.jsonl")).unwrap();
    std::os::unix::fs::symlink(".", d.join("a")).unwrap();
    std::os::unix::fs::symlink(".", d.join("b")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(d.join("pipe")).status().unwrap().success());
    let (r, docs, _dir) = run(std::slice::from_ref(&d));
    assert_eq!(counts(&r, "wudao"), (10, 10, vec![]));
    assert_eq!(r.sources["wudao"].files, 1);
    assert_eq!(docs.len(), 10);
    assert_eq!(counts(&r, "unknown"), (1, 0, errs(&[("not-a-file", 1)])));
    let e = &r.error_samples[0];
    assert!(e.position.file.ends_with("in/pipe") && e.message.contains("FIFO"), "{e}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// JSONL of WuDao records whose gzip is at least 38 KB.
fn wudao_jsonl() -> (Vec<u8>, usize) {
    let arr: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(data("wudao/wudaosailing_corpus_test.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for (n, rec) in arr.iter().enumerate() {
        out.extend(serde_json::to_vec(rec).unwrap());
        out.push(b'\n');
        if n % 8 == 7 && gzip(&out).len() >= 38_000 {
            return (out, n + 1);
        }
    }
    panic!("the fixture is too small");
}

#[test]
fn small_damaged_gzip_keeps_every_complete_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (jsonl, records) = wudao_jsonl();
    let gz = gzip(&jsonl);
    assert!((38_000..45_000).contains(&gz.len()), "{}", gz.len());
    // Cut in the middle: what decompresses before the cut is less than the 64 KiB sniff read.
    let cut = &gz[..gz.len() / 2];
    let mut before = Vec::new();
    let _ = flate2::read::GzDecoder::new(cut).read_to_end(&mut before);
    assert!(before.len() < 64 << 10, "{}", before.len());
    let complete = before.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(complete >= 5, "{complete}");
    let cut_path = tmp.path().join("cut.jsonl.gz");
    std::fs::write(&cut_path, cut).unwrap();
    let (r, docs, _dir) = run(std::slice::from_ref(&cut_path));
    assert_eq!(counts(&r, "wudao"), (complete + 1, complete, errs(&[("truncated", 1)])));
    assert_eq!(docs.len() as u64, complete);
    let e = &r.error_samples[0];
    let last_line = before.iter().rposition(|&b| b == b'\n').unwrap() as u64 + 1;
    assert_eq!((e.position.offset, e.position.line), (Some(last_line), Some(complete + 1)), "{e}");
    assert!(e.to_string().contains("cut.jsonl.gz"), "{e}");

    // Trailing garbage after a whole file: every record, then one error.
    let garbage = tmp.path().join("garbage.jsonl.gz");
    let mut bytes = gz.clone();
    bytes.extend(b"not gzip at all");
    std::fs::write(&garbage, bytes).unwrap();
    let (r, _, _dir) = run(std::slice::from_ref(&garbage));
    assert_eq!(counts(&r, "wudao"), (records as u64 + 1, records as u64, errs(&[("truncated", 1)])));
    assert!(r.error_samples[0].with_causes().contains("trailing garbage"), "{}", r.error_samples[0].with_causes());

    // Zero padding after the member is accepted, as `gzip -d` does.
    let padded = tmp.path().join("padded.jsonl.gz");
    let mut bytes = gz;
    bytes.extend([0u8; 512]);
    std::fs::write(&padded, bytes).unwrap();
    let (r, _, _dir) = run(std::slice::from_ref(&padded));
    assert_eq!(counts(&r, "wudao"), (records as u64, records as u64, vec![]));
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out = if big_endian { vec![0xfe, 0xff] } else { vec![0xff, 0xfe] };
    for u in text.encode_utf16() {
        out.extend(if big_endian { u.to_be_bytes() } else { u.to_le_bytes() });
    }
    out
}

#[test]
fn utf16_with_a_bom_reads_like_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = std::fs::read_to_string(data("wudao/coretech_wudao_demo.jsonl")).unwrap();
    let xml = std::fs::read_to_string(data("epo/EP1873405A2-v1-2.xml")).unwrap();
    let le = tmp.path().join("wudao-utf16le.jsonl");
    std::fs::write(&le, utf16(&jsonl, false)).unwrap();
    let be = tmp.path().join("ep-utf16be.xml");
    std::fs::write(&be, utf16(&xml, true)).unwrap();
    let (r16, docs16, _d1) = run(&[le, be]);
    let (r8, docs8, _d2) = run(&[data("wudao/coretech_wudao_demo.jsonl"), data("epo/EP1873405A2-v1-2.xml")]);
    assert!(r16.unrecognized.is_empty(), "{:?}", r16.unrecognized);
    assert_eq!((counts(&r16, "wudao"), counts(&r16, "epo")), (counts(&r8, "wudao"), counts(&r8, "epo")));
    assert_eq!(docs16.len(), 11);
    for (a, b) in docs16.iter().zip(&docs8) {
        // WuDao's position ids are namespaced by file name, which differs here: compare the rest.
        let native = |id: &str| id.rsplit(':').next().unwrap().to_string();
        assert_eq!((native(&a.id), &a.title, &a.text), (native(&b.id), &b.title, &b.text));
    }
}

#[test]
fn bidi_overrides_are_removed_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("bidi.jsonl");
    let content = "发票文件名\u{202e}fdp.exe\u{202c}显示为可执行文件，\u{2066}隔离\u{2069}文本内容";
    std::fs::write(&f, format!("{{\"id\": 1, \"content\": \"{content}\", \"title\": \"标题\", \"dataType\": \"科技\"}}\n")).unwrap();
    let (r, docs, _dir) = run(&[f]);
    assert_eq!(counts(&r, "wudao"), (1, 1, vec![]));
    assert_eq!(docs[0].text, "发票文件名fdp.exe显示为可执行文件，隔离文本内容");
    assert_eq!(docs[0].meta["bidi_controls_removed"], 4);
}
