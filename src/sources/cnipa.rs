//! CoreTech CN patents: a JSON array of `{patent_id, text, source}` with text already rendered.
//!
//! The text is CoreTech's CPT rendering (`标题: …\n\n摘要: …\n\n该专利涉及IPC分类号包括：\n…\n\n详细描述: …`)
//! and is kept byte for byte; title, abstract language and IPC symbols are parsed out of it for
//! the document's columns. Also home of what the patent readers from Google Patents share: the
//! office (`source`) of a publication number and the language of a text.

use crate::doc::{Document, Meta, Record};
use crate::error::{ReadError, ReadErrorKind};
use crate::ipc::normalize;

use super::{Format, Framing, ParseContext, RawRecord};
use crate::io::json::{error_message, error_offset, kind_of};
use crate::io::sniff;
use crate::io::text::{decode, record_offset};

/// CoreTech's labels (the defaults of `RenderConfig`, which reproduce this format).
const TITLE_LABEL: &str = "标题: ";
const ABSTRACT_LABEL: &str = "摘要: ";
const IPC_HEADER: &str = "该专利涉及IPC分类号包括：";
const PART_SEP: &str = "\n\n";

/// CoreTech CN patents: a JSON array of `{patent_id, text, source}` with text already rendered.
pub struct CoretechPatents;

impl Format for CoretechPatents {
    fn name(&self) -> &'static str {
        "coretech-patents"
    }
    fn source(&self) -> &'static str {
        "cnipa"
    }
    fn sniff(&self, head: &[u8]) -> bool {
        let h = sniff::trimmed(head);
        let Some(rest) = h.strip_prefix(b"[") else { return false };
        sniff::trimmed(rest).starts_with(b"{") && sniff::contains(h, b"\"patent_id\"") && sniff::contains(h, b"\"text\"")
    }
    fn framing(&self) -> Framing {
        Framing::JsonArray
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            // Mapped back to the record's bytes when the text was decoded from GB18030.
            raw.error_at(
                record_offset(&raw.bytes, &text, error_offset(&text, &e) as u64),
                ReadErrorKind::Json,
                format!("malformed JSON: {}", error_message(&e)),
            )
        })?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(raw.error(
                ReadErrorKind::Shape,
                format!("expected an object {{\"patent_id\", \"text\", \"source\"}}, found {}", kind_of(&value)),
            ));
        };
        let mut field = |k: &str| match obj.remove(k) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(v) => Err(raw.error(ReadErrorKind::Shape, format!("field \"{k}\" is {}, expected a non-empty string", kind_of(&v)))),
            None => Err(raw.error(ReadErrorKind::MissingField, format!("field \"{k}\" is missing"))),
        };
        let number = field("patent_id")?.trim().to_string();
        let body = field("text")?;
        let parsed = parse_rendered(&body);
        let mut meta: Meta = obj; // `source` and anything else the record had
        meta.insert("number".into(), number.clone().into());
        if !parsed.ipc_unparsed.is_empty() {
            meta.insert("ipc_unparsed".into(), parsed.ipc_unparsed.into());
        }
        let source = office_source(&number);
        let lang = match detect_lang(&format!("{}\n{}", parsed.title, parsed.abstract_text)) {
            "" => office_lang(&number),
            l => l,
        };
        Ok(Record::Doc(Document {
            id: format!("{source}:{number}"),
            source,
            lang: lang.into(),
            title: parsed.title,
            ipc: parsed.ipc,
            date: String::new(),
            text: body,
            meta,
        }))
    }
}

/// What the columns take from a CoreTech-rendered text.
#[derive(Debug, Default, PartialEq)]
struct Rendered {
    title: String,
    abstract_text: String,
    ipc: Vec<String>,
    ipc_unparsed: Vec<serde_json::Value>,
}

/// Parses title, abstract and the IPC list (`H04W24/02：title；` lines up to the one ending in
/// `。`) out of a CoreTech text. Parts that are not there stay empty.
fn parse_rendered(text: &str) -> Rendered {
    let mut r = Rendered::default();
    if let Some(rest) = text.strip_prefix(TITLE_LABEL) {
        r.title = rest.split('\n').next().unwrap_or_default().trim().to_string();
    }
    if let Some(i) = text.find(&format!("{PART_SEP}{ABSTRACT_LABEL}")) {
        let rest = &text[i + PART_SEP.len() + ABSTRACT_LABEL.len()..];
        r.abstract_text = rest.split(PART_SEP).next().unwrap_or_default().trim().to_string();
    }
    if let Some(i) = text.find(IPC_HEADER) {
        for line in text[i + IPC_HEADER.len()..].trim_start_matches('\n').split('\n') {
            if line.trim().is_empty() {
                break;
            }
            let code = line.split('：').next().unwrap_or_default().trim_end_matches(['；', '。']);
            match normalize(code) {
                Ok(n) if !r.ipc.contains(&n) => r.ipc.push(n),
                Ok(_) => {}
                Err(_) => r.ipc_unparsed.push(code.into()),
            }
            if line.ends_with('。') {
                break;
            }
        }
    }
    r
}

