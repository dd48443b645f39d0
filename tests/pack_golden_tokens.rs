//! Token ids identical to HF `tokenizers` (Python) on every fixture text, for both engines:
//! the golden files come from `tests/golden/make_token_ids.py` (see there for the text
//! extraction rules, which this test repeats). Also: every Unicode code point, in several
//! contexts, gives the same ids on the fast path as on the HF path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use coretech::tokenize::{Engine, Tokenizer};
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tokenizers() -> &'static (Tokenizer, Tokenizer) {
    static T: OnceLock<(Tokenizer, Tokenizer)> = OnceLock::new();
    T.get_or_init(|| (Tokenizer::qwen25(Engine::Fast).unwrap(), Tokenizer::qwen25(Engine::Hf).unwrap()))
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn leaves(v: &serde_json::Value, ptr: String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => out.push((ptr, s.clone())),
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                leaves(v, format!("{ptr}/{}", escape(k)), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, format!("{ptr}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// (file, record) → texts in pointer byte order, by the rules of make_token_ids.py.
fn fixture_records() -> BTreeMap<(String, u64), Vec<String>> {
    let data = root().join("fixtures/data");
    let mut files = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "PROVENANCE.md" {
                files.push(p);
            }
        }
    }
    let mut out = BTreeMap::new();
    for p in files {
        let rel = p.strip_prefix(&data).unwrap().to_string_lossy().to_string();
        let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let records: Vec<serde_json::Value> = if name.ends_with(".jsonl") {
            text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
        } else if name.ends_with(".json") {
            match serde_json::from_str(&text).unwrap() {
                serde_json::Value::Array(a) => a,
                v => vec![v],
            }
        } else {
            out.insert((rel, 0), vec![text]);
            continue;
        };
        for (i, r) in records.iter().enumerate() {
            let mut l = Vec::new();
            leaves(r, String::new(), &mut l);
            l.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if !l.is_empty() {
                out.insert((rel.clone(), i as u64), l.into_iter().map(|(_, s)| s).collect());
            }
        }
    }
    out
}

fn digest(texts: &[String], ids: &[Vec<u32>]) -> (String, String) {
    let (mut t, mut i) = (Sha256::new(), Sha256::new());
    for (s, v) in texts.iter().zip(ids) {
        t.update((s.len() as u32).to_le_bytes());
        t.update(s.as_bytes());
        i.update((v.len() as u32).to_le_bytes());
        for x in v {
            i.update(x.to_le_bytes());
        }
    }
    (hex(&t.finalize()), hex(&i.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check_engine(tok: &Tokenizer, other: &Tokenizer) {
    let golden = std::fs::read_to_string(root().join("fixtures/golden/tokens/fixtures.jsonl")).unwrap();
    let records = fixture_records();
    let mut checked = 0usize;
    let mut tokens = 0u64;
    for line in golden.lines() {
        let g: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (g["file"].as_str().unwrap().to_string(), g["record"].as_u64().unwrap());
        let texts = records.get(&key).unwrap_or_else(|| panic!("fixture record {key:?} of the golden file not found"));
        assert_eq!(texts.len() as u64, g["texts"].as_u64().unwrap(), "{key:?}: text count");
        let ids = tok.encode_batch(texts).unwrap();
        let (ts, is) = digest(texts, &ids);
        assert_eq!(ts, g["texts_sha256"].as_str().unwrap(), "{key:?}: extracted texts differ from the golden script's");
        if is != g["ids_sha256"].as_str().unwrap() {
            // Point at the first differing text and token (against the other engine).
            for t in texts {
                let (a, b) = (tok.encode(t).unwrap(), other.encode(t).unwrap());
                if a != b {
                    let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
                    panic!(
                        "{key:?}: {} ids differ from golden; vs {}: first difference at token {at}: {:?} vs {:?} in text starting {:?}",
                        tok.engine(),
                        other.engine(),
                        &a[at..(at + 8).min(a.len())],
                        &b[at..(at + 8).min(b.len())],
                        t.chars().take(80).collect::<String>()
                    );
                }
            }
            panic!("{key:?}: {} ids differ from golden (both engines agree)", tok.engine());
        }
        tokens += ids.iter().map(|v| v.len() as u64).sum::<u64>();
        checked += 1;
    }
    assert_eq!(checked, records.len(), "every fixture record has a golden line");
    assert!(tokens > 2_000_000, "{tokens}");
}

#[test]
fn fast_engine_matches_python_on_every_fixture_text() {
    let (fast, hf) = tokenizers();
    check_engine(fast, hf);
}

#[test]
fn hf_engine_matches_python_on_every_fixture_text() {
    let (fast, hf) = tokenizers();
    check_engine(hf, fast);
}

#[test]
fn edge_cases_match_python_exactly() {
    let (fast, hf) = tokenizers();
    let golden = std::fs::read_to_string(root().join("fixtures/golden/tokens/edge_cases.jsonl")).unwrap();
    let mut n = 0;
    for line in golden.lines() {
        let g: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = g["text"].as_str().unwrap();
        let want: Vec<u32> = g["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(fast.encode(text).unwrap(), want, "fast: {text:?}");
        assert_eq!(hf.encode(text).unwrap(), want, "hf: {text:?}");
        n += 1;
    }
    assert!(n >= 25);
}

/// Every code point (surrogates excluded) in the contexts that exercise each alternative of the
/// split regex: after a space, doubled, before a letter, after a letter, before a newline.
#[test]
fn every_code_point_matches_the_hf_path() {
    let (fast, hf) = tokenizers();
    let chars: Vec<char> = (0..0x11_0000u32).filter_map(char::from_u32).collect();
    let ctx = |c: char| format!(" {c}{c}a{c}x\n{c} 1{c}'");
    for chunk in chars.chunks(8192) {
        let text: String = chunk.iter().map(|&c| ctx(c)).collect();
        if fast.encode(&text).unwrap() != hf.encode(&text).unwrap() {
            for &c in chunk {
                let t = ctx(c);
                assert_eq!(fast.encode(&t).unwrap(), hf.encode(&t).unwrap(), "code point U+{:04X} in {t:?}", c as u32);
            }
            panic!("chunk differs but no single code point does (context interaction)");
        }
    }
}

#[test]
fn tokenizer_files_load_plain_and_compressed() {
    let (fast, _) = tokenizers();
    let dir = tempfile::tempdir().unwrap();
    let zst = std::fs::read(root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst")).unwrap();
    let plain = zstd::decode_all(&zst[..]).unwrap();
    let p = dir.path().join("tokenizer.json");
    std::fs::write(&p, &plain).unwrap();
    let t = Tokenizer::from_file(&p, Engine::Auto).unwrap();
    assert_eq!(t.engine(), "fast");
    assert_eq!(t.sha256(), fast.sha256());
    assert_eq!(t.encode("H04L 29/06 专利").unwrap(), fast.encode("H04L 29/06 专利").unwrap());
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, &plain[..plain.len() / 2]).unwrap();
    let e = Tokenizer::from_file(&bad, Engine::Auto).unwrap_err().to_string();
    assert!(e.contains("broken.json"), "{e}");
}
