//! Bad input through the whole docs stage: one small broken file per class (`fixtures/bad/`).
//! Each case checks that the report counts the problem under the right bucket, that the error
//! names the file and its position, that the run goes on (the other records and a good file
//! beside it are kept), that `strict` turns it into a failure with the same message, and that
//! every source's accounting adds up (read = kept + filtered + duplicates + errors).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coretech::config::{DocsConfig, PipelineConfig};
use coretech::core::{RunReport, TaskSplit};
use coretech::ipc::IpcScheme;
use coretech::pipeline::docs;
use coretech::shard::documents::{read_shard, shard_files};
use coretech::Document;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bad(name: &str) -> PathBuf {
    root().join("fixtures/bad").join(name)
}

fn data(rel: &str) -> PathBuf {
    root().join("fixtures/data").join(rel)
}

/// The good file that runs beside each broken one: 10 WuDao records.
fn good() -> PathBuf {
    data("wudao/coretech_wudao_demo.jsonl")
}

fn config(inputs: &[PathBuf], out: &Path, extra: &str) -> DocsConfig {
    let inputs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let toml = format!(
        // These tests are about reading: the quality filters are off so that tiny hand-made
        // records are not dropped as too short (filters have their own tests in `clean`).
        "stages = [\"docs\"]\n[docs]\ninputs = {inputs:?}\noutput = {:?}\nrows_per_shard = 100\n{extra}\n\
         [docs.clean.length]\nmin_chars = 1\n[docs.clean.quality]\nenabled = false\n[docs.clean.repetition]\nenabled = false\n",
        out.display().to_string()
    );
    PipelineConfig::parse(&toml, "test.toml").expect("test config is valid").docs.expect("docs section")
}

/// Runs the docs stage over `inputs` into a fresh directory.
fn run(inputs: &[PathBuf], extra: &str, strict: bool) -> (coretech::Result<RunReport>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(inputs, &dir.path().join("docs"), extra);
    let res = docs::run(&cfg, &IpcScheme::default(), TaskSplit::default(), strict);
    (res, dir)
}

/// The documents written, in shard order.
fn written(dir: &tempfile::TempDir) -> Vec<Document> {
    let mut out = Vec::new();
    for f in shard_files(&dir.path().join("docs")).unwrap() {
        for b in read_shard(&f, 1024).unwrap() {
            out.extend(b.unwrap());
        }
    }
    out
}

fn assert_accounting(r: &RunReport) {
    for (name, s) in &r.sources {
        assert_eq!(s.read, s.accounted(), "source {name}: read {} != kept + filtered + duplicates + errors in {s:?}", s.read);
    }
}

/// (read, kept, errors by kind) of a source.
fn counts(r: &RunReport, source: &str) -> (u64, u64, Vec<(String, u64)>) {
    let s = &r.sources[source];
    (s.read, s.kept, s.errors.iter().map(|(k, v)| (k.clone(), *v)).collect())
}

fn errs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The sampled error of `kind` whose text contains `at`; panics with the samples otherwise.
fn find_error<'r>(r: &'r RunReport, kind: &str, at: &str) -> &'r coretech::ReadError {
    r.error_samples
        .iter()
        .find(|e| e.kind == kind && e.to_string().contains(at))
        .unwrap_or_else(|| panic!("no {kind} error at {at:?} among {:#?}", r.error_samples))
}

/// With `strict`, the same input fails with the error's message.
fn assert_strict_fails(inputs: &[PathBuf], extra: &str, want: &[&str]) {
    let (res, _dir) = run(inputs, extra, true);
    let msg = res.expect_err("strict run must fail").to_string();
    for w in want {
        assert!(msg.contains(w), "strict error {msg:?} lacks {w:?}");
    }
}

