//! A small, safe XML tree for patent documents (a few MB each at most, one framed record).
//!
//! Built on `quick-xml`. DTDs are never fetched and declared entities never expanded: text
//! may use the five predefined entities, numeric character references and the fixed table in
//! [`super::entities`]; any other `&name;` is an error naming its offset (no entity bombs).
//! Internal DTD subsets (USPTO's `NDATA` image declarations) are skipped.
//!
//! The tree keeps elements, attributes and text; comments and processing instructions are
//! dropped. Parsers query it with [`El`]. Elements may nest at most [`XmlLimits::max_depth`]
//! levels: deeper input is an error ([`XmlError::too_deep`]), so the recursive walks of readers
//! (text layout, MathML) are bounded and no input can overflow a thread's stack. The tree's own
//! walks ([`El::descendants`], [`El::find`], [`El::raw_text`]) use explicit stacks.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::entities;
use super::RawRecord;
use crate::error::{ReadError, ReadErrorKind};

/// An XML well-formedness or entity problem, at a byte offset into the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset into the text that was parsed.
    pub offset: u64,
    /// What went wrong.
    pub message: String,
    /// Whether the document nests deeper than the limit (otherwise it is malformed).
    pub too_deep: bool,
}

impl XmlError {
    fn new(offset: u64, message: impl Into<String>) -> Self {
        Self { offset, message: message.into(), too_deep: false }
    }

    /// The error in `text`, the decoded bytes of `raw`, as a read error at its byte in the record.
    #[allow(clippy::ptr_arg)] // borrowed or owned says how offsets map back (record_offset)
    pub fn in_decoded(mut self, raw: &RawRecord, text: &std::borrow::Cow<'_, str>) -> ReadError {
        self.offset = super::text::record_offset(&raw.bytes, text, self.offset);
        self.in_record(raw)
    }

    /// The error as a read error of `raw` (`xml`, or `xml-too-deep`), at its byte in the record
    /// (its offset is one in the record's bytes already).
    pub fn in_record(self, raw: &RawRecord) -> ReadError {
        let kind = if self.too_deep { ReadErrorKind::XmlTooDeep } else { ReadErrorKind::Xml };
        raw.error_at(self.offset, kind, self.message)
    }
}

/// Bounds on what a document may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Most levels of nested elements (the root is level 1).
    pub max_depth: usize,
}

/// Default [`XmlLimits::max_depth`]: real patents nest up to about 20 levels (the deepest
/// fixture, a WIPO scheme excerpt, 19; USPTO MathML 17).
pub const DEFAULT_MAX_DEPTH: usize = 256;

impl Default for XmlLimits {
    fn default() -> Self {
        Self { max_depth: DEFAULT_MAX_DEPTH }
    }
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (byte {})", self.message, self.offset)
    }
}

#[derive(Debug)]
enum Child {
    Elem(u32),
    Text(String),
}

#[derive(Debug)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Child>,
}

/// A parsed XML document.
#[derive(Debug)]
pub struct XmlDoc {
    nodes: Vec<Node>,
}

/// Resolves a named entity reference against the fixed table (predefined ones included).
pub fn resolve_entity(name: &str) -> Option<&'static str> {
    match name {
        "lt" => Some("<"),
        "gt" => Some(">"),
        "amp" => Some("&"),
        "apos" => Some("'"),
        "quot" => Some("\""),
        _ => entities::lookup(name),
    }
}

impl XmlDoc {
    /// Parses one XML document with the default limits.
    pub fn parse(text: &str) -> Result<XmlDoc, XmlError> {
        Self::parse_with(text, XmlLimits::default())
    }

