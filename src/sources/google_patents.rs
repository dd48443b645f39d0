//! Google-Patents record: one Python dict repr per file (CoreTech's raw CN/US/EP/JP crawl).
//!
//! The crawl (liuquan-ustc-qmai/CN-US-EU-JP-Patent_2020-2025, `extract_fields.py`) writes
//! `str(patent_info)`: a single-line Python dict with 28 fields — `publication_number`, `title`,
//! `authority` (`['CN', 'China']`), `abstract`, dates (`publication_date` …, `YYYY-MM-DD`),
//! `classifications` (`[{'code': 'H04W24/02', 'description': '…'}]`), `description`, `claims`
//! (one text), counts and citation lists; missing strings are `None`, missing counts `0`.
//!
//! The record becomes a [`Patent`] whose rendering is CoreTech's CPT text: title, abstract, the
//! classification codes with Google's descriptions as IPC titles, description. Codes that are not
//! IPC-like symbols (CPC `Y` section) cannot be normalized and go to `meta.other_classifications`
//! instead. Claims are kept as the one text Google Patents gives (it does not delimit claims).

use crate::doc::{Meta, Patent, Record};
use crate::error::{ReadError, ReadErrorKind};
use crate::ipc::normalize;

use super::cnipa::{detect_lang, office_lang, office_source};
use super::{Format, Framing, ParseContext, RawRecord};
use crate::io::sniff;
use crate::io::text::{decode, record_offset};

use literal::Py;

/// Google-Patents record: one Python dict repr per file (CoreTech's raw CN/US/EP/JP crawl).
pub struct GooglePatents;

impl Format for GooglePatents {
    fn name(&self) -> &'static str {
        "google-patents"
    }
    fn source(&self) -> &'static str {
        "cnipa"
    }
    fn sniff(&self, head: &[u8]) -> bool {
        let h = sniff::trimmed(head);
        h.starts_with(b"{'") && sniff::contains(h, b"'publication_number': ")
    }
    fn framing(&self) -> Framing {
        Framing::Whole
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
        let value = literal::parse(&text)
            .map_err(|e| raw.error_at(record_offset(&raw.bytes, &text, e.offset as u64), ReadErrorKind::Python, e.message))?;
        let Py::Dict(entries) = value else {
            return Err(raw.error(ReadErrorKind::Shape, format!("expected a dict, found {}", value.kind())));
        };
        to_patent(entries).map_err(|m| raw.error(ReadErrorKind::Shape, m)).map(Record::Patent)
    }
}

/// Fields that go into the patent's own fields rather than `meta`.
const USED: [&str; 7] = ["publication_number", "title", "abstract", "description", "claims", "classifications", "publication_date"];

fn to_patent(entries: Vec<(Py, Py)>) -> Result<Patent, String> {
    let get = |k: &str| entries.iter().find(|(key, _)| matches!(key, Py::Str(s) if s == k)).map(|(_, v)| v);
    let opt_str = |k: &str| -> Result<String, String> {
        match get(k) {
            None | Some(Py::None) => Ok(String::new()),
            Some(Py::Str(s)) => Ok(s.trim().to_string()),
            Some(v) => Err(format!("field '{k}' is {}, expected a string or None", v.kind())),
        }
    };
    let number = opt_str("publication_number")?;
    if number.is_empty() {
        return Err("field 'publication_number' is missing or None".into());
    }
    let office = match get("authority") {
        Some(Py::List(v)) => match v.first() {
            Some(Py::Str(cc)) => cc.clone(),
            _ => number.clone(),
        },
        _ => number.clone(),
    };
    let title = opt_str("title")?;
    let abstract_text = opt_str("abstract")?;
    let description = opt_str("description")?;
    let claims = opt_str("claims")?;
    let mut meta = Meta::new();
    let date = {
        let d = opt_str("publication_date")?;
        super::epo::iso_date(&d, &mut meta)
    };

    let mut ipc = Vec::new();
    let mut ipc_titles = Vec::new();
    let mut other = Vec::new();
    match get("classifications") {
        None | Some(Py::None) => {}
        Some(Py::List(items)) => {
            for item in items {
                let Py::Dict(fields) = item else {
                    return Err(format!("a classification is {}, expected a dict {{'code', 'description'}}", item.kind()));
                };
                let field = |k: &str| match fields.iter().find(|(key, _)| matches!(key, Py::Str(s) if s == k)).map(|(_, v)| v) {
                    None | Some(Py::None) => Ok(None),
                    Some(Py::Str(s)) => Ok(Some(s.as_str())),
                    Some(v) => Err(format!("classification '{k}' is {}, expected a string or None", v.kind())),
                };
                let (code, desc) = (field("code")?, field("description")?);
                let Some(code) = code else { continue };
                match normalize(code) {
                    Ok(n) if ipc.contains(&n) => {}
                    Ok(n) => {
                        ipc.push(n);
                        ipc_titles.push(desc.unwrap_or_default().to_string());
                    }
                    Err(_) => other.push(serde_json::json!({ "code": code, "description": desc })),
                }
            }
        }
        Some(v) => return Err(format!("field 'classifications' is {}, expected a list", v.kind())),
    }
    if !other.is_empty() {
        meta.insert("other_classifications".into(), other.into());
    }
    for (k, v) in &entries {
        let key = match k {
            Py::Str(s) => s.clone(),
            other => other.to_json().to_string(),
        };
        if !USED.contains(&key.as_str()) {
            meta.insert(key, v.to_json());
        }
    }
    let lang = match detect_lang(&format!("{title}\n{abstract_text}")) {
        "" => office_lang(&office),
        l => l,
    };
    Ok(Patent {
        source: office_source(&office),
        number,
        lang: lang.into(),
        title,
        abstract_text,
        ipc,
        ipc_titles,
        date,
        description,
        claims: if claims.is_empty() { Vec::new() } else { vec![claims] },
        meta,
    })
}

