//! The text layout of patent XML, shared by the USPTO and EPO readers: one walker turns an
//! element's content into lines, and each office says, per element, how it is laid out
//! ([`Classify`]). Whitespace runs collapse to one space within a line; MathML is rendered by
//! [`super::mathml`].
//!
//! Recursion follows the element tree, whose depth the XML parser bounds
//! ([`crate::io::xml::ParseOptions::max_depth`]), so no input can overflow the stack.

use super::mathml::mathml;
use crate::io::xml::{collapse_ws, El};

/// How an element's content is laid out in the plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Flows into the current line (`b`, `sub`, `figref`, and any element not listed).
    Inline,
    /// Starts and ends a line (`p`, `heading`, `li`).
    Block,
    /// Ends the current line (`br`).
    Break,
    /// A space (`br` in one-line text).
    Space,
    /// Flows into the current line, set off by spaces (a nested block in one-line text).
    Spaced,
    /// Dropped with its content (figures, images, paragraph numbers).
    Skip,
    /// A CALS table: one line per row, the row's non-empty cells (each flowed) joined by ` | `.
    Table,
    /// A table row on one line: its `entry` cells, each as one-line text (the walker's cell
    /// rule), joined by ` | `, empty cells kept.
    Row,
    /// A term (`dt`): starts a line, and its definition follows on it.
    Term,
    /// A definition (`dd`): continues the current line and ends it.
    Definition,
    /// Preformatted text: each of its source lines is a line.
    Pre,
    /// MathML, linearized inline.
    Math,
}

/// An office's layout rule: `(element name, parent name) → layout`.
pub type Classify = fn(name: &str, parent: &str) -> Layout;

/// Collects the text lines of a subtree.
pub struct TextLines {
    classify: Classify,
    /// The rule for the cells of a [`Layout::Row`].
    cells: Classify,
    lines: Vec<String>,
    cur: String,
}

impl TextLines {
    /// An empty collector using `classify` (also for row cells).
    pub fn new(classify: Classify) -> Self {
        Self::with_cells(classify, classify)
    }

    /// An empty collector using `classify`, and `cells` for the cells of rows.
    pub fn with_cells(classify: Classify, cells: Classify) -> Self {
        Self { classify, cells, lines: Vec::new(), cur: String::new() }
    }

    /// The lines of `el`'s content (`el` itself is a block).
    pub fn of(el: El<'_>, classify: Classify) -> Vec<String> {
        let mut t = Self::new(classify);
        t.walk(el);
        t.finish()
    }

    /// `el`'s content as one line (lines joined by spaces).
    pub fn one_line(el: El<'_>, classify: Classify) -> String {
        Self::of(el, classify).join(" ")
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            let s = collapse_ws(&self.cur);
            self.cur.clear();
            if !s.is_empty() {
                self.lines.push(s);
            }
        }
    }

    /// Adds `el`'s content, ending the current line before and after it.
    pub fn add_block(&mut self, el: El<'_>) {
        self.flush();
        self.walk(el);
        self.flush();
    }

    /// Adds `el`'s content to the current line.
    pub fn walk(&mut self, el: El<'_>) {
        for n in el.nodes() {
            let c = match n {
                Err(text) => {
                    self.cur.push_str(text);
                    continue;
                }
                Ok(c) => c,
            };
            match (self.classify)(c.name(), el.name()) {
                Layout::Inline => self.walk(c),
                Layout::Block => self.add_block(c),
                Layout::Break => self.flush(),
                Layout::Space => self.cur.push(' '),
                Layout::Spaced => {
                    self.cur.push(' ');
                    self.walk(c);
                    self.cur.push(' ');
                }
                Layout::Skip => {}
                Layout::Table => {
                    self.flush();
                    self.table(c);
                }
                Layout::Row => {
                    self.flush();
                    let cells: Vec<String> = c.children().filter(|e| e.name() == "entry").map(|e| Self::one_line(e, self.cells)).collect();
                    self.cur.push_str(&cells.join(" | "));
                    self.flush();
                }
                Layout::Term => {
                    self.flush();
                    self.walk(c);
                    self.cur.push(' ');
                }
                Layout::Definition => {
                    self.walk(c);
                    self.flush();
                }
                Layout::Pre => {
                    self.flush();
                    for line in c.raw_text().lines() {
                        self.cur.push_str(line);
                        self.flush();
                    }
                }
                Layout::Math => {
                    self.cur.push(' ');
                    self.cur.push_str(&mathml(c));
                    self.cur.push(' ');
                }
            }
        }
    }

    fn table(&mut self, el: El<'_>) {
        for c in el.children() {
            let name = c.name();
            if name.eq_ignore_ascii_case("row") {
                let cells: Vec<String> =
                    c.children().map(|cell| flow(&TextLines::of(cell, self.classify))).filter(|s| !s.is_empty()).collect();
                if !cells.is_empty() {
                    self.lines.push(cells.join(" | "));
                }
            } else if name.eq_ignore_ascii_case("title") {
                self.add_block(c);
            } else if (self.classify)(name, el.name()) != Layout::Skip {
                self.table(c);
            }
        }
    }

    /// The lines collected.
    pub fn finish(mut self) -> Vec<String> {
        self.flush();
        self.lines
    }
}

/// Joins lines into running text: a space between them, none before closing punctuation.
pub fn flow(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        if !s.is_empty() && !l.starts_with([',', '.', ';', ':', ')', ']']) {
            s.push(' ');
        }
        s.push_str(l);
    }
    s
}
