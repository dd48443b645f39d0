//! The USPTO fixtures read through the real input, sniffing and framing path; golden renders.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::doc::Record;
use crate::error::ReadError;
use crate::io::framing::frame;
use crate::io::input::{for_each_stream, InputStream};
use crate::io::SNIFF_BYTES;
use crate::render::{render_patent, RenderConfig};
use crate::sources::{sniff, ParseContext, SourcesConfig};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// Reads every record of `path`: (sniffed format name, parse results in order).
pub(crate) fn read_all(path: &Path) -> (String, Vec<Result<Record, ReadError>>) {
    let cfg = SourcesConfig::default();
    let cx = ParseContext { cfg: &cfg };
    let progress = Arc::new(AtomicU64::new(0));
    let mut out = Vec::new();
    let mut format_name = String::new();
    for_each_stream(path, &progress, |stream| {
        let InputStream { name, mut reader } = stream;
        let mut head = Vec::new();
        (&mut reader).take(SNIFF_BYTES as u64).read_to_end(&mut head).expect("readable");
        let format = sniff(&head).unwrap_or_else(|| panic!("{name}: no format recognises it"));
        format_name = format.name().to_string();
        let reader = Box::new(Cursor::new(head).chain(reader));
        frame(format.framing(), InputStream { name, reader }, cfg.max_record_bytes, &mut |raw| {
            out.push(raw.and_then(|r| format.parse(&r, &cx)));
            true
        });
        Ok(())
    })
    .expect("input opens");
    (format_name, out)
}

