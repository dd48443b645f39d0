//! WuDao corpus: the pretty-printed JSON array (streamed element by element by the JsonArray
//! framer, never loaded whole), JSONL, and the `{"RECORDS": [...]}` wrapper; objects with
//! `content` (and `title`, `dataType`, `id`, `uniqueKey`, `titleUkey`, `url`, `dataCleanTime`).
//!
//! Document:
//! - `id`: `wudao:{id}`, where WuDao's `id` is a running number within its file, so the docs
//!   stage namespaces it by the file (`wudao:{file}:{id}`, `meta.id_from = "position"`); when
//!   `id` is absent, null or blank, `wudao:{uniqueKey}`; when both are
//!   missing, `wudao:h{xxh3-64 of content, 16 hex}` and `meta.id_from = "content-xxh3"`, so the
//!   id stays stable across runs, file names and compression (identical contents share an id,
//!   which is what they are: duplicates).
//! - `lang` `zh`, `title` = `title`, `text` = `content` alone. The title is **not** prepended:
//!   CoreTech-LLM fed WuDao to LLaMA-Factory's `pt` stage, which trains on one text column per
//!   record, and its own WuDao file keeps `title` and `content` apart (`content` of
//!   encyclopedia entries already opens with the entry name).
//! - `date` empty (`dataCleanTime` is when WuDao cleaned the page, not a publication date).
//! - `meta`: every other field (`uniqueKey`, `titleUkey`, `dataType`, `url`, `dataCleanTime`, …).
//!
//! A record that is not an object, lacks `content`, or whose `content`/`title` is not a string
//! (or whose `id` is neither a string nor an integer) is a `shape` error at its position.

use serde_json::Value;

use crate::doc::{Document, Record, ID_FROM_KEY, ID_FROM_POSITION};
use crate::error::ReadError;

use super::json;
use super::{Format, Framing, ParseContext, RawRecord};
use crate::io::sniff::{json_head, JsonLayout as Layout};

/// WuDao as a JSON array or `{"RECORDS": [...]}`.
pub struct WudaoJson;
/// WuDao as JSONL.
pub struct WudaoJsonl;

/// Keys only WuDao records have (besides `content`), used to tell WuDao JSONL from generic JSONL.
const WUDAO_KEYS: &[&str] = &["dataType", "uniqueKey", "titleUkey"];

impl Format for WudaoJson {
    fn name(&self) -> &'static str {
        "wudao-json"
    }
    fn source(&self) -> &'static str {
        "wudao"
    }
    /// An array (or wrapped array) whose first object has `content` and an `id`, `title` or a
    /// WuDao-specific key.
    fn sniff(&self, head: &[u8]) -> bool {
        json_head(head).is_some_and(|h| {
            matches!(h.layout, Layout::Array | Layout::Wrapped)
                && h.has("content")
                && (h.has_any(WUDAO_KEYS) || h.has_any(&["id", "title"]))
        })
    }
    fn framing(&self) -> Framing {
        Framing::JsonArray
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_record(raw, cx).map(Record::Doc)
    }
}

impl Format for WudaoJsonl {
    fn name(&self) -> &'static str {
        "wudao-jsonl"
    }
    fn source(&self) -> &'static str {
        "wudao"
    }
    /// JSONL whose first object has `content` and one of `dataType`, `uniqueKey`, `titleUkey`
    /// within the sniffed bytes (other JSONL with a `content` field is generic JSONL).
    fn sniff(&self, head: &[u8]) -> bool {
        json_head(head).is_some_and(|h| h.layout == Layout::Lines && h.has("content") && h.has_any(WUDAO_KEYS))
    }
    fn framing(&self) -> Framing {
        Framing::Lines
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_record(raw, cx).map(Record::Doc)
    }
}

