//! CoreTech IPC descriptions: JSONL `{ipc, des, ori_des}`, one IPC entry per line.
//!
//! Document: `id` `ipc:{normalized symbol}`, `source` `ipc`, `lang` `zh`, `ipc` = [symbol],
//! `title` = the Chinese IPC title (`ori_des`), `text` = `des`. The text is `des` alone: it is
//! the generated explanation the corpus exists for ("ipcDes"), it already states the title
//! (`… A01 表示 农业；林业；… 相关的技术`), and CoreTech-LLM's `pt` training read one text column.
//! `meta.ori_des` keeps `ori_des` verbatim; records whose key the upstream data got wrong are
//! re-keyed to the symbol their `ori_des` names (see [`crate::ipc::coretech`]), with the key
//! as given in `meta.ipc_given`. Other fields go to `meta`.
//!
//! `ipc` and `des` are required strings; a key that is not an IPC symbol is a `shape` error.

use serde_json::Value;

use crate::doc::{Document, Record};
use crate::error::{ReadError, ReadErrorKind};
use crate::ipc::coretech;

use super::json;
use super::{Format, Framing, ParseContext, RawRecord};
use crate::io::sniff::{json_head, JsonLayout as Layout};

/// CoreTech IPC descriptions: JSONL `{ipc, des, ori_des}`.
pub struct IpcJsonl;

impl Format for IpcJsonl {
    fn name(&self) -> &'static str {
        "ipc-jsonl"
    }
    fn source(&self) -> &'static str {
        "ipc"
    }
    /// JSONL whose first object has `ipc` and `des`.
    fn sniff(&self, head: &[u8]) -> bool {
        json_head(head).is_some_and(|h| h.layout == Layout::Lines && h.has("ipc") && h.has("des"))
    }
    fn framing(&self) -> Framing {
        Framing::Lines
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let mut m = json::parse_object(raw, cx)?;
        let ipc = json::require_str(&mut m, "ipc", raw)?;
        let des = json::require_str(&mut m, "des", raw)?;
        let ori_des = json::take_str(&mut m, "ori_des", raw)?.unwrap_or_default();
        let r = coretech::resolve(&ipc, &ori_des)
            .map_err(|e| raw.error(ReadErrorKind::Shape, format!("field \"ipc\" {ipc:?} is not an IPC symbol: {e}")))?;
        if r.rekeyed {
            m.insert("ipc_given".into(), Value::String(ipc));
        }
        m.insert("ori_des".into(), Value::String(ori_des));
        Ok(Record::Doc(Document {
            id: format!("ipc:{}", r.symbol),
            source: "ipc".into(),
            lang: "zh".into(),
            title: r.title,
            ipc: vec![r.symbol],
            date: String::new(),
            text: des,
            meta: m,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::framing::frame;
    use crate::io::input::for_each_stream;
    use crate::io::SNIFF_BYTES;
    use crate::sources::{sniff, SourcesConfig};
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    fn read_all(name: &str) -> (Vec<Document>, Vec<ReadError>) {
        let path = format!("{}/fixtures/data/ipc/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        let format = sniff(&bytes[..bytes.len().min(SNIFF_BYTES)]).expect("sniffed");
        assert_eq!(format.name(), "ipc-jsonl");
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let (mut docs, mut errs) = (Vec::new(), Vec::new());
        for_each_stream(Path::new(&path), &Arc::default(), |stream| {
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

    #[test]
    fn demo_has_10_documents() {
        let (docs, errs) = read_all("coretech_ipcDes_demo.jsonl");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(docs.len(), 10);
        let a = &docs[0];
        assert_eq!((a.id.as_str(), a.source.as_str(), a.lang.as_str(), a.title.as_str()), ("ipc:A", "ipc", "zh", "人类生活必需"));
        assert_eq!(a.ipc, ["A"]);
        assert!(a.text.starts_with("在国际专利分类（IPC）系统中，A 是大类之一，表示人类生活必需的技术领域。"));
        assert_eq!(a.meta["ori_des"], "人类生活必需");
        assert_eq!(docs[3].id, "ipc:A01B 1/00");
    }

    #[test]
    fn expand_has_2856_documents_with_mis_keyed_records_fixed() {
        let (docs, errs) = read_all("coretech_ipc_description_expand.hier+G06+H04.jsonl");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(docs.len(), 2856);
        let rekeyed: Vec<&Document> = docs.iter().filter(|d| d.meta.contains_key("ipc_given")).collect();
        assert_eq!(rekeyed.len(), 184);
        let d = docs.iter().find(|d| d.meta.get("ipc_given").is_some_and(|v| v == "H04B1/02") && d.ipc == ["H04B 10/02"]).unwrap();
        assert_eq!(d.title, "零部件〔5〕");
        assert_eq!(d.meta["ori_des"], "H04B 10/02 零部件〔5〕");
        // The genuine H04B 1/02 record is still there under its own symbol.
        assert!(docs.iter().any(|d| d.id == "ipc:H04B 1/02" && d.title.starts_with("发射机")));
        // What stays duplicated after re-keying: the old G06Q 10/00…99/00 groups next to their
        // current namesakes (same symbol, two editions) — reported, not hidden.
        let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &docs {
            *by_id.entry(d.id.as_str()).or_default() += 1;
        }
        let dups: Vec<&str> = by_id.iter().filter(|(_, &n)| n > 1).map(|(k, _)| *k).collect();
        assert_eq!(
            dups,
            ["ipc:G06Q 10/00", "ipc:G06Q 20/00", "ipc:G06Q 30/00", "ipc:G06Q 40/00", "ipc:G06Q 50/00", "ipc:G06Q 90/00", "ipc:G06Q 99/00"]
        );
    }

    #[test]
    fn bad_records() {
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let raw = |s: &str| RawRecord { file: Arc::from("i.jsonl"), index: 0, offset: 9, line: 2, bytes: s.as_bytes().to_vec() };
        for (rec, want) in [
            (r#"{"des": "x"}"#, "missing required field \"ipc\""),
            (r#"{"ipc": "A01", "ori_des": "x"}"#, "missing required field \"des\""),
            (r#"{"ipc": "Z01", "des": "x"}"#, "is not an IPC symbol"),
            (r#"{"ipc": 5, "des": "x"}"#, "must be a string"),
        ] {
            let e = IpcJsonl.parse(&raw(rec), &cx).unwrap_err();
            assert_eq!(e.kind, if want.starts_with("missing") { "missing-field" } else { "shape" }, "{rec}");
            assert!(e.message.contains(want), "{}", e.message);
        }
    }
}