fn counts(v: &[Result<Record, ReadError>]) -> (usize, Vec<String>, Vec<String>) {
    let mut patents = 0;
    let mut skips = Vec::new();
    let mut errors = Vec::new();
    for r in v {
        match r {
            Ok(Record::Patent(_)) => patents += 1,
            Ok(Record::Skip { reason, .. }) => skips.push(reason.clone()),
            Ok(Record::Doc(_)) => errors.push("unexpected Doc".into()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (patents, skips, errors)
}

#[test]
fn every_uspto_fixture_reads_with_the_provenance_counts() {
    let seq = || "not-a-patent:sequence-cwu".to_string();
    let tag_re = regex::Regex::new(r"<([A-Za-z][\w-]*)").unwrap();
    let entity = regex::Regex::new(r"&#?\w+;").unwrap();
    for (file, format, patents, skips) in [
        ("ipg130416.small.xml", "uspto-ice", 25, vec![seq(), seq()]),
        ("ipa130117.two-applications.xml", "uspto-ice", 2, vec![]),
        ("US08930553-grant-v45.xml", "uspto-ice", 1, vec![]),
        ("US20230080311A1-20230316-application-v46.xml", "uspto-ice", 1, vec![]),
        ("US20010000943A1-pap-v15.xml", "uspto-pap", 1, vec![]),
        ("US06336130-grant-v25-PATDOC.xml", "uspto-patdoc", 1, vec![]),
        ("US03937375-aps-greenbook.txt", "uspto-aps", 1, vec![]),
    ] {
        let path = fixture(&format!("data/uspto/{file}"));
        let (name, recs) = read_all(&path);
        assert_eq!(name, format, "{file}");
        // The element names of the file: none may appear as a tag in the text.
        let source = std::fs::read_to_string(&path).unwrap();
        let tags: std::collections::BTreeSet<&str> = tag_re.captures_iter(&source).map(|c| c.get(1).unwrap().as_str()).collect();
        let (n, s, errors) = counts(&recs);
        assert!(errors.is_empty(), "{file}: {errors:?}");
        assert_eq!((n, s), (patents, skips), "{file}");
        for r in &recs {
            let Ok(Record::Patent(p)) = r else { continue };
            // Every patent has what the corpus needs, and no markup is left in its text.
            assert!(
                p.number.starts_with("US") && !p.title.is_empty() && p.date.len() == 10,
                "{file}: {} {:?} {}",
                p.number,
                p.title,
                p.date
            );
            assert!(!p.claims.is_empty(), "{file}: {} has no claims", p.number);
            for t in [&p.title, &p.abstract_text, &p.description].into_iter().chain(&p.claims) {
                for tag in &tags {
                    for open in [format!("<{tag}>"), format!("<{tag} "), format!("</{tag}>"), format!("<{tag}/>")] {
                        assert!(!t.contains(&open), "{file}: {} markup {open} left in: {t}", p.number);
                    }
                }
                assert!(!entity.is_match(t), "{file}: {} entity left: {t}", p.number);
            }
        }
    }
}

#[test]
fn bulk_file_numbers_and_design_patents() {
    let (_, recs) = read_all(&fixture("data/uspto/ipg130416.small.xml"));
    let patents: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Ok(Record::Patent(p)) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(patents[0].number, "USD680087S1");
    assert!(patents[0].ipc.is_empty(), "design patents have no IPC");
    assert_eq!(patents[0].meta["locarno"], "1403");
    assert_eq!(patents[2].number, "US8418361B2");
    // Distinct numbers, all dated the issue day.
    let mut nums: Vec<&str> = patents.iter().map(|p| p.number.as_str()).collect();
    nums.sort();
    nums.dedup();
    assert_eq!(nums.len(), 25);
    assert!(patents.iter().all(|p| p.date == "2013-04-16"));
    // The sequence listings are skipped under the number of the grant they belong to (the
    // grants themselves are not in this cut of the weekly file).
    let skipped: Vec<&str> = recs
        .iter()
        .filter_map(|r| match r {
            Ok(Record::Skip { id, .. }) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, ["US8420053B2", "US8420317B2"]);
}

/// Each USPTO fixture is claimed by exactly its reader; no other fixture (EPO XML and TSV,
/// JSON, JSONL, CSV, tokenizer files) by any USPTO reader.
#[test]
fn uspto_sniffers_claim_only_their_files() {
    use crate::io::sniff::trimmed;
    use crate::sources::by_name;
    let ours = ["uspto-ice", "uspto-pap", "uspto-patdoc", "uspto-aps"].map(|n| by_name(n).unwrap());
    let mut stack = vec![fixture("data")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
            let claimed: Vec<&str> = ours.iter().filter(|f| f.sniff(head)).map(|f| f.name()).collect();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let want: &[&str] = if !p.parent().unwrap().ends_with("uspto") {
                &[]
            } else if name.contains("aps") {
                &["uspto-aps"]
            } else if name.contains("pap") {
                &["uspto-pap"]
            } else if name.contains("PATDOC") {
                &["uspto-patdoc"]
            } else {
                &["uspto-ice"]
            };
            assert_eq!(claimed, want, "{}", p.display());
            // Sniffing looks at content only: the same bytes after a BOM and blank lines.
            let mut padded = b"\xef\xbb\xbf\n \n".to_vec();
            padded.extend_from_slice(trimmed(head));
            assert_eq!(ours.iter().filter(|f| f.sniff(&padded)).count(), want.len(), "{name} with BOM");
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} fixture files");
    for head in [
        &b"{\"RECORDS\": [{\"content\": \"PATN\"}]}"[..],
        b"[\n  {\"title\": \"x\"}",
        b"EP\t0600001\tA1\t1994-06-08\ten\tTITLE\tx\n",
        b"PATN",
    ] {
        assert!(ours.iter().all(|f| !f.sniff(head)), "{}", String::from_utf8_lossy(head));
    }
}

/// A bad file's records and its bytes.
fn read_bad(name: &str) -> (PathBuf, Vec<u8>, Vec<Result<Record, ReadError>>) {
    let path = fixture(&format!("bad/{name}"));
    let (_, recs) = read_all(&path);
    (path.clone(), std::fs::read(&path).unwrap(), recs)
}

fn numbers(recs: &[Result<Record, ReadError>]) -> Vec<String> {
    recs.iter()
        .filter_map(|r| match r {
            Ok(Record::Patent(p)) => Some(p.number.clone()),
            _ => None,
        })
        .collect()
}

/// The one error of `recs`, checked to name `path`.
fn the_error<'r>(path: &Path, recs: &'r [Result<Record, ReadError>]) -> &'r ReadError {
    let errors: Vec<&ReadError> = recs.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].position.file, path.display().to_string());
    errors[0]
}