    /// Parses one XML document. Text before the root element (declaration, DOCTYPE with its
    /// internal subset) is skipped; content after the root element is an error, and so is
    /// nesting deeper than `limits.max_depth`.
    pub fn parse_with(text: &str, limits: XmlLimits) -> Result<XmlDoc, XmlError> {
        let mut reader = Reader::from_str(text);
        {
            let cfg = reader.config_mut();
            cfg.expand_empty_elements = true;
            cfg.check_end_names = true;
            cfg.trim_text(false);
        }
        let mut nodes: Vec<Node> = Vec::new();
        let mut stack: Vec<u32> = Vec::new();
        let mut root_closed = false;
        loop {
            let pos = reader.buffer_position();
            let ev = reader.read_event().map_err(|e| XmlError::new(reader.error_position(), format!("malformed XML: {e}")))?;
            match ev {
                Event::Start(e) => {
                    if root_closed {
                        return Err(XmlError::new(pos, "content after the root element"));
                    }
                    if stack.len() >= limits.max_depth {
                        let name = e.name().into_inner().to_string();
                        let msg = format!(
                            "elements nest deeper than {} levels (at <{name}>; the limit is sources.max_xml_depth)",
                            limits.max_depth
                        );
                        return Err(XmlError { offset: pos, message: msg, too_deep: true });
                    }
                    let name = e.name().into_inner().to_string();
                    let mut attrs = Vec::new();
                    for a in e.attributes() {
                        let a = a.map_err(|err| XmlError::new(pos, format!("bad attribute in <{name}>: {err}")))?;
                        let v = a
                            .normalized_value_with(quick_xml::XmlVersion::Implicit1_0, 1, resolve_entity)
                            .map_err(|err| XmlError::new(pos, format!("bad attribute value in <{name}>: {err}")))?;
                        attrs.push((a.key.into_inner().to_string(), v.into_owned()));
                    }
                    let id = nodes.len() as u32;
                    nodes.push(Node { name, attrs, children: Vec::new() });
                    if let Some(&parent) = stack.last() {
                        nodes[parent as usize].children.push(Child::Elem(id));
                    }
                    stack.push(id);
                }
                Event::End(_) => {
                    stack.pop();
                    if stack.is_empty() {
                        root_closed = true;
                    }
                }
                Event::Text(t) => {
                    let s = t.xml10_content();
                    push_text(&mut nodes, &stack, &s, root_closed, pos)?;
                }
                Event::CData(t) => {
                    let s = t.xml10_content();
                    push_text(&mut nodes, &stack, &s, root_closed, pos)?;
                }
                Event::GeneralRef(r) => {
                    let resolved: Cow<'_, str> = match r.resolve_char_ref() {
                        Ok(Some(c)) => Cow::Owned(c.to_string()),
                        Ok(None) => {
                            let name = r.xml10_content();
                            match resolve_entity(&name) {
                                Some(s) => Cow::Borrowed(s),
                                None => return Err(XmlError::new(pos, format!("undefined entity &{name};"))),
                            }
                        }
                        Err(e) => return Err(XmlError::new(pos, format!("bad character reference: {e}"))),
                    };
                    push_text(&mut nodes, &stack, &resolved, root_closed, pos)?;
                }
                Event::Eof => break,
                Event::Empty(_) => unreachable!("expand_empty_elements is on"),
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
        }
        if !stack.is_empty() {
            let open = &nodes[*stack.last().unwrap() as usize].name;
            return Err(XmlError::new(text.len() as u64, format!("unclosed element <{open}> at end of document (truncated?)")));
        }
        if nodes.is_empty() {
            return Err(XmlError::new(0, "no root element"));
        }
        Ok(XmlDoc { nodes })
    }

    /// The root element.
    pub fn root(&self) -> El<'_> {
        El { doc: self, id: 0 }
    }
}

fn push_text(nodes: &mut [Node], stack: &[u32], s: &str, root_closed: bool, pos: u64) -> Result<(), XmlError> {
    match stack.last() {
        Some(&top) => {
            let children = &mut nodes[top as usize].children;
            if let Some(Child::Text(prev)) = children.last_mut() {
                prev.push_str(s);
            } else {
                children.push(Child::Text(s.to_string()));
            }
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None if root_closed => Err(XmlError::new(pos, "text after the root element")),
        None => Err(XmlError::new(pos, "text before the root element")),
    }
}

fn elem_id(c: &Child) -> Option<u32> {
    match c {
        Child::Elem(id) => Some(*id),
        Child::Text(_) => None,
    }
}

/// An element of an [`XmlDoc`].
#[derive(Clone, Copy)]
pub struct El<'d> {
    doc: &'d XmlDoc,
    id: u32,
}

