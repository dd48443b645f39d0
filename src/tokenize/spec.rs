//! Reads the parts of a `tokenizer.json` the fast path needs, with typed serde and strings
//! borrowed from the text (a generic `serde_json::Value` of the 5 MB Qwen file takes several
//! times longer), and checks that the tokenizer is byte-level BPE of the Qwen2 kind.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::pretok;

/// Why a tokenizer cannot use the fast path (it then runs on HF `tokenizers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// The top level of `tokenizer.json`; the small sections stay generic values.
#[derive(Deserialize)]
pub struct TokenizerJson<'a> {
    #[serde(default)]
    normalizer: Option<Value>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    post_processor: Option<Value>,
    #[serde(default)]
    decoder: Option<Value>,
    #[serde(default)]
    truncation: Option<Value>,
    #[serde(default)]
    padding: Option<Value>,
    #[serde(default, borrow)]
    added_tokens: Vec<AddedToken<'a>>,
    #[serde(borrow)]
    model: Model<'a>,
}

#[derive(Deserialize)]
struct AddedToken<'a> {
    id: u32,
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    normalized: bool,
}

#[derive(Deserialize)]
struct Model<'a> {
    #[serde(rename = "type", default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    byte_fallback: Option<bool>,
    #[serde(default)]
    ignore_merges: Option<bool>,
    #[serde(default, borrow)]
    continuing_subword_prefix: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    end_of_word_suffix: Option<Cow<'a, str>>,
    #[serde(borrow)]
    vocab: Vocab<'a>,
    #[serde(borrow)]
    merges: Vec<Merge<'a>>,
}

/// `vocab` in file order, without building a map.
struct Vocab<'a>(Vec<(Cow<'a, str>, u32)>);

impl<'de: 'a, 'a> Deserialize<'de> for Vocab<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Vocab<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of token strings to ids")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Vocab<'a>, M::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, id)) = m.next_entry::<Str<'a>, u32>()? {
                    v.push((k.0, id));
                }
                Ok(Vocab(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string borrowed from the JSON text when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// One merge: `"a b"` (older files) or `["a", "b"]`.
struct Merge<'a>(Cow<'a, str>, Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Merge<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Merge<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge: \"a b\" or [\"a\", \"b\"]")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Merge<'a>, E> {
                let (a, b) = s.split_once(' ').ok_or_else(|| E::custom(format!("merge {s:?} is not \"a b\"")))?;
                Ok(Merge(Cow::Borrowed(a), Cow::Borrowed(b)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merge<'a>, E> {
                let (a, b) = s.split_once(' ').ok_or_else(|| E::custom(format!("merge {s:?} is not \"a b\"")))?;
                Ok(Merge(Cow::Owned(a.to_string()), Cow::Owned(b.to_string())))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Merge<'a>, S::Error> {
                let a: Str<'a> = s.next_element()?.ok_or_else(|| de::Error::custom("merge pair without a first part"))?;
                let b: Str<'a> = s.next_element()?.ok_or_else(|| de::Error::custom("merge pair without a second part"))?;
                if s.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("merge with more than two parts"));
                }
                Ok(Merge(a.0, b.0))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// What the fast path is built from.
pub struct Spec {
    /// Apply NFC before splitting.
    pub nfc: bool,
    /// Bytes of each vocab id, concatenated in id order (an id the vocab skips has none).
    pub bytes: Vec<u8>,
    /// Where each id's bytes start in `bytes`, plus the end.
    pub starts: Vec<u32>,
    /// Merges in rank order: `(left id, right id, merged id)`.
    pub merges: Vec<(u32, u32, u32)>,
    /// Added tokens: content, id.
    pub added: Vec<(String, u32)>,
    /// Vocabulary size with the added tokens, as HF counts it.
    pub vocab_size: usize,
}

fn field<'v>(v: &'v Value, key: &str) -> &'v Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn is(v: &Value, key: &str, want: &str) -> bool {
    field(v, key).as_str() == Some(want)
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), Unsupported> {
    if ok {
        Ok(())
    } else {
        Err(Unsupported(why()))
    }
}

/// GPT-2's byte-level alphabet: the char that stands for each byte in `vocab` and `merges`.
pub fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).expect("Latin-1 char")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("Latin Extended-A char")
        };
    }
    map
}

/// The byte each alphabet char stands for (chars of the alphabet are all below U+0144).
fn char_bytes() -> [u16; 0x144] {
    let mut t = [u16::MAX; 0x144];
    for (b, c) in byte_chars().iter().enumerate() {
        t[*c as usize] = b as u16;
    }
    t
}

/// The bytes of a byte-level token string, or `None` if a char is not in the alphabet.
pub fn token_bytes(s: &str, table: &[u16; 0x144]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let b = *table.get(c as usize)?;
        if b == u16::MAX {
            return None;
        }
        out.push(b as u8);
    }
    Some(out)
}