fn find(hay: &[u8], needle: &[u8]) -> u64 {
    memchr::memmem::find(hay, needle).expect("needle in file") as u64
}

#[test]
fn truncated_document_in_a_bulk_file_is_one_error_and_the_others_read() {
    let (path, bytes, recs) = read_bad("uspto-bulk-with-truncated-document.xml");
    assert_eq!(recs.len(), 3);
    assert_eq!(numbers(&recs), ["US8000001B2", "US8000003B2"]);
    let e = the_error(&path, &recs);
    assert_eq!(e.kind, "xml");
    assert!(e.message.contains("unclosed element <p>"), "{e}");
    // At the end of the cut document: the byte before the next document's declaration.
    let end = find(&bytes, b"cut of\n") + b"cut of".len() as u64;
    assert_eq!((e.position.offset, e.position.line), (Some(end), Some(18)), "{e}");
    assert!(e.to_string().starts_with(&format!("{}:18 (byte {end})", path.display())), "{e}");
}

#[test]
fn undefined_entity_is_an_xml_error_at_its_byte() {
    let (path, bytes, recs) = read_bad("uspto-undefined-entity.xml");
    let e = the_error(&path, &recs);
    assert_eq!((e.kind.as_str(), e.position.offset), ("xml", Some(find(&bytes, b"&bogus;"))), "{e}");
    assert!(e.message.contains("undefined entity &bogus;"), "{e}");
}

#[test]
fn missing_publication_number_is_a_missing_field_error() {
    let (path, _, recs) = read_bad("uspto-no-publication-number.xml");
    let e = the_error(&path, &recs);
    assert_eq!((e.kind.as_str(), e.position.offset), ("missing-field", Some(0)), "{e}");
    assert!(e.message.contains("no publication number (publication-reference/document-id/doc-number)"), "{e}");
}

#[test]
fn text_that_is_not_utf8_is_an_encoding_error_at_the_bad_byte() {
    let (path, bytes, recs) = read_bad("uspto-not-utf8.xml");
    let e = the_error(&path, &recs);
    assert_eq!((e.kind.as_str(), e.position.offset), ("encoding", Some(find(&bytes, b"\xe9"))), "{e}");
    assert!(e.message.contains("invalid UTF-8"), "{e}");
}

#[test]
fn aps_patent_without_wku_is_a_missing_field_error_and_its_neighbours_read() {
    let (path, bytes, recs) = read_bad("uspto-aps-patent-without-wku.txt");
    assert_eq!(numbers(&recs), ["US3937375A", "US3937376A"]);
    let e = the_error(&path, &recs);
    let second = find(&bytes[1..], b"PATN") + 1;
    assert_eq!((e.kind.as_str(), e.position.offset, e.position.line), ("missing-field", Some(second), Some(8)), "{e}");
    assert!(e.message.contains("no usable patent number"), "{e}");
}

fn docs_config(inputs: &[PathBuf], output: &Path) -> crate::config::DocsConfig {
    let v = serde_json::json!({ "inputs": inputs, "output": output });
    serde_json::from_value(v).expect("docs config")
}

/// The whole `docs` stage over the USPTO fixtures: the report accounts for every record.
#[test]
fn docs_stage_accounts_for_every_uspto_record() {
    let out = tempfile::tempdir().unwrap();
    let cfg = docs_config(&[fixture("data/uspto")], out.path());
    let scheme = crate::ipc::IpcScheme::default();
    let report = crate::pipeline::docs::run(&cfg, &scheme, Default::default(), false).unwrap();
    let st = &report.sources["uspto"];
    assert_eq!((st.files, st.read, st.accounted()), (7, 34, 34), "{st:?}");
    assert!(st.errors.is_empty(), "{:?}", report.error_samples);
    assert_eq!(st.filtered.get("not-a-patent:sequence-cwu"), Some(&2), "{st:?}");
    assert!(report.unrecognized.is_empty(), "{:?}", report.unrecognized);
}

