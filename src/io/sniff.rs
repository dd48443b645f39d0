//! Helpers for recognising a stream by its first bytes (never by its name): BOM and blank
//! skipping, the root element of an XML head, and the layout and first keys of a JSON head.

/// The head with a UTF-8 BOM and leading whitespace removed.
pub fn trimmed(head: &[u8]) -> &[u8] {
    let h = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let n = h.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &h[n..]
}

/// Whether `needle` occurs in `head`.
pub fn contains(head: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(head, needle).is_some()
}

/// The first line of the trimmed head.
pub fn first_line(head: &[u8]) -> &[u8] {
    let h = trimmed(head);
    match memchr::memchr(b'\n', h) {
        Some(i) => &h[..i],
        None => h,
    }
}

/// The name of the root element of the XML document whose first bytes are `head`: the DOCTYPE
/// name if there is one, else the first element's name (declaration, processing instructions
/// and comments skipped). `None` when `head` is not XML or the name lies beyond it.
pub fn xml_root_name(head: &[u8]) -> Option<&[u8]> {
    let mut h = trimmed(head);
    loop {
        if h.starts_with(b"<?") {
            h = skip_past(h, b"?>")?;
        } else if h.starts_with(b"<!--") {
            h = skip_past(h, b"-->")?;
        } else if let Some(rest) = h.strip_prefix(b"<!DOCTYPE").or_else(|| h.strip_prefix(b"<!doctype")) {
            let rest = trim_ws(rest);
            let n = rest.iter().position(|&c| c.is_ascii_whitespace() || c == b'[' || c == b'>').unwrap_or(rest.len());
            return (n > 0).then(|| &rest[..n]);
        } else if let Some(rest) = h.strip_prefix(b"<") {
            let n = rest.iter().position(|&c| c.is_ascii_whitespace() || c == b'>' || c == b'/').unwrap_or(rest.len());
            let name = &rest[..n];
            return (n > 0 && name[0].is_ascii_alphabetic()).then_some(name);
        } else {
            return None;
        }
        h = trim_ws(h);
    }
}

fn skip_past<'a>(h: &'a [u8], end: &[u8]) -> Option<&'a [u8]> {
    memchr::memmem::find(h, end).map(|i| &h[i + end.len()..])
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// How a JSON stream lays out its records, as seen from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonLayout {
    /// One object per line (JSONL).
    Lines,
    /// A top-level array of objects.
    Array,
    /// A top-level object whose first value is an array of objects (`{"RECORDS": [...]}`).
    Wrapped,
}

/// What sniffing saw of a JSON stream: its layout and the keys of its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonHead {
    /// Record layout.
    pub layout: JsonLayout,
    /// Top-level keys of the first record, in order (those within the sniffed bytes).
    pub keys: Vec<String>,
}

impl JsonHead {
    /// Whether the first record has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Whether the first record has any of `keys`.
    pub fn has_any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.has(k))
    }
}

/// Looks at the start of a stream (after a BOM and whitespace) and, if it is JSON holding
/// objects, says how they are laid out and which keys the first one has. Keys whose value runs
/// past the end of `head` are still seen; keys after that point are not.
///
/// A top-level object is a wrapper (`{"RECORDS": [...]}`) when its first value is an array of
/// objects and the object spans several lines or runs past `head`; otherwise it is the first
/// line of a JSONL stream.
pub fn json_head(head: &[u8]) -> Option<JsonHead> {
    let h = trimmed(head);
    let mut s = Scan { b: h, i: 0, closed_at: None };
    match h.first()? {
        b'[' => {
            s.i += 1;
            s.ws();
            if s.peek()? != b'{' {
                return None;
            }
            let (keys, _) = s.object_keys();
            Some(JsonHead { layout: JsonLayout::Array, keys })
        }
        b'{' => {
            let (keys, first) = s.object_keys();
            if let Some(FirstValue { array_of_objects: true, inner_keys }) = first {
                let one_line = s.closed_at.is_some_and(|end| !h[..end].contains(&b'\n'));
                if !one_line || keys.len() == 1 {
                    return Some(JsonHead { layout: JsonLayout::Wrapped, keys: inner_keys });
                }
            }
            Some(JsonHead { layout: JsonLayout::Lines, keys })
        }
        _ => None,
    }
}