/// The country code of a publication number (`CN118524411A` → `CN`).
fn country(number: &str) -> String {
    number.trim().chars().take_while(|c| c.is_ascii_alphabetic()).take(2).collect::<String>().to_ascii_uppercase()
}

/// The `source` of a publication from its office: `cnipa` (CN), `uspto` (US), `epo` (EP),
/// `jpo` (JP), `wipo` (WO), `kipo` (KR); another office is named by its lowercase country code.
pub(crate) fn office_source(number_or_country: &str) -> String {
    let cc = country(number_or_country);
    match cc.as_str() {
        "CN" => "cnipa".into(),
        "US" => "uspto".into(),
        "EP" => "epo".into(),
        "JP" => "jpo".into(),
        "WO" => "wipo".into(),
        "KR" => "kipo".into(),
        "" => "patents".into(),
        _ => cc.to_ascii_lowercase(),
    }
}

/// The usual language of an office's publications, for when the text does not tell.
pub(crate) fn office_lang(number_or_country: &str) -> &'static str {
    match country(number_or_country).as_str() {
        "CN" => "zh",
        "US" => "en",
        "JP" => "ja",
        "KR" => "ko",
        _ => "",
    }
}

/// Characters looked at by [`detect_lang`].
const DETECT_CHARS: usize = 4000;

