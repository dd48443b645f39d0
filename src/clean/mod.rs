//! Cleaning: a pipeline of small, named, configurable stages, as HF `tokenizers` normalizers
//! and datatrove filters are.
//!
//! Normalizers rewrite `Document.text` in order — Unicode form, control characters, HTML
//! entities and leftover markup, white space, boilerplate — each switchable, each free when it
//! finds nothing to change (one scan, no allocation). Filters then judge the text; the first
//! that fails names the bucket the document is counted under (`min_length`, `cjk_ratio`,
//! `repeated_lines`, `top_4_gram`, …). Which script's units and thresholds apply is decided by
//! the document's `lang` (see [`script`]): Chinese is measured in characters, English in
//! words, so Chinese documents are not dropped for "having no words".
//!
//! Cleaning is idempotent: cleaning a cleaned text changes nothing (the stages that can expose
//! work for each other run until nothing changes; a property test checks it).

pub mod boilerplate;
pub mod controls;
pub mod entities;
pub mod markup;
pub mod policy;
pub mod quality;
pub mod repetition;
pub mod rewrite;
pub mod script;
pub mod stats;
pub mod table;
pub mod unicode;
pub mod whitespace;

#[cfg(test)]
mod tests;

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::doc::Document;
use crate::error::{Error, Result};

pub use boilerplate::BoilerplateConfig;
pub use controls::ControlsConfig;
pub use markup::MarkupConfig;
pub use quality::{CjkQuality, LatinQuality, QualityConfig};
pub use repetition::{CjkNgrams, LatinNgrams, NgramLimit, RepetitionConfig};
pub use script::{Script, ScriptConfig, ScriptRule};
pub use unicode::UnicodeForm;
pub use whitespace::WhitespaceConfig;

use rewrite::run_stage;

/// Normalization and filter settings (`[docs.clean]`). Normalizers run in this order: unicode,
/// controls, entities + markup, whitespace, boilerplate; then the filters: empty, length,
/// script, quality, repetition.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CleanConfig {
    /// Unicode normalization form: `nfc` (default, as the Qwen tokenizer), `nfkc`, `none`.
    pub unicode: UnicodeForm,
    /// Control characters.
    pub controls: ControlsConfig,
    /// Decode HTML character references (`&nbsp;`, `&amp;`, `&#x201c;`).
    pub entities: EntitiesConfig,
    /// Leftover HTML/XML markup.
    pub markup: MarkupConfig,
    /// White space.
    pub whitespace: WhitespaceConfig,
    /// Boilerplate patterns.
    pub boilerplate: BoilerplateConfig,
    /// Document length in characters.
    pub length: LengthConfig,
    /// Script ratio per language.
    pub script: ScriptConfig,
    /// Gopher quality rules.
    pub quality: QualityConfig,
    /// Gopher repetition rules.
    pub repetition: RepetitionConfig,
    /// Most rounds of the stages that can expose work for each other (entities ⇄ markup, and
    /// boilerplate ⇄ the rest). Real text settles in one or two; this bounds the time an
    /// adversarial text (markup nested inside entities, credits chained a thousand deep) can
    /// take, at the price of leaving such a text partly cleaned.
    #[schemars(range(min = 1))]
    pub max_rounds: usize,
    /// Working memory per thread is released after a document of more than this many bytes
    /// (bounds the memory a rare huge document leaves behind; smaller documents reuse it).
    pub release_scratch_after_bytes: usize,
}

/// HTML character-reference decoding.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EntitiesConfig {
    /// Decode references, repeatedly, so double-escaped text (`&amp;lt;`) ends decoded.
    pub enabled: bool,
}

impl Default for EntitiesConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The length filter (characters after normalization). An empty text is always dropped, as
/// `empty`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LengthConfig {
    /// Fewest characters (`min_length`). The shortest real documents in the fixtures are IPC
    /// descriptions of about 55 characters (`D99 表示 本部其他类不包含的主题 相关的技术。…`).
    pub min_chars: usize,
    /// Most characters (`max_length`); also bounds the per-thread memory of the repetition
    /// rules (up to about 50 bytes per CJK character).
    pub max_chars: usize,
}

impl Default for LengthConfig {
    fn default() -> Self {
        Self { min_chars: 40, max_chars: 1_000_000 }
    }
}

impl Default for CleanConfig {
    fn default() -> Self {
        Self {
            unicode: UnicodeForm::default(),
            controls: ControlsConfig::default(),
            entities: EntitiesConfig::default(),
            markup: MarkupConfig::default(),
            whitespace: WhitespaceConfig::default(),
            boilerplate: BoilerplateConfig::default(),
            length: LengthConfig::default(),
            script: ScriptConfig::default(),
            quality: QualityConfig::default(),
            repetition: RepetitionConfig::default(),
            max_rounds: 8,
            release_scratch_after_bytes: 4 << 20,
        }
    }
}

/// A configured cleaning pipeline: normalizers, then filters, in order.
#[derive(Debug)]
pub struct Cleaner {
    cfg: CleanConfig,
    markup: markup::Markup,
    whitespace: whitespace::Whitespace,
    boilerplate: Option<boilerplate::Boilerplate>,
    script: script::ScriptFilter,
    repetition: repetition::RepetitionFilter,
}