struct FirstValue {
    array_of_objects: bool,
    inner_keys: Vec<String>,
}

/// A forgiving scanner over possibly truncated JSON: it stops quietly at the end of the bytes.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Just past the `}` of the outermost object read, when it closed within the bytes.
    closed_at: Option<usize>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// Skips a string starting at `"`; returns its raw contents if it ended within the bytes.
    fn string(&mut self) -> Option<&[u8]> {
        let start = self.i + 1;
        let mut j = start;
        while j < self.b.len() {
            match self.b[j] {
                b'\\' => j += 2,
                b'"' => {
                    self.i = j + 1;
                    return Some(&self.b[start..j]);
                }
                _ => j += 1,
            }
        }
        self.i = self.b.len();
        None
    }

    /// Skips any value (nested containers and strings tracked).
    fn value(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    if self.string().is_none() {
                        return;
                    }
                    if depth == 0 {
                        return;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return; // end of the enclosing container
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return;
                    }
                }
                b',' if depth == 0 => return,
                _ => {}
            }
            self.i += 1;
        }
    }

    /// Reads the keys of the object starting at `{`, and what its first value looks like.
    fn object_keys(&mut self) -> (Vec<String>, Option<FirstValue>) {
        let mut keys = Vec::new();
        let mut first = None;
        self.i += 1;
        loop {
            self.ws();
            match self.peek() {
                Some(b'"') => {}
                Some(b'}') => {
                    self.i += 1;
                    self.closed_at = Some(self.i);
                    return (keys, first);
                }
                _ => return (keys, first),
            }
            let Some(k) = self.string() else { return (keys, first) };
            keys.push(String::from_utf8_lossy(k).into_owned());
            self.ws();
            if self.peek() != Some(b':') {
                return (keys, first);
            }
            self.i += 1;
            self.ws();
            if keys.len() == 1 && self.peek() == Some(b'[') {
                let save = self.i;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'{') {
                    let mut inner = Scan { b: self.b, i: self.i, closed_at: None };
                    let (inner_keys, _) = inner.object_keys();
                    first = Some(FirstValue { array_of_objects: true, inner_keys });
                }
                self.i = save;
            }
            self.value();
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return (keys, first),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Option<(JsonLayout, Vec<String>)> {
        json_head(s.as_bytes()).map(|h| (h.layout, h.keys))
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn layouts() {
        assert_eq!(
            head("\u{feff}  [\n  {\"id\": 1, \"content\": \"a,}\\\"b\", \"n\": {\"x\": [1]}, \"t\": 2}\n]"),
            Some((JsonLayout::Array, keys(&["id", "content", "n", "t"])))
        );
        assert_eq!(head("{\"a\": 1, \"b\": [1, 2]}\n{\"a\": 2}\n"), Some((JsonLayout::Lines, keys(&["a", "b"]))));
        assert_eq!(
            head("{\n  \"RECORDS\": [\n    {\"id\": 1, \"content\": \"x\"}\n  ]\n}"),
            Some((JsonLayout::Wrapped, keys(&["id", "content"])))
        );
        assert_eq!(head("{\"RECORDS\":[{\"id\":1,\"content\":\"x\"}]}"), Some((JsonLayout::Wrapped, keys(&["id", "content"]))));
        // A one-line record whose first field is a list of objects, with more fields: JSONL.
        assert_eq!(head("{\"turns\": [{\"from\": \"a\"}], \"id\": 3}\n"), Some((JsonLayout::Lines, keys(&["turns", "id"]))));
        assert_eq!(head("[1, 2]"), None);
        assert_eq!(head("<?xml version=\"1.0\"?>"), None);
        assert_eq!(head(""), None);
    }

    #[test]
    fn truncated_heads_keep_the_keys_seen() {
        // The first value runs past the sniffed bytes: keys before it are still known.
        assert_eq!(head("{\"id\": 7, \"content\": \"very long"), Some((JsonLayout::Lines, keys(&["id", "content"]))));
        // A wrapper cut inside its first record.
        assert_eq!(head("{\"RECORDS\": [{\"id\": 1, \"content\": \"x"), Some((JsonLayout::Wrapped, keys(&["id", "content"]))));
    }
}