impl<'d> El<'d> {
    fn node(&self) -> &'d Node {
        &self.doc.nodes[self.id as usize]
    }

    /// The element's (qualified) name.
    pub fn name(&self) -> &'d str {
        &self.node().name
    }

    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&'d str> {
        self.node().attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Child elements, in order.
    pub fn children(&self) -> impl Iterator<Item = El<'d>> + 'd {
        let doc = self.doc;
        self.node().children.iter().filter_map(move |c| match c {
            Child::Elem(id) => Some(El { doc, id: *id }),
            Child::Text(_) => None,
        })
    }

    /// Child nodes in order: `Ok(element)` or `Err(text)`.
    pub fn nodes(&self) -> impl Iterator<Item = Result<El<'d>, &'d str>> + 'd {
        let doc = self.doc;
        self.node().children.iter().map(move |c| match c {
            Child::Elem(id) => Ok(El { doc, id: *id }),
            Child::Text(t) => Err(t.as_str()),
        })
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<El<'d>> {
        self.children().find(|c| c.name() == name)
    }

    /// All child elements named `name`.
    pub fn children_named<'a>(&self, name: &'a str) -> impl Iterator<Item = El<'d>> + 'a
    where
        'd: 'a,
    {
        self.children().filter(move |c| c.name() == name)
    }

    /// Follows a `/`-separated path of child names (`a/b/c`), taking the first match at each step.
    pub fn path(&self, path: &str) -> Option<El<'d>> {
        let mut cur = *self;
        for step in path.split('/').filter(|s| !s.is_empty()) {
            cur = cur.child(step)?;
        }
        Some(cur)
    }

    /// All descendants (not self) named `name`, in document order.
    pub fn descendants(&self, name: &str) -> Vec<El<'d>> {
        self.walk().filter(|e| e.name() == name).collect()
    }

    /// The first descendant named `name`, in document order.
    pub fn find(&self, name: &str) -> Option<El<'d>> {
        self.walk().find(|e| e.name() == name)
    }

    /// All descendant elements (not self) in document order, walked with an explicit stack.
    fn walk(&self) -> impl Iterator<Item = El<'d>> + 'd {
        let doc = self.doc;
        let mut stack: Vec<u32> = self.node().children.iter().rev().filter_map(elem_id).collect();
        std::iter::from_fn(move || {
            let id = stack.pop()?;
            stack.extend(doc.nodes[id as usize].children.iter().rev().filter_map(elem_id));
            Some(El { doc, id })
        })
    }

    /// All text inside the element, concatenated as it stands.
    pub fn raw_text(&self) -> String {
        let mut s = String::new();
        // Children still to visit, last first.
        let mut stack: Vec<&'d Child> = self.node().children.iter().rev().collect();
        while let Some(c) = stack.pop() {
            match c {
                Child::Text(t) => s.push_str(t),
                Child::Elem(id) => stack.extend(self.doc.nodes[*id as usize].children.iter().rev()),
            }
        }
        s
    }

    /// All text inside the element with whitespace runs collapsed to one space and trimmed:
    /// the form for titles and inline paragraphs of pretty-printed files.
    pub fn text(&self) -> String {
        collapse_ws(&self.raw_text())
    }
}

/// Collapses runs of whitespace (including newlines) into one space and trims the ends.
pub fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending = !out.is_empty();
        } else {
            if pending {
                out.push(' ');
                pending = false;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_doctype_subset_and_entities() {
        let x = "<?xml version=\"1.0\"?>\n<!DOCTYPE a SYSTEM \"a.dtd\" [\n<!ENTITY img1 SYSTEM \"i.tif\" NDATA TIF>\n]>\n<a k=\"x&amp;y\"><p>1 &lt; 2 &#x3bc;m &minus;3&deg; &agr;</p><e/>\n</a>\n";
        let d = XmlDoc::parse(x).unwrap();
        let r = d.root();
        assert_eq!(r.name(), "a");
        assert_eq!(r.attr("k"), Some("x&y"));
        assert_eq!(r.child("p").unwrap().text(), "1 < 2 μm −3° α");
        assert!(r.child("e").is_some());
    }

    #[test]
    fn undefined_entity_is_an_error() {
        let e = XmlDoc::parse("<a>x &bomb; y</a>").unwrap_err();
        assert!(e.message.contains("undefined entity &bomb;"), "{e}");
        assert_eq!(e.offset, 5);
    }

    #[test]
    fn unclosed_and_mismatched_tags_are_errors() {
        assert!(XmlDoc::parse("<a><b>text</a>").unwrap_err().message.contains("malformed"));
        assert!(XmlDoc::parse("<a><b>text</b>").unwrap_err().message.contains("unclosed element <a>"));
    }

    #[test]
    fn entity_expansion_is_never_recursive() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><l>&b;</l>";
        assert!(XmlDoc::parse(bomb).unwrap_err().message.contains("undefined entity &b;"));
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_at_the_element() {
        let deep = format!("<a>{}x{}</a>", "<b>".repeat(100_000), "</b>".repeat(100_000));
        let e = XmlDoc::parse(&deep).unwrap_err();
        assert!(e.too_deep, "{e}");
        // The element that opens level 257.
        assert_eq!(e.offset, 3 + 3 * (DEFAULT_MAX_DEPTH as u64 - 1), "{e}");
        assert!(e.message.contains("deeper than 256 levels"), "{e}");
        let ok = format!("<a>{}x{}</a>", "<b>".repeat(255), "</b>".repeat(255));
        let d = XmlDoc::parse(&ok).unwrap();
        assert_eq!(d.root().raw_text(), "x");
        assert_eq!(d.root().descendants("b").len(), 255);
        assert!(XmlDoc::parse_with(&ok, XmlLimits { max_depth: 255 }).unwrap_err().too_deep);
    }

    #[test]
    fn navigation() {
        let d = XmlDoc::parse("<r><x><y>1</y><y>2</y></x><z><y>3</y></z></r>").unwrap();
        let r = d.root();
        assert_eq!(r.path("x/y").unwrap().text(), "1");
        assert_eq!(r.descendants("y").iter().map(|e| e.text()).collect::<Vec<_>>(), ["1", "2", "3"]);
        assert_eq!(r.find("z").unwrap().raw_text(), "3");
        assert_eq!(collapse_ws("  a \n\t b  "), "a b");
    }
}