#[test]
fn malformed_json_line_is_counted_and_the_other_lines_are_read() {
    let inputs = [bad("json-malformed-line.jsonl"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    // 4 lines + 10 good records; line 3 lacks a comma before "title" (line starts at byte 856).
    assert_eq!(counts(&r, "wudao"), (14, 13, errs(&[("json", 1)])));
    let at = "json-malformed-line.jsonl:3 (byte 1177)";
    let e = find_error(&r, "json", at);
    assert!(e.message.contains("expected `,` or `}`"), "{e}");
    assert_strict_fails(&inputs, "", &[at, "json: malformed JSON"]);
}

#[test]
fn json_of_the_wrong_shape_jsonl() {
    let inputs = [bad("json-wrong-shape.jsonl"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (14, 12, errs(&[("shape", 2)])));
    let e = find_error(&r, "shape", "json-wrong-shape.jsonl:2 (byte 400)");
    assert!(e.message.contains("expected a JSON object, found an array"), "{e}");
    let e = find_error(&r, "shape", "json-wrong-shape.jsonl:3 (byte 431)");
    assert!(e.message.contains("field \"content\" must be a string, found a number"), "{e}");
    assert_strict_fails(&inputs, "", &["json-wrong-shape.jsonl:2 (byte 400)", "shape: expected a JSON object"]);
}

#[test]
fn json_of_the_wrong_shape_in_an_array() {
    let inputs = [bad("json-wrong-shape-array.json")];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (3, 2, errs(&[("shape", 1)])));
    let at = "json-wrong-shape-array.json:3 (byte 411)";
    assert!(find_error(&r, "shape", at).message.contains("found a number"));
    assert_strict_fails(&inputs, "", &[at]);
}

#[test]
fn truncated_json_array_keeps_the_complete_elements() {
    let inputs = [bad("json-truncated-array.json"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (12, 11, errs(&[("truncated", 1)])));
    let at = "json-truncated-array.json:3 (byte 411)";
    assert!(find_error(&r, "truncated", at).message.contains("ends inside a JSON array element"));
    assert_strict_fails(&inputs, "", &[at, "truncated"]);
}

#[test]
fn missing_required_field() {
    let inputs = [bad("json-missing-field.jsonl"), good()];
    let (res, dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "ipc"), (3, 2, errs(&[("missing-field", 1)])));
    assert_eq!(counts(&r, "wudao"), (10, 10, vec![]));
    let at = "json-missing-field.jsonl:2 (byte 216)";
    assert!(find_error(&r, "missing-field", at).message.contains("missing required field \"des\""));
    let ids: Vec<String> = written(&dir).into_iter().filter(|d| d.source == "ipc").map(|d| d.id).collect();
    assert_eq!(ids, ["ipc:A01", "ipc:A01C"]);
    assert_strict_fails(&inputs, "", &[at, "missing required field"]);
}

#[test]
fn gbk_encoded_jsonl_is_detected_and_decoded() {
    let inputs = [bad("json-gbk.jsonl")];
    let (res, dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (2, 2, vec![]));
    let docs = written(&dir);
    assert_eq!(docs[0].id, "wudao:json-gbk.jsonl:562478");
    assert_eq!(docs[0].title, "北京博康健业科技有限公司");
    assert_eq!(
        docs[0].text,
        "北京博康健业科技有限公司是一家专门从事移动医疗健康业务的企业。公司利用移动互联技术、云计算技术与医疗健康资源，\
         打造领先的慢性病医疗健康管理平台。博康公司创始人与管理团队长期在IT领域工作，具有创办多家成功企业的经验, 包括国内最早的电子商务"
    );
    assert_eq!(docs[1].title, "深圳市金碧辉煌家居照明有限公司");
    assert!(docs[1].text.starts_with("一般经营项目是：照明产品及设备的技术开发、设计与销售；灯饰、节能设备"), "{}", docs[1].text);
    assert_eq!(docs[1].meta["dataType"], "百科");
    // With detection off, the same bytes are encoding errors naming where UTF-8 fails.
    let utf8_only = "[docs.sources]\nencoding = \"utf8\"\n";
    let (res, _dir) = run(&inputs, utf8_only, false);
    let r = res.unwrap();
    assert_eq!(counts(&r, "wudao"), (2, 0, errs(&[("encoding", 2)])));
    assert!(find_error(&r, "encoding", "json-gbk.jsonl:1 (byte ").message.contains("invalid UTF-8"));
    assert_strict_fails(&inputs, utf8_only, &["json-gbk.jsonl:1 (byte ", "encoding: invalid UTF-8"]);
}

#[test]
fn invalid_utf8_that_is_not_gbk_is_an_error_with_its_offset() {
    let inputs = [bad("json-invalid-utf8.jsonl"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (13, 12, errs(&[("encoding", 1)])));
    // The 0xFF byte sits at byte 90 of line 2 (which starts at byte 400).
    let at = "json-invalid-utf8.jsonl:2 (byte 490)";
    // The record is UTF-8 Chinese around that byte: named as a damaged byte, not tried as GBK.
    assert!(find_error(&r, "encoding", at).message.contains("invalid UTF-8 (the rest of the record is UTF-8"));
    assert_strict_fails(&inputs, "", &[at, "invalid UTF-8"]);
}

#[test]
fn nul_bytes_are_errors_with_their_offset() {
    let inputs = [bad("json-nul-bytes.jsonl"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (13, 12, errs(&[("encoding", 1)])));
    let at = "json-nul-bytes.jsonl:3 (byte 921)";
    assert!(find_error(&r, "encoding", at).message.contains("NUL byte"));
    assert_strict_fails(&inputs, "", &[at, "NUL byte"]);
}

#[test]
fn empty_file_is_a_counted_error() {
    let inputs = [bad("input-empty.jsonl"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "unknown"), (1, 0, errs(&[("empty", 1)])));
    assert_eq!(counts(&r, "wudao"), (10, 10, vec![]));
    let at = "input-empty.jsonl:1 (byte 0)";
    find_error(&r, "empty", at);
    assert_strict_fails(&inputs, "", &[at, "empty input"]);
}

#[test]
fn record_over_max_record_bytes_is_skipped() {
    let inputs = [bad("json-too-large.jsonl")];
    let limit = "[docs.sources]\nmax_record_bytes = 4096\n";
    let (res, dir) = run(&inputs, limit, false);
    let r = res.unwrap();
    assert_accounting(&r);
    // Line 2 is 6,503 bytes; lines 1 and 3 are small.
    assert_eq!(counts(&r, "wudao"), (3, 2, errs(&[("too-large", 1)])));
    let at = "json-too-large.jsonl:2 (byte 453)";
    assert!(find_error(&r, "too-large", at).message.contains("max_record_bytes (4096 bytes)"));
    let ids: Vec<String> = written(&dir).into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["wudao:json-too-large.jsonl:562478", "wudao:json-too-large.jsonl:421997"]);
    assert_strict_fails(&inputs, limit, &[at, "too-large"]);
    // Under the default limit the same file reads whole.
    let (res, _dir) = run(&inputs, "", false);
    assert_eq!(counts(&res.unwrap(), "wudao"), (3, 3, vec![]));
}

#[test]
fn unrecognized_file_is_listed_and_fails_strict_runs() {
    let inputs = [bad("input-unrecognized.txt"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(r.unrecognized.len(), 1);
    assert!(r.unrecognized[0].ends_with("fixtures/bad/input-unrecognized.txt"), "{:?}", r.unrecognized);
    assert_eq!(counts(&r, "wudao"), (10, 10, vec![]));
    assert!(r.table().contains("unrecognized inputs (1)"));
    assert_strict_fails(&inputs, "", &["input-unrecognized.txt", "no reader recognises this input"]);
}

/// A compressed stream cut short: the records before the cut are kept, the cut is one
/// `truncated` error naming the file and the decompressed offset where reading stopped.
fn check_truncated_stream(name: &str, kept: u64) {
    let inputs = [bad(name), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "wudao"), (kept + 1 + 10, kept + 10, errs(&[("truncated", 1)])));
    let e = find_error(&r, "truncated", name);
    assert!(e.position.offset.is_some() && e.position.line.is_some(), "{e}");
    assert_strict_fails(&inputs, "", &[name, "truncated"]);
}

#[test]
fn truncated_gzip() {
    // The first 40,000 bytes of the gzipped WuDao array decompress to 95,254 bytes: 28 whole
    // elements, the 29th cut.
    check_truncated_stream("input-truncated.json.gz", 28);
}

#[test]
fn truncated_zstd() {
    check_truncated_stream("input-truncated.json.zst", zstd_whole_elements());
}

/// Whole array elements in what the cut zstd file decompresses to before the stream fails.
fn zstd_whole_elements() -> u64 {
    use std::io::Read;
    let f = std::fs::File::open(bad("input-truncated.json.zst")).unwrap();
    let mut dec = zstd::stream::read::Decoder::new(f).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match dec.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    // Elements are pretty-printed objects, each closed by "\n    }" at array level.
    let closed = out.windows(6).filter(|w| w == b"\n    }").count() as u64;
    assert!(closed >= 20, "the cut file should hold several whole records, got {closed}");
    closed
}

#[test]
fn truncated_zip_is_a_file_error() {
    let inputs = [bad("input-truncated.zip"), good()];
    let (res, _dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "unknown"), (1, 0, errs(&[("truncated", 1)])));
    assert_eq!(counts(&r, "wudao"), (10, 10, vec![]));
    let e = find_error(&r, "truncated", "input-truncated.zip");
    assert!(e.message.contains("not a readable zip archive"), "{e}");
    assert_strict_fails(&inputs, "", &["input-truncated.zip", "not a readable zip archive"]);
}

/// The same fixture as plain, `.gz`, `.zst` and `.zip` gives the same documents.
#[test]
fn compressed_inputs_read_like_the_plain_file() {
    let tmp = tempfile::tempdir().unwrap();
    for fixture in ["wudao/coretech_wudao_demo.jsonl", "wudao/wudaosailing_corpus_test.json", "ipc/coretech_ipcDes_demo.jsonl"] {
        let plain = data(fixture);
        let bytes = std::fs::read(&plain).unwrap();
        let base = plain.file_name().unwrap().to_string_lossy().to_string();
        let gz = tmp.path().join(format!("{base}.gz"));
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
        let zst = tmp.path().join(format!("{base}.zst"));
        std::fs::write(&zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
        let zip = tmp.path().join(format!("{base}.zip"));
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
        z.start_file(&base, zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)).unwrap();
        z.write_all(&bytes).unwrap();
        z.finish().unwrap();

        let (res, dir) = run(std::slice::from_ref(&plain), "", false);
        let want_report = res.unwrap();
        let want = written(&dir);
        assert!(!want.is_empty());
        for packed in [gz, zst, zip] {
            let (res, dir) = run(std::slice::from_ref(&packed), "", false);
            let r = res.unwrap();
            for (src, s) in &want_report.sources {
                let t = &r.sources[src];
                assert_eq!((t.read, t.kept, &t.errors), (s.read, s.kept, &s.errors), "{}", packed.display());
            }
            // The same documents; only where they came from differs (provenance, and the file
            // name that namespaces WuDao's position ids: `x.jsonl.gz`, `x.jsonl.zip!x.jsonl`).
            let packed_name = packed.file_name().unwrap().to_string_lossy().to_string();
            let same = |mut d: coretech::Document, from: &str| {
                d.meta.remove("provenance");
                d.id = d.id.replace(&format!("{from}!{base}:"), &format!("{base}:")).replace(&format!("{from}:"), &format!("{base}:"));
                d
            };
            let got: Vec<_> = written(&dir).into_iter().map(|d| same(d, &packed_name)).collect();
            let want: Vec<_> = want.iter().cloned().map(|d| same(d, &base)).collect();
            assert_eq!(got, want, "{} reads differently from {fixture}", packed.display());
        }
    }
}

/// Parquet through the docs stage: rows of a text column are documents; a file without the
/// text column is one clear error.
#[test]
fn parquet_inputs() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, cols: Vec<(&str, Vec<&str>)>| {
        let path = tmp.path().join(name);
        let schema = Arc::new(Schema::new(cols.iter().map(|(n, _)| Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>()));
        let arrays: Vec<ArrayRef> = cols.iter().map(|(_, v)| Arc::new(StringArray::from(v.clone())) as ArrayRef).collect();
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), None).unwrap();
        w.write(&RecordBatch::try_new(schema, arrays).unwrap()).unwrap();
        w.close().unwrap();
        path
    };
    let good_pq = write("corpus.parquet", vec![("id", vec!["a", "b"]), ("text", vec!["第一篇", "second"]), ("src", vec!["x", "y"])]);
    let bad_pq = write("no-text.parquet", vec![("body", vec!["a"])]);
    let inputs = [good_pq, bad_pq];
    let (res, dir) = run(&inputs, "", false);
    let r = res.unwrap();
    assert_accounting(&r);
    assert_eq!(counts(&r, "text"), (3, 2, errs(&[("missing-field", 1)])));
    assert_eq!(r.sources["text"].files, 2);
    let e = find_error(&r, "missing-field", "no-text.parquet");
    assert!(e.message.contains("no text column \"text\" (columns: body)"), "{e}");
    let docs = written(&dir);
    assert_eq!(docs.iter().map(|d| (d.id.as_str(), d.text.as_str())).collect::<Vec<_>>(), [("text:a", "第一篇"), ("text:b", "second")]);
    assert_eq!(docs[0].meta["src"], "x");
    assert_strict_fails(&inputs, "", &["no-text.parquet", "no text column"]);
}