/// Bad records are counted and the run goes on; `strict` fails with the same message.
#[test]
fn docs_stage_counts_bad_records_and_strict_fails_on_them() {
    let out = tempfile::tempdir().unwrap();
    let bad: Vec<PathBuf> =
        ["uspto-bulk-with-truncated-document.xml", "uspto-undefined-entity.xml"].iter().map(|f| fixture(&format!("bad/{f}"))).collect();
    let scheme = crate::ipc::IpcScheme::default();
    let report = crate::pipeline::docs::run(&docs_config(&bad, out.path()), &scheme, Default::default(), false).unwrap();
    let st = &report.sources["uspto"];
    // The two good (tiny, hand-made) documents are read; the cleaner may then drop them as
    // too short, which is a filter, not an error.
    let good = st.kept + st.filtered.values().sum::<u64>();
    assert_eq!((st.read, good, st.errors.get("xml")), (4, 2, Some(&2)), "{st:?}");
    let out = tempfile::tempdir().unwrap();
    let err = crate::pipeline::docs::run(&docs_config(&bad, out.path()), &scheme, Default::default(), true).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("uspto-bulk-with-truncated-document.xml:18 (byte ") && msg.contains("unclosed element <p>"), "{msg}");
}

/// Documents with a golden render: (fixture, index of the patent in the file, golden name).
const GOLDEN: &[(&str, usize, &str)] = &[
    ("US08930553-grant-v45.xml", 0, "US8930553B2-ice-grant"),
    ("US20230080311A1-20230316-application-v46.xml", 0, "US20230080311A1-ice-application"),
    ("ipg130416.small.xml", 24, "US8421615B2-ice-grant-maths-tables"),
    ("US20010000943A1-pap-v15.xml", 0, "US20010000943A1-pap"),
    ("US06336130-grant-v25-PATDOC.xml", 0, "US6336130B1-patdoc"),
    ("US03937375-aps-greenbook.txt", 0, "US3937375A-aps"),
];

/// The golden file is the render with claims; the default render must be it without the
/// claims part. `UPDATE_GOLDEN=1` rewrites the files (then read them through by hand).
#[test]
fn golden_renders() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for &(file, index, golden) in GOLDEN {
        let (_, recs) = read_all(&fixture(&format!("data/uspto/{file}")));
        let p = recs
            .into_iter()
            .filter_map(|r| match r {
                Ok(Record::Patent(p)) => Some(p),
                _ => None,
            })
            .nth(index)
            .unwrap_or_else(|| panic!("{file}: no patent {index}"));
        let plain = render_patent(&p, &RenderConfig::default(), None);
        let with_claims = render_patent(&p, &RenderConfig { claims: true, ..Default::default() }, None);
        let mut meta = serde_json::Map::new();
        for (k, v) in [("id", &plain.id), ("source", &plain.source), ("lang", &plain.lang), ("title", &plain.title), ("date", &plain.date)]
        {
            meta.insert(k.into(), v.clone().into());
        }
        meta.insert("ipc".into(), plain.ipc.clone().into());
        meta.insert("claims".into(), p.claims.len().into());
        meta.insert("meta".into(), plain.meta.clone().into());
        let meta = serde_json::to_string_pretty(&meta).unwrap() + "\n";
        let text_path = fixture(&format!("golden/uspto/{golden}.txt"));
        let meta_path = fixture(&format!("golden/uspto/{golden}.meta.json"));
        if update {
            std::fs::create_dir_all(text_path.parent().unwrap()).unwrap();
            std::fs::write(&text_path, format!("{}\n", with_claims.text)).unwrap();
            std::fs::write(&meta_path, &meta).unwrap();
        }
        let want = std::fs::read_to_string(&text_path).unwrap_or_else(|e| panic!("{}: {e}", text_path.display()));
        let want = want.strip_suffix('\n').unwrap_or(&want);
        assert_eq!(with_claims.text, want, "{golden}: render with claims differs from the golden file");
        let claims_label = format!("\n\n{}", RenderConfig::default().labels_for(&p.lang).claims);
        let claims_at = want.find(&claims_label).unwrap_or_else(|| panic!("{golden}: golden has no claims part"));
        assert_eq!(plain.text, &want[..claims_at], "{golden}: default render is not the golden without claims");
        assert_eq!(meta, std::fs::read_to_string(&meta_path).unwrap(), "{golden}: fields and meta differ");
    }
}