/// Parses one WuDao record (either layout) into a document.
pub fn parse_record(raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Document, ReadError> {
    let mut m = json::parse_object(raw, cx)?;
    let content = json::require_str(&mut m, "content", raw)?;
    let title = json::take_str(&mut m, "title", raw)?.unwrap_or_default();
    let id = match json::take_id(&mut m, "id", raw)? {
        Some(id) => {
            m.insert(ID_FROM_KEY.into(), Value::String(ID_FROM_POSITION.into()));
            id
        }
        None => match m.get("uniqueKey") {
            Some(Value::String(k)) if !k.trim().is_empty() => k.trim().to_string(),
            _ => {
                m.insert("id_from".into(), Value::String("content-xxh3".into()));
                format!("h{:016x}", xxhash_rust::xxh3::xxh3_64(content.as_bytes()))
            }
        },
    };
    Ok(Document {
        id: format!("wudao:{id}"),
        source: "wudao".into(),
        lang: "zh".into(),
        title,
        ipc: Vec::new(),
        date: String::new(),
        text: content,
        meta: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::framing::frame;
    use crate::io::input::for_each_stream;
    use crate::io::SNIFF_BYTES;
    use crate::sources::{sniff, SourcesConfig};
    use std::path::Path;
    use std::sync::Arc;

    fn fixture(name: &str) -> String {
        format!("{}/fixtures/data/wudao/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn head_of(path: &str) -> Vec<u8> {
        let b = std::fs::read(path).unwrap();
        b[..b.len().min(SNIFF_BYTES)].to_vec()
    }

    /// Reads a whole file through sniffing, the real framing and parsing.
    fn read_all(path: &str) -> (Vec<Document>, Vec<ReadError>) {
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let format = sniff(&head_of(path)).expect("sniffed");
        let (mut docs, mut errs) = (Vec::new(), Vec::new());
        for_each_stream(Path::new(path), &Arc::default(), |stream| {
            frame(format.framing(), stream, cfg.max_record_bytes, &mut |r| {
                match r.and_then(|raw| format.parse(&raw, &cx)) {
                    Ok(Record::Doc(d)) => docs.push(d),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => errs.push(e),
                }
                true
            });
            Ok(())
        })
        .unwrap();
        (docs, errs)
    }

    fn raw(s: &str) -> RawRecord {
        RawRecord { file: Arc::from("w.jsonl"), index: 0, offset: 50, line: 4, bytes: s.as_bytes().to_vec() }
    }

    #[test]
    fn sniffs_the_three_layouts() {
        assert_eq!(sniff(&head_of(&fixture("wudaosailing_corpus_test.json"))).unwrap().name(), "wudao-json");
        assert_eq!(sniff(&head_of(&fixture("coretech_wudao_demo.jsonl"))).unwrap().name(), "wudao-jsonl");
        let wrapped = br#"{"RECORDS":[{"id":1,"title":"t","content":"c","dataType":"x"}]}"#;
        assert_eq!(sniff(wrapped).unwrap().name(), "wudao-json");
    }

    #[test]
    fn json_array_fixture_has_478_documents() {
        let (docs, errs) = read_all(&fixture("wudaosailing_corpus_test.json"));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(docs.len(), 478);
        let d = &docs[0];
        assert_eq!(d.id, "wudao:1");
        assert_eq!((d.source.as_str(), d.lang.as_str()), ("wudao", "zh"));
        assert_eq!(d.title, "美团王兴发内部信：王慧文将退出公司具体管理事务");
        assert!(d.text.starts_with("网易科技讯1月20日消息，今日美团创始人CEO王兴给全体员工发了一封内部信。"), "{}", &d.text[..60]);
        assert_eq!(d.meta["uniqueKey"], "25c6b97fceef629cd4abca434fc9cddc");
        assert_eq!(d.meta["dataType"], "科技");
        assert_eq!(d.meta["url"], "https://tech.163.com/20/0120/16/F3BM6AAB00097U7R.html");
        assert!(d.meta.contains_key("dataCleanTime") && d.meta.contains_key("titleUkey"));
        assert!(!d.meta.contains_key("content") && !d.meta.contains_key("title") && !d.meta.contains_key("id"));
        let ids: std::collections::BTreeSet<_> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 478);
        assert_eq!(docs[477].id, "wudao:478");
    }

    #[test]
    fn jsonl_fixture_has_10_documents() {
        let (docs, errs) = read_all(&fixture("coretech_wudao_demo.jsonl"));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(docs.len(), 10);
        assert_eq!(docs[0].id, "wudao:505950");
        assert_eq!(docs[0].title, "朱忠丽");
        assert!(docs[0].text.starts_with("朱忠丽，长春理工大学教授，硕士生导师。"));
        assert_eq!(docs[0].meta["dataType"], "百科");
        assert_eq!(docs[8].meta["dataType"], "博客");
    }

    #[test]
    fn records_wrapper_reads_like_jsonl() {
        // The demo JSONL rewritten as a pretty-printed `{"RECORDS": [...]}` file.
        let jsonl = std::fs::read_to_string(fixture("coretech_wudao_demo.jsonl")).unwrap();
        let recs: Vec<&str> = jsonl.lines().collect();
        let wrapped = format!("{{\n  \"RECORDS\": [\n    {}\n  ]\n}}\n", recs.join(",\n    "));
        assert_eq!(sniff(wrapped.as_bytes()).unwrap().name(), "wudao-json");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        std::fs::write(&path, &wrapped).unwrap();
        let (docs, errs) = read_all(path.to_str().unwrap());
        assert!(errs.is_empty(), "{errs:?}");
        let (want, _) = read_all(&fixture("coretech_wudao_demo.jsonl"));
        assert_eq!(docs, want);
    }

    #[test]
    fn id_falls_back_to_unique_key_then_content_hash() {
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let d = parse_record(&raw(r#"{"uniqueKey":"abc","content":"正文"}"#), &cx).unwrap();
        assert_eq!(d.id, "wudao:abc");
        let d = parse_record(&raw(r#"{"id":"  ","content":"正文"}"#), &cx).unwrap();
        assert_eq!(d.id, format!("wudao:h{:016x}", xxhash_rust::xxh3::xxh3_64("正文".as_bytes())));
        assert_eq!(d.meta["id_from"], "content-xxh3");
    }

    #[test]
    fn wrong_shapes_are_shape_errors_at_the_record() {
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        for (rec, want) in [
            (r#"[1, 2]"#, "expected a JSON object, found an array"),
            (r#"{"id": 3, "title": "t"}"#, "missing required field \"content\""),
            (r#"{"id": 3, "content": 7}"#, "field \"content\" must be a string, found a number"),
            (r#"{"id": 3.5, "content": "x"}"#, "field \"id\" must be a string or an integer id"),
            (r#"{"content": "x", "title": ["a"]}"#, "field \"title\" must be a string"),
        ] {
            let e = parse_record(&raw(rec), &cx).unwrap_err();
            // A missing field has its own kind, in every reader.
            let kind = if want.starts_with("missing") { "missing-field" } else { "shape" };
            assert_eq!(e.kind, kind, "{rec}");
            assert!(e.message.contains(want), "{rec}: {}", e.message);
            assert_eq!((e.position.offset, e.position.line), (Some(50), Some(4)));
        }
        let e = parse_record(&raw(r#"{"id": 3, "content": "x"#), &cx).unwrap_err();
        assert_eq!(e.kind, "json");
        // A record cut short is located at its first byte (where the user must look), with its
        // length in the message.
        assert_eq!((e.position.offset, e.position.line), (Some(50), Some(4)), "{e}");
        assert!(e.message.contains("cut off after 23 bytes"), "{e}");
        let e = parse_record(&raw("{\"id\": 3,\n  , \"content\": \"x\"}"), &cx).unwrap_err();
        // The stray comma: line 2 of the record, byte 12.
        assert_eq!((e.kind.as_str(), e.position.offset, e.position.line), ("json", Some(50 + 12), Some(5)), "{e}");
    }
}