/// Per-thread working memory, reused from document to document.
#[derive(Default)]
struct Scratch {
    buf: String,
    units: stats::Units,
    lines: Vec<stats::Line>,
    rep: repetition::Scratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl CleanConfig {
    /// Checks the section: ranges (they live in the schema), the order of the length bounds
    /// and the boilerplate patterns. Keys are named from `clean`.
    pub fn validate(&self) -> Result<()> {
        crate::core::schema::check(self, "clean")?;
        if self.length.min_chars > self.length.max_chars {
            return Err(Error::Config {
                file: String::new(),
                key: "clean.length.min_chars".into(),
                message: format!("{} is larger than clean.length.max_chars {}", self.length.min_chars, self.length.max_chars),
            });
        }
        if self.boilerplate.enabled {
            boilerplate::Boilerplate::new(&self.boilerplate)?;
        }
        Ok(())
    }
}

impl Cleaner {
    /// Builds the pipeline from its config; errors name the offending key.
    pub fn new(cfg: &CleanConfig) -> Result<Self> {
        cfg.validate()?;
        let boilerplate = if cfg.boilerplate.enabled { Some(boilerplate::Boilerplate::new(&cfg.boilerplate)?) } else { None };
        Ok(Cleaner {
            cfg: cfg.clone(),
            markup: markup::Markup::new(&cfg.markup),
            whitespace: whitespace::Whitespace::new(&cfg.whitespace),
            boilerplate,
            script: script::ScriptFilter::new(&cfg.script),
            repetition: repetition::RepetitionFilter::new(&cfg.repetition),
        })
    }

    /// Normalizes `doc.text` in place, then applies the filters. `Err(name)` names the filter
    /// that dropped the document.
    pub fn apply(&self, doc: &mut Document) -> std::result::Result<(), String> {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let s = &mut *s;
            let removed = self.normalize_with(&mut doc.text, &mut s.buf);
            if removed.bidi > 0 {
                doc.meta.insert("bidi_controls_removed".into(), removed.bidi.into());
            }
            if removed.private_use > 0 {
                doc.meta.insert("private_use_removed".into(), removed.private_use.into());
            }
            let r = self.filter_with(&doc.lang, &doc.text, s).map_err(str::to_string);
            if doc.text.len() > self.cfg.release_scratch_after_bytes || s.buf.capacity() > self.cfg.release_scratch_after_bytes {
                *s = Scratch::default();
            }
            r
        })
    }

    /// The normalizers alone (for tests and tools).
    pub fn normalize(&self, text: &mut String) {
        SCRATCH.with(|s| {
            self.normalize_with(text, &mut s.borrow_mut().buf);
        })
    }

    /// The filters alone, on already normalized text.
    pub fn filter(&self, lang: &str, text: &str) -> std::result::Result<(), String> {
        SCRATCH.with(|s| self.filter_with(lang, text, &mut s.borrow_mut()).map_err(str::to_string))
    }

    /// Runs the normalizers; returns the counted removals.
    fn normalize_with(&self, text: &mut String, buf: &mut String) -> controls::Removed {
        let c = &self.cfg;
        let mut removed = controls::Removed::default();
        if text.is_empty() {
            return removed;
        }
        let form = c.unicode;
        if c.controls.enabled {
            run_stage(text, buf, |w| removed = controls::run(&c.controls, w));
        }
        let mut round = 0;
        loop {
            round += 1;
            // Unicode before entities and markup: NFC maps a few characters to ASCII (U+037E →
            // `;`) that they look for. Again after anything that deletes characters, which can
            // bring a base and its combining mark together (`c\u{200b}\u{301}`).
            run_stage(text, buf, |w| unicode::run(form, w));
            // Decoding can expose markup (`&lt;br&gt;`), stripping can join an entity, and both
            // can leave decomposed characters (`e&#x301;`): run until nothing changes.
            for _ in 0..c.max_rounds.max(1) {
                let mut changed = false;
                if c.entities.enabled {
                    changed |= run_stage(text, buf, entities::run);
                }
                if c.markup.enabled {
                    changed |= run_stage(text, buf, |w| self.markup.run(w));
                }
                if !changed {
                    break;
                }
                run_stage(text, buf, |w| unicode::run(form, w));
            }
            if c.whitespace.enabled {
                run_stage(text, buf, |w| self.whitespace.run(w));
            }
            // Deleting boilerplate can expose more of it (a credit before a credit), and can
            // join what the stages above look for: go round again until nothing is deleted.
            // The last round ends here, white space tidy.
            let Some(b) = &self.boilerplate else { break };
            if round >= c.max_rounds || !b.run(text, buf) {
                break;
            }
        }
        removed
    }

    fn filter_with<'a>(&'a self, lang: &str, text: &str, s: &mut Scratch) -> std::result::Result<(), &'a str> {
        if text.trim().is_empty() {
            return Err("empty");
        }
        let len = &self.cfg.length;
        // Bytes bound characters (1–4 bytes each): count only when the bytes leave it open.
        if text.len() > len.max_chars && (text.len() / 4 > len.max_chars || stats::count_chars(text.as_bytes()) > len.max_chars) {
            return Err("max_length");
        }
        let st = stats::compute(text, &mut s.units, &mut s.lines);
        if st.chars < len.min_chars {
            return Err("min_length");
        }
        self.script.check(lang, &st)?;
        let profile = self.script.profile(lang, &st);
        quality::check(&self.cfg.quality, profile, &st)?;
        s.units.prepare_pow(self.repetition.max_n());
        self.repetition.check(&s.lines, st.chars, profile, &s.units, &mut s.rep)
    }
}