impl Spec {
    /// Bytes of vocab id `id` (`None` if the vocab skips it).
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        let (s, e) = (*self.starts.get(id as usize)?, *self.starts.get(id as usize + 1)?);
        (e > s).then(|| &self.bytes[s as usize..e as usize])
    }

    /// Number of vocab ids (the largest plus one).
    pub fn vocab_len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Reads a `tokenizer.json`, or says why the fast path does not apply. Invalid JSON is also
    /// "unsupported" here: HF `tokenizers` reports it properly.
    pub fn parse(json: &[u8]) -> Result<Spec, Unsupported> {
        let file: TokenizerJson = serde_json::from_slice(json).map_err(|e| Unsupported(format!("tokenizer.json: {e}")))?;
        // Normalizer: none or NFC.
        let nfc = match &file.normalizer {
            None => false,
            Some(n) if is(n, "type", "NFC") => true,
            Some(n) => return Err(Unsupported(format!("normalizer {:?} (fast path: none or NFC)", field(n, "type")))),
        };
        // Pre-tokenizer: Split(Qwen2 regex, Isolated) then ByteLevel without regex or prefix space.
        let pre = file.pre_tokenizer.as_ref().unwrap_or(&Value::Null);
        let seq = field(pre, "pretokenizers").as_array().filter(|_| is(pre, "type", "Sequence"));
        let Some([split, bl]) = seq.map(|s| s.as_slice()) else {
            return Err(Unsupported("pre_tokenizer is not Sequence[Split, ByteLevel]".into()));
        };
        check(is(split, "type", "Split"), || "first pre-tokenizer is not Split".into())?;
        check(field(field(split, "pattern"), "Regex").as_str() == Some(pretok::QWEN2_PATTERN), || {
            "Split pattern is not the Qwen2 regex".into()
        })?;
        check(is(split, "behavior", "Isolated") && field(split, "invert") == false, || "Split is not Isolated/non-inverted".into())?;
        check(is(bl, "type", "ByteLevel") && field(bl, "add_prefix_space") == false && field(bl, "use_regex") == false, || {
            "second pre-tokenizer is not ByteLevel(add_prefix_space=false, use_regex=false)".into()
        })?;
        // Post-processing adds nothing to the ids; decoding is byte-level.
        let post = file.post_processor.as_ref().unwrap_or(&Value::Null);
        check(post.is_null() || is(post, "type", "ByteLevel"), || "post_processor is not ByteLevel".into())?;
        let dec = file.decoder.as_ref().unwrap_or(&Value::Null);
        check(is(dec, "type", "ByteLevel"), || "decoder is not ByteLevel".into())?;
        check(file.truncation.is_none() && file.padding.is_none(), || "truncation/padding configured".into())?;
        // Model: plain byte-level BPE.
        let m = &file.model;
        check(m.kind.as_deref() == Some("BPE"), || "model is not BPE".into())?;
        check(m.dropout.is_none() && m.byte_fallback != Some(true) && m.ignore_merges != Some(true), || {
            "BPE dropout, byte_fallback or ignore_merges set".into()
        })?;
        check(m.continuing_subword_prefix.as_deref().unwrap_or("").is_empty(), || "BPE continuing_subword_prefix set".into())?;
        check(m.end_of_word_suffix.as_deref().unwrap_or("").is_empty(), || "BPE end_of_word_suffix set".into())?;

        let table = char_bytes();
        // Flat token bytes in id order: lengths first (one byte per alphabet char), then fill.
        let n = m.vocab.0.iter().map(|(_, id)| *id as usize + 1).max().unwrap_or(0);
        let mut len = vec![0u32; n];
        for (tok, id) in &m.vocab.0 {
            if tok.is_empty() || len[*id as usize] != 0 {
                return Err(Unsupported(format!("vocab id {id} is empty or appears twice")));
            }
            len[*id as usize] = tok.chars().count() as u32;
        }
        let mut starts = Vec::with_capacity(n + 1);
        let mut at = 0u32;
        for l in &len {
            starts.push(at);
            at += l;
        }
        starts.push(at);
        let mut bytes = vec![0u8; at as usize];
        let mut by_str: rustc_hash::FxHashMap<&str, u32> = Default::default();
        by_str.reserve(m.vocab.0.len());
        for (tok, id) in &m.vocab.0 {
            let at = starts[*id as usize] as usize;
            for (slot, c) in bytes[at..].iter_mut().zip(tok.chars()) {
                match table.get(c as usize) {
                    Some(&b) if b != u16::MAX => *slot = b as u8,
                    _ => return Err(Unsupported(format!("vocab token {tok:?} is not byte-level"))),
                }
            }
            by_str.insert(tok, *id);
        }
        let mut merges = Vec::with_capacity(m.merges.len());
        let mut joined = String::new();
        for Merge(a, b) in &m.merges {
            let (Some(&ia), Some(&ib)) = (by_str.get(a.as_ref()), by_str.get(b.as_ref())) else {
                return Err(Unsupported(format!("merge {a:?} {b:?} names a token not in the vocab")));
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let Some(&im) = by_str.get(joined.as_str()) else {
                return Err(Unsupported(format!("merge {a:?} {b:?} makes a token not in the vocab")));
            };
            merges.push((ia, ib, im));
        }
        // Added tokens: matched on the raw text, leftmost-longest, as HF does for tokens with
        // `normalized: false` and no stripping.
        let mut added = Vec::new();
        for t in &file.added_tokens {
            check(!t.lstrip && !t.rstrip && !t.single_word && !t.normalized, || {
                format!("added token {:?} strips, matches single words or is normalized", t.content)
            })?;
            added.push((t.content.to_string(), t.id));
        }
        let overlapping = added.iter().filter(|(c, _)| by_str.contains_key(c.as_str())).count();
        let vocab_size = m.vocab.0.len() + added.len() - overlapping;
        Ok(Spec { nfc, bytes, starts, merges, added, vocab_size })
    }
}