/// The language of a text by script, then (for Latin script) by the commonest function words
/// of English, German and French; `""` when it cannot tell. A deliberately small heuristic
/// for titles and abstracts of patents, whose office already narrows the choice.
pub(crate) fn detect_lang(text: &str) -> &'static str {
    let (mut han, mut kana, mut hangul, mut latin) = (0usize, 0usize, 0usize, 0usize);
    for c in text.chars().take(DETECT_CHARS) {
        match c {
            '\u{3040}'..='\u{30ff}' => kana += 1,
            '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' => han += 1,
            '\u{ac00}'..='\u{d7af}' | '\u{1100}'..='\u{11ff}' => hangul += 1,
            c if c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(&c) => latin += 1,
            _ => {}
        }
    }
    let cjk = han + kana + hangul;
    if cjk > 0 && cjk >= latin / 4 {
        // Japanese mixes kana into its kanji; Chinese has none.
        return if hangul > han + kana {
            "ko"
        } else if kana * 20 >= cjk {
            "ja"
        } else {
            "zh"
        };
    }
    const WORDS: [(&str, &[&str]); 3] = [
        ("en", &["the", "and", "of", "to", "a", "in", "is", "for", "with", "said", "which", "an"]),
        ("de", &["der", "die", "und", "das", "mit", "ist", "den", "von", "zu", "eine", "einer", "des"]),
        ("fr", &["le", "la", "les", "des", "et", "un", "une", "du", "est", "pour", "dans", "au"]),
    ];
    let mut votes = [0usize; 3];
    for w in text.chars().take(DETECT_CHARS).collect::<String>().split(|c: char| !c.is_alphabetic()) {
        let w = w.to_lowercase();
        for (i, (_, list)) in WORDS.iter().enumerate() {
            if list.contains(&w.as_str()) {
                votes[i] += 1;
            }
        }
    }
    let best = (0..3).max_by_key(|&i| votes[i]).unwrap_or(0);
    if votes[best] > 0 && votes.iter().filter(|&&v| v == votes[best]).count() == 1 {
        WORDS[best].0
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::epo::test_support::{golden, read_all};
    use crate::sources::SourcesConfig;

    const DEMO: &str = "fixtures/data/cnipa/coretech_Patent_demo.json";

    fn docs() -> Vec<Document> {
        let (fmt, recs) = read_all(DEMO, &SourcesConfig::default());
        assert_eq!(fmt, Some("coretech-patents"));
        recs.into_iter()
            .map(|r| match r {
                Ok(Record::Doc(d)) => d,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn demo_reads_ten_documents_verbatim() {
        let ds = docs();
        assert_eq!(ds.len(), 10);
        let raw: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(format!("{}/{DEMO}", env!("CARGO_MANIFEST_DIR"))).unwrap()).unwrap();
        for (d, r) in ds.iter().zip(&raw) {
            assert_eq!(d.id, format!("cnipa:{}", r["patent_id"].as_str().unwrap()));
            assert_eq!(d.text, r["text"].as_str().unwrap(), "{}", d.id);
            assert_eq!((d.source.as_str(), d.lang.as_str()), ("cnipa", "zh"));
            assert_eq!(d.meta["source"], "Google Patents");
            assert!(!d.title.is_empty() && !d.ipc.is_empty(), "{}", d.id);
            assert!(d.meta.get("ipc_unparsed").is_none(), "{}: {:?}", d.id, d.meta);
        }
        assert_eq!(ds[0].id, "cnipa:CN118524411A");
        assert_eq!(ds[0].title, "边缘推断应用干扰感知的gpu资源配置方法、装置和系统");
        assert_eq!(ds[0].ipc, ["H04W 24/02", "H04W 24/06", "H04W 28/082", "H04W 28/084", "H04W 28/0925", "H04W 28/0983", "H04W 72/541"]);
        assert_eq!(ds[9].ipc, ["H03K 17/284", "H02M 1/088", "H02P 27/06", "H02P 27/00", "H03K 2217/0063", "H03K 2217/0072"]);
    }

    #[test]
    fn labels_match_the_renderer() {
        let r = crate::render::RenderConfig::default().labels_for("zh");
        assert_eq!((r.title.as_str(), r.abstract_.as_str(), r.ipc_header.as_str()), (TITLE_LABEL, ABSTRACT_LABEL, IPC_HEADER));
    }

    #[test]
    fn golden_cn_json_document() {
        // The text is CoreTech's own rendering, kept as is; the golden file pins it.
        golden("cnipa/CN118523127A-coretech.txt", &(docs()[2].text.clone() + "\n"));
    }

    #[test]
    fn sniffing_is_by_content() {
        let read = |p: &str| std::fs::read(format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(CoretechPatents.sniff(&read(DEMO)));
        assert!(CoretechPatents.sniff(b"\xef\xbb\xbf\n [\n  {\"text\": \"x\", \"patent_id\": \"CN1A\"}]"));
        for other in [
            "fixtures/data/wudao/wudaosailing_corpus_test.json",
            "fixtures/data/wudao/coretech_wudao_demo.jsonl",
            "fixtures/data/ipc/coretech_ipcDes_demo.jsonl",
            "fixtures/data/sft/GovPatent-SFT_QA_IPC.jsonl",
            "fixtures/data/epo/EP0600000-fulltext-sample.tsv",
        ] {
            assert!(!CoretechPatents.sniff(&read(other)), "{other}");
        }
        assert!(!CoretechPatents.sniff(b"{\"patent_id\": \"CN1A\", \"text\": \"x\"}"), "JSONL line, not an array");
    }

    fn parse(s: &str) -> Result<Record, ReadError> {
        let raw = RawRecord { file: "t.json".into(), index: 0, offset: 10, line: 2, bytes: s.as_bytes().to_vec() };
        CoretechPatents.parse(&raw, &ParseContext { cfg: &SourcesConfig::default() })
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let e = parse("[1]").unwrap_err();
        assert_eq!(e.kind, "shape");
        let e = parse("{\"patent_id\": \"CN1A\"}").unwrap_err();
        assert!(e.message.contains("\"text\" is missing"), "{e}");
        let e = parse("{\"patent_id\": 5, \"text\": \"x\"}").unwrap_err();
        assert!(e.message.contains("\"patent_id\" is a number"), "{e}");
        let e = parse("{\"patent_id\": \"CN1A\",\n \"text\": x}").unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset, e.position.line), ("json", Some(10 + 31), Some(3)), "{e}");
    }

    #[test]
    fn other_offices_and_languages() {
        let Record::Doc(d) = parse(r#"{"patent_id": "US2024123A1", "text": "标题: Widget for testing\n\n摘要: A widget and a method for the testing of widgets.\n\n该专利涉及IPC分类号包括：\nG06F3/01：Input arrangements；\nY02D10/00：Energy efficient computing。\n\n详细描述: x"}"#).unwrap() else { panic!() };
        assert_eq!((d.id.as_str(), d.source.as_str(), d.lang.as_str()), ("uspto:US2024123A1", "uspto", "en"));
        assert_eq!(d.ipc, ["G06F 3/01"]);
        assert_eq!(d.meta["ipc_unparsed"], serde_json::json!(["Y02D10/00"]));
        assert_eq!(detect_lang("Vorrichtung zum Transport von band- oder streifenförmigem Material für eine Maschine"), "de");
        assert_eq!(detect_lang("Dispositif de transport de matériau en forme de bande pour une machine"), "fr");
        assert_eq!(detect_lang("半導体装置及びその製造方法"), "ja");
        assert_eq!(detect_lang("一种连接器"), "zh");
        assert_eq!(detect_lang("12345"), "");
    }

    #[test]
    fn truncated_array_is_an_error_with_position() {
        let path = "fixtures/bad/cnipa-truncated-array.json";
        let (fmt, recs) = read_all(path, &SourcesConfig::default());
        assert_eq!(fmt, Some("coretech-patents"));
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert!(matches!(&recs[0], Ok(Record::Doc(d)) if d.id == "cnipa:CN118523120A"));
        let e = recs[1].as_ref().unwrap_err();
        assert_eq!(e.kind, "truncated");
        assert!(e.position.file.ends_with(path));
        // The element that never ends: the second object.
        assert_eq!(e.position.offset, Some(text.rfind("{\"patent_id\"").unwrap() as u64), "{e}");
    }
}
