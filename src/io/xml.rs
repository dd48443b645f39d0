//! A small, safe XML tree for patent documents (a few MB each at most, one framed record).
//!
//! Built on `quick-xml`. DTDs are never fetched and declared entities never expanded: text
//! may use the five predefined entities, numeric character references and the fixed table in
//! [`super::entities`]; any other `&name;` is an error naming its offset (no entity bombs).
//! Internal DTD subsets (USPTO's `NDATA` image declarations) are skipped.
//!
//! The tree keeps elements, attributes and text; comments and processing instructions are
//! dropped. Parsers query it with [`El`].

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::entities;

/// An XML well-formedness or entity problem, at a byte offset into the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset into the text that was parsed.
    pub offset: u64,
    /// What went wrong.
    pub message: String,
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
    /// Parses one XML document. Text before the root element (declaration, DOCTYPE with its
    /// internal subset) is skipped; content after the root element is an error.
    pub fn parse(text: &str) -> Result<XmlDoc, XmlError> {
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
            let ev =
                reader.read_event().map_err(|e| XmlError { offset: reader.error_position(), message: format!("malformed XML: {e}") })?;
            match ev {
                Event::Start(e) => {
                    if root_closed {
                        return Err(XmlError { offset: pos, message: "content after the root element".into() });
                    }
                    let name = e.name().into_inner().to_string();
                    let mut attrs = Vec::new();
                    for a in e.attributes() {
                        let a = a.map_err(|err| XmlError { offset: pos, message: format!("bad attribute in <{name}>: {err}") })?;
                        let v = a
                            .normalized_value_with(quick_xml::XmlVersion::Implicit1_0, 1, resolve_entity)
                            .map_err(|err| XmlError { offset: pos, message: format!("bad attribute value in <{name}>: {err}") })?;
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
                                None => return Err(XmlError { offset: pos, message: format!("undefined entity &{name};") }),
                            }
                        }
                        Err(e) => return Err(XmlError { offset: pos, message: format!("bad character reference: {e}") }),
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
            return Err(XmlError {
                offset: text.len() as u64,
                message: format!("unclosed element <{open}> at end of document (truncated?)"),
            });
        }
        if nodes.is_empty() {
            return Err(XmlError { offset: 0, message: "no root element".into() });
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
        None if root_closed => Err(XmlError { offset: pos, message: "text after the root element".into() }),
        None => Err(XmlError { offset: pos, message: "text before the root element".into() }),
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
        let mut out = Vec::new();
        self.collect_desc(name, &mut out);
        out
    }

    fn collect_desc(&self, name: &str, out: &mut Vec<El<'d>>) {
        for c in self.children() {
            if c.name() == name {
                out.push(c);
            }
            c.collect_desc(name, out);
        }
    }

    /// The first descendant named `name`, in document order.
    pub fn find(&self, name: &str) -> Option<El<'d>> {
        for c in self.children() {
            if c.name() == name {
                return Some(c);
            }
            if let Some(f) = c.find(name) {
                return Some(f);
            }
        }
        None
    }

    /// All text inside the element, concatenated as it stands.
    pub fn raw_text(&self) -> String {
        let mut s = String::new();
        self.push_raw(&mut s);
        s
    }

    fn push_raw(&self, s: &mut String) {
        for n in self.nodes() {
            match n {
                Ok(e) => e.push_raw(s),
                Err(t) => s.push_str(t),
            }
        }
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
    fn navigation() {
        let d = XmlDoc::parse("<r><x><y>1</y><y>2</y></x><z><y>3</y></z></r>").unwrap();
        let r = d.root();
        assert_eq!(r.path("x/y").unwrap().text(), "1");
        assert_eq!(r.descendants("y").iter().map(|e| e.text()).collect::<Vec<_>>(), ["1", "2", "3"]);
        assert_eq!(r.find("z").unwrap().raw_text(), "3");
        assert_eq!(collapse_ws("  a \n\t b  "), "a b");
    }
}