/// A small, strict parser of Python literals as `repr`/`str` writes them (dicts, lists,
/// tuples, sets, strings, numbers, `True`/`False`/`None`). Hand-written: no crate parses
/// Python reprs, and JSON parsers reject single quotes and Python's escapes. It never panics on
/// malformed input and reports the byte offset of the problem; nesting is limited to
/// [`MAX_DEPTH`](literal::MAX_DEPTH) so hostile input cannot exhaust the stack.
pub mod literal {
    /// A Python literal value.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Py {
        /// `None`.
        None,
        /// `True` / `False`.
        Bool(bool),
        /// An integer that fits in 64 bits.
        Int(i64),
        /// A float.
        Float(f64),
        /// A string.
        Str(String),
        /// `[…]`.
        List(Vec<Py>),
        /// `(…)`.
        Tuple(Vec<Py>),
        /// `{a, b}`.
        Set(Vec<Py>),
        /// `{k: v}`, entries in order.
        Dict(Vec<(Py, Py)>),
    }

    impl Py {
        /// What kind of value this is, for messages.
        pub fn kind(&self) -> &'static str {
            match self {
                Py::None => "None",
                Py::Bool(_) => "a bool",
                Py::Int(_) => "an int",
                Py::Float(_) => "a float",
                Py::Str(_) => "a string",
                Py::List(_) => "a list",
                Py::Tuple(_) => "a tuple",
                Py::Set(_) => "a set",
                Py::Dict(_) => "a dict",
            }
        }

        /// The value as JSON (tuples and sets as arrays, non-string keys as their JSON text).
        pub fn to_json(&self) -> serde_json::Value {
            use serde_json::Value;
            match self {
                Py::None => Value::Null,
                Py::Bool(b) => (*b).into(),
                Py::Int(i) => (*i).into(),
                Py::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or_else(|| Value::String(f.to_string())),
                Py::Str(s) => s.clone().into(),
                Py::List(v) | Py::Tuple(v) | Py::Set(v) => v.iter().map(Py::to_json).collect::<Vec<_>>().into(),
                Py::Dict(entries) => entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Py::Str(s) => s.clone(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            }
        }
    }

    /// A syntax error at a byte offset of the parsed text.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PyError {
        /// Byte offset into the parsed text.
        pub offset: usize,
        /// What was expected and what was found.
        pub message: String,
    }

    /// Deepest nesting of containers accepted.
    pub const MAX_DEPTH: usize = 64;

    /// Parses one literal, with only whitespace around it.
    pub fn parse(text: &str) -> Result<Py, PyError> {
        let mut p = Parser { s: text, b: text.as_bytes(), i: 0, depth: 0 };
        p.ws();
        let v = p.value()?;
        p.ws();
        if p.i < p.b.len() {
            return Err(p.err(format!("unexpected {} after the value", p.found())));
        }
        Ok(v)
    }

    /// Container items: a value, and for dict entries the value after the `:`.
    type Items = Vec<(Py, Option<Py>)>;

    struct Parser<'a> {
        s: &'a str,
        b: &'a [u8],
        i: usize,
        depth: usize,
    }

    impl Parser<'_> {
        fn err(&self, message: impl Into<String>) -> PyError {
            PyError { offset: self.i, message: message.into() }
        }

        /// What stands at the current position, for messages: up to 16 characters.
        fn found(&self) -> String {
            let rest: String = self.s[self.i..].chars().take(16).collect();
            if rest.is_empty() {
                "end of input".into()
            } else {
                format!("`{rest}`")
            }
        }

        fn ws(&mut self) {
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }

        fn value(&mut self) -> Result<Py, PyError> {
            match self.b.get(self.i) {
                None => Err(self.err("unexpected end of input, expected a value (truncated?)")),
                Some(b'\'' | b'"') => self.string().map(Py::Str),
                Some(b'u' | b'U') if matches!(self.b.get(self.i + 1), Some(b'\'' | b'"')) => {
                    self.i += 1;
                    self.string().map(Py::Str)
                }
                Some(b'[') => self.container(b']', "list").map(|(v, _)| Py::List(v.into_iter().map(|(k, _)| k).collect())),
                Some(b'(') => self.container(b')', "tuple").map(|(v, _)| Py::Tuple(v.into_iter().map(|(k, _)| k).collect())),
                Some(b'{') => match self.container(b'}', "dict")? {
                    (v, true) => Ok(Py::Dict(v.into_iter().map(|(k, val)| (k, val.unwrap_or(Py::None))).collect())),
                    (v, false) => Ok(Py::Set(v.into_iter().map(|(k, _)| k).collect())),
                },
                Some(c) if c.is_ascii_digit() || *c == b'-' || *c == b'+' || *c == b'.' => self.number(),
                Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                    let start = self.i;
                    while self.i < self.b.len() && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_') {
                        self.i += 1;
                    }
                    match &self.s[start..self.i] {
                        "None" => Ok(Py::None),
                        "True" => Ok(Py::Bool(true)),
                        "False" => Ok(Py::Bool(false)),
                        name => {
                            let e = format!("unexpected name {name:?} (only None, True, False and literals are allowed)");
                            self.i = start;
                            Err(self.err(e))
                        }
                    }
                }
                Some(_) => Err(self.err(format!("unexpected {}, expected a value", self.found()))),
            }
        }

        /// Items of a container up to `close`. For `{`, entries are `key: value` (a dict,
        /// returned with `true`) or bare items (a set); mixing them is an error.
        fn container(&mut self, close: u8, what: &str) -> Result<(Items, bool), PyError> {
            if self.depth >= MAX_DEPTH {
                return Err(self.err(format!("containers nested deeper than {MAX_DEPTH}")));
            }
            self.depth += 1;
            let open_at = self.i;
            self.i += 1;
            let mut items = Vec::new();
            let mut dict: Option<bool> = None;
            let mut trailing_comma = false;
            loop {
                self.ws();
                match self.b.get(self.i) {
                    None => return Err(PyError { offset: open_at, message: format!("{what} opened here is never closed (truncated?)") }),
                    Some(&c) if c == close => {
                        self.i += 1;
                        break;
                    }
                    Some(_) if !items.is_empty() && !trailing_comma => {
                        return Err(self.err(format!("expected ',' or '{}' in {what}, found {}", close as char, self.found())));
                    }
                    Some(_) => {}
                }
                let key = self.value()?;
                self.ws();
                let is_pair = close == b'}' && self.b.get(self.i) == Some(&b':');
                let item = if is_pair {
                    if dict == Some(false) {
                        return Err(self.err("':' in a set"));
                    }
                    self.i += 1;
                    self.ws();
                    (key, Some(self.value()?))
                } else {
                    if dict == Some(true) {
                        return Err(self.err(format!("expected ':' after a dict key, found {}", self.found())));
                    }
                    (key, None)
                };
                dict = Some(is_pair);
                items.push(item);
                self.ws();
                trailing_comma = self.b.get(self.i) == Some(&b',');
                if trailing_comma {
                    self.i += 1;
                }
            }
            self.depth -= 1;
            // `(x)` is a parenthesized value in Python; only `(x,)` is a tuple. Accept both.
            Ok((items, dict.unwrap_or(close == b'}')))
        }

        fn number(&mut self) -> Result<Py, PyError> {
            let start = self.i;
            if matches!(self.b.get(self.i), Some(b'-' | b'+')) {
                self.i += 1;
            }
            let mut float = false;
            while let Some(&c) = self.b.get(self.i) {
                match c {
                    b'0'..=b'9' => {}
                    b'.' | b'e' | b'E' => float = true,
                    b'-' | b'+' if matches!(self.b[self.i - 1], b'e' | b'E') => {}
                    _ => break,
                }
                self.i += 1;
            }
            let s: &str = self.s;
            let t = &s[start..self.i];
            let bad = || PyError { offset: start, message: format!("malformed number {t:?}") };
            if float {
                t.parse::<f64>().map(Py::Float).map_err(|_| bad())
            } else {
                match t.parse::<i64>() {
                    Ok(i) => Ok(Py::Int(i)),
                    Err(e) if matches!(e.kind(), std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow) => {
                        Err(PyError { offset: start, message: format!("integer {t} does not fit in 64 bits") })
                    }
                    Err(_) => Err(bad()),
                }
            }
        }

        /// A quoted string at `self.i` (the quote), with Python's escapes.
        fn string(&mut self) -> Result<String, PyError> {
            let q = self.b[self.i];
            let open_at = self.i;
            if self.b[self.i..].starts_with(&[q, q, q]) {
                return Err(self.err("triple-quoted strings are not produced by repr and not accepted"));
            }
            self.i += 1;
            let mut out = String::new();
            loop {
                let rest = &self.b[self.i..];
                let Some(k) = rest.iter().position(|&c| c == q || c == b'\\' || c == b'\n') else {
                    return Err(PyError { offset: open_at, message: "string opened here is never closed (truncated?)".into() });
                };
                // `q`, `\` and `\n` are ASCII, so `i + k` is a char boundary.
                out.push_str(&self.s[self.i..self.i + k]);
                self.i += k;
                match self.b[self.i] {
                    b'\n' => return Err(PyError { offset: open_at, message: "string opened here runs past the end of the line".into() }),
                    c if c == q => {
                        self.i += 1;
                        return Ok(out);
                    }
                    _ => self.escape(&mut out)?,
                }
            }
        }

        /// One escape sequence at `self.i` (the backslash).
        fn escape(&mut self, out: &mut String) -> Result<(), PyError> {
            let at = self.i;
            self.i += 1;
            let Some(&c) = self.b.get(self.i) else {
                return Err(PyError { offset: at, message: "input ends inside an escape sequence (truncated?)".into() });
            };
            self.i += 1;
            let simple = match c {
                b'\\' => Some('\\'),
                b'\'' => Some('\''),
                b'"' => Some('"'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                b'a' => Some('\u{7}'),
                b'b' => Some('\u{8}'),
                b'f' => Some('\u{c}'),
                b'v' => Some('\u{b}'),
                _ => None,
            };
            if let Some(ch) = simple {
                out.push(ch);
                return Ok(());
            }
            let code = match c {
                b'\n' => return Ok(()), // line continuation
                b'x' => self.hex(2, at)?,
                b'u' => self.hex(4, at)?,
                b'U' => self.hex(8, at)?,
                b'0'..=b'7' => {
                    let mut v = u32::from(c - b'0');
                    for _ in 0..2 {
                        match self.b.get(self.i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                self.i += 1;
                            }
                            _ => break,
                        }
                    }
                    v
                }
                b'N' => return Err(PyError { offset: at, message: "named escapes \\N{…} are not supported".into() }),
                _ => {
                    // Python keeps an unknown escape as written.
                    self.i = at + 1;
                    out.push('\\');
                    return Ok(());
                }
            };
            match char::from_u32(code) {
                Some(ch) => {
                    out.push(ch);
                    Ok(())
                }
                None => {
                    Err(PyError { offset: at, message: format!("escape yields U+{code:04X}, which is not a character (lone surrogate?)") })
                }
            }
        }

        fn hex(&mut self, n: usize, at: usize) -> Result<u32, PyError> {
            let digits = self.b.get(self.i..self.i + n).filter(|d| d.iter().all(u8::is_ascii_hexdigit));
            let Some(d) = digits else {
                return Err(PyError { offset: at, message: format!("escape needs {n} hex digits") });
            };
            self.i += n;
            // Hex digits are ASCII, so this is valid UTF-8 and a valid number.
            Ok(u32::from_str_radix(std::str::from_utf8(d).unwrap_or("0"), 16).unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::literal::{parse, Py};
    use super::*;
    use crate::render::{render_patent, RenderConfig};
    use crate::sources::epo::test_support::{golden, read_all};
    use crate::sources::SourcesConfig;

    const SAMPLE: &str = "fixtures/handmade/google-patents/CN118524411A.txt";

    fn patent_of(src: &str) -> Result<Patent, ReadError> {
        let raw = RawRecord { file: "p.txt".into(), index: 0, offset: 0, line: 1, bytes: src.as_bytes().to_vec() };
        GooglePatents.parse(&raw, &ParseContext { cfg: &SourcesConfig::default() }).map(|r| match r {
            Record::Patent(p) => p,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn literals() {
        let v = parse(r#"{'a': 'it\'s', "b": "say \"x\" \\ \n\t\x41\u00e9\U0001F600\101", 'c': [1, -2, 3.5, 1e3, True, False, None], 'd': ('t',), 'e': {1, 2}, 'f': {}, 'g': [], 'h': {'n': {'m': ()}},}"#).unwrap();
        let Py::Dict(e) = &v else { panic!() };
        assert_eq!(e[0], (Py::Str("a".into()), Py::Str("it's".into())));
        assert_eq!(e[1].1, Py::Str("say \"x\" \\ \n\tAé😀A".into()));
        assert_eq!(
            e[2].1,
            Py::List(vec![Py::Int(1), Py::Int(-2), Py::Float(3.5), Py::Float(1000.0), Py::Bool(true), Py::Bool(false), Py::None])
        );
        assert_eq!(e[3].1, Py::Tuple(vec![Py::Str("t".into())]));
        assert_eq!(e[4].1, Py::Set(vec![Py::Int(1), Py::Int(2)]));
        assert_eq!((&e[5].1, &e[6].1), (&Py::Dict(vec![]), &Py::List(vec![])));
        assert_eq!(v.to_json()["h"], serde_json::json!({"n": {"m": []}}));
        // Python's str() of a string with both quote kinds, NBSP and an ideographic space.
        assert_eq!(parse(r#"'a\xa0b\u3000c "q" \'s\''"#).unwrap(), Py::Str("a\u{a0}b\u{3000}c \"q\" 's'".into()));
    }

    #[test]
    fn malformed_literals_report_offsets() {
        for (src, offset, needle) in [
            ("{'a': 1 'b': 2}", 8, "expected ',' or '}'"),
            ("{'a': 'x}", 6, "never closed"),
            ("{'a': [1, 2}", 11, "expected ',' or ']'"),
            ("{'a': [1, 2", 6, "list opened here is never closed"),
            ("{'a': nan}", 6, "unexpected name \"nan\""),
            ("{'a': 1, 'b'}", 12, "expected ':' after a dict key"),
            ("{'a': 1} x", 9, "after the value"),
            ("{'a': '\\ud800'}", 7, "lone surrogate"),
            ("{'a': '\\x4'}", 7, "2 hex digits"),
            ("{'a': 99999999999999999999}", 6, "64 bits"),
            ("{'a': 'line\nbreak'}", 6, "past the end of the line"),
            ("", 0, "end of input"),
        ] {
            let e = parse(src).unwrap_err();
            assert_eq!(e.offset, offset, "{src:?}: {e:?}");
            assert!(e.message.contains(needle), "{src:?}: {e:?}");
        }
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn every_truncation_of_the_sample_is_an_error() {
        let text = std::fs::read_to_string(format!("{}/{SAMPLE}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(parse(&text).is_ok());
        let cuts: Vec<usize> = (0..text.len()).filter(|&i| text.is_char_boundary(i)).step_by(13).collect();
        for i in cuts {
            let e = parse(&text[..i]).unwrap_err();
            assert!(e.offset <= i, "cut {i}: {e:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn parser_never_panics_on_python_like_input(s in "[{}\\[\\]():,'\" \\\\uxUN0-9a-fTrueFalsNon.eE+\\-\n]{0,80}") {
            if let Err(e) = parse(&s) {
                proptest::prop_assert!(e.offset <= s.len());
            }
        }
    }

    #[test]
    fn record_fields() {
        let p = patent_of("{'publication_number': 'US20240023456A1', 'title': 'Semiconductor device and method for fabricating the same', 'authority': ['US', 'United States'], 'abstract': 'A method for fabricating a semiconductor device includes the steps of forming a layer.', 'publication_date': '2024-01-18', 'classifications': [{'code': 'H10N50/01', 'description': 'Manufacture or treatment'}, {'code': 'Y02D10/00', 'description': 'Energy efficient computing'}, {'code': 'H10N50/01', 'description': 'dup'}, {'code': None, 'description': None}], 'description': 'BACKGROUND\\n1. Field', 'claims': 'What is claimed is:\\n \\n 1. A method.', 'n_claims': 19, 'cited_by': None, 'inventors': ['Hui-Lin WANG']}").unwrap();
        assert_eq!(
            (p.source.as_str(), p.number.as_str(), p.lang.as_str(), p.date.as_str()),
            ("uspto", "US20240023456A1", "en", "2024-01-18")
        );
        assert_eq!((p.ipc.clone(), p.ipc_titles.clone()), (vec!["H10N 50/01".to_string()], vec!["Manufacture or treatment".to_string()]));
        assert_eq!(
            p.meta["other_classifications"],
            serde_json::json!([{"code": "Y02D10/00", "description": "Energy efficient computing"}])
        );
        assert_eq!(p.description, "BACKGROUND\n1. Field");
        assert_eq!(p.claims, ["What is claimed is:\n \n 1. A method."]);
        assert_eq!((p.meta["n_claims"].clone(), p.meta["cited_by"].clone()), (serde_json::json!(19), serde_json::Value::Null));
        assert_eq!(p.meta["authority"], serde_json::json!(["US", "United States"]));
        assert!(p.meta.get("title").is_none() && p.meta.get("description").is_none());
        let e = patent_of("{'publication_number': None, 'title': 'x'}").unwrap_err();
        assert_eq!(e.kind, "shape");
        let e = patent_of("{'publication_number': 'CN1A', 'title': ['x']}").unwrap_err();
        assert!(e.message.contains("'title' is a list"), "{e}");
        let e = patent_of("['publication_number']").unwrap_err();
        assert!(e.message.contains("expected a dict, found a list"), "{e}");
    }

    #[test]
    fn sniffing_is_by_content() {
        let read = |p: &str| std::fs::read(format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(GooglePatents.sniff(&read(SAMPLE)));
        for other in [
            "fixtures/data/cnipa/coretech_Patent_demo.json",
            "fixtures/data/wudao/coretech_wudao_demo.jsonl",
            "fixtures/data/ipc/coretech_ipcDes_demo.jsonl",
            "fixtures/data/uspto/US03937375-aps-greenbook.txt",
        ] {
            assert!(!GooglePatents.sniff(&read(other)), "{other}");
        }
        assert!(!GooglePatents.sniff(b"{\"publication_number\": \"CN1A\"}"), "JSON is not a Python repr");
    }

    /// The hand-made record, rebuilt from the first CoreTech demo record, renders into exactly
    /// that record's CoreTech text.
    #[test]
    fn handmade_record_renders_coretech_text() {
        let (fmt, recs) = read_all(SAMPLE, &SourcesConfig::default());
        assert_eq!(fmt, Some("google-patents"));
        assert_eq!(recs.len(), 1);
        let Ok(Record::Patent(p)) = &recs[0] else { panic!("{recs:?}") };
        assert_eq!((p.source.as_str(), p.number.as_str(), p.lang.as_str()), ("cnipa", "CN118524411A", "zh"));
        let doc = render_patent(p, &RenderConfig::default(), None);
        let demo: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{}/fixtures/data/cnipa/coretech_Patent_demo.json", env!("CARGO_MANIFEST_DIR"))).unwrap(),
        )
        .unwrap();
        assert_eq!(demo[0]["patent_id"], "CN118524411A");
        assert_eq!(doc.text, demo[0]["text"].as_str().unwrap());
        assert_eq!(doc.id, "cnipa:CN118524411A");
        golden("cnipa/CN118524411A-google-patents.txt", &(doc.text + "\n"));
    }

    #[test]
    fn malformed_dict_is_an_error_with_position() {
        let path = "fixtures/bad/google-malformed-dict.txt";
        let (fmt, recs) = read_all(path, &SourcesConfig::default());
        assert_eq!(fmt, Some("google-patents"));
        let e = recs[0].as_ref().unwrap_err();
        assert_eq!(e.kind, "python");
        assert!(e.position.file.ends_with(path));
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // The missing comma: `'abstract'` follows the title's string directly.
        assert_eq!(e.position.offset, Some(text.find(" 'abstract'").unwrap() as u64 + 1), "{e}");
        assert!(e.message.contains("expected ',' or '}'"), "{e}");
    }
}
