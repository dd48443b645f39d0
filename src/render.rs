//! Rendering a [`Patent`] into CPT text in the CoreTech format (see
//! `fixtures/data/cnipa/coretech_Patent_demo.json`):
//!
//! ```text
//! 标题: {title}
//!
//! 摘要: {abstract}
//!
//! 该专利涉及IPC分类号包括：
//! H04W24/02：{scheme title}；
//! H04W24/06：{scheme title}。
//!
//! 详细描述: {description}
//! ```
//!
//! Claims are appended (`权利要求: …`) when configured.
//!
//! **Labels follow the document's language** by default: an English patent reads `Title: …`,
//! `Abstract: …`, a German one `Titel: …`, a French one `Titre : …`, a Chinese one CoreTech's
//! `标题: …`. CoreTech-LLM used its Chinese labels for patents of every language; a model trained
//! on that learns that English text follows `摘要:`, which no English reader or prompt does,
//! and the labels are the only mixed-language tokens of such a document. Languages without a
//! built-in set (and every document when `labels_by_language = false`, CoreTech's behaviour) use
//! the set of `label_language` (`zh`). Any label of any language can be overridden in
//! `[docs.render.labels.<lang>]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::doc::{Document, Patent};
use crate::ipc::IpcScheme;

/// How patents are rendered.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// Append the claims.
    pub claims: bool,
    /// Pick the label set by the document's language (`lang`); false: `label_language` for all.
    pub labels_by_language: bool,
    /// The label set for documents whose language has none, and for every document when
    /// `labels_by_language` is false (`zh`: CoreTech's labels).
    pub label_language: String,
    /// Overrides of the built-in label sets (`zh`, `en`, `de`, `fr`) or new sets, by language;
    /// a field left out keeps the built-in label of that language (or of `label_language`).
    pub labels: BTreeMap<String, LabelOverrides>,
    /// Write IPC symbols compactly (`H04W24/02`, as CoreTech) instead of normalized (`H04W 24/02`).
    pub compact_ipc: bool,
    /// Language of the IPC titles taken from the scheme (`en` or `zh`), when the patent does not
    /// carry its own.
    pub ipc_title_lang: String,
}

/// The labels of one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// Before the title.
    pub title: String,
    /// Before the abstract.
    pub abstract_: String,
    /// The line introducing the IPC list.
    pub ipc_header: String,
    /// Between an IPC symbol and its title.
    pub ipc_title_separator: String,
    /// After each IPC entry but the last.
    pub ipc_item_end: String,
    /// After the last IPC entry.
    pub ipc_list_end: String,
    /// Before the description.
    pub description: String,
    /// Before the claims.
    pub claims: String,
}

/// A label set in the config: each field replaces the built-in one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelOverrides {
    /// Before the title (`标题: `, `Title: `).
    pub title: Option<String>,
    /// Before the abstract (`摘要: `, `Abstract: `).
    #[serde(rename = "abstract")]
    pub abstract_: Option<String>,
    /// The line introducing the IPC list (`该专利涉及IPC分类号包括：`).
    pub ipc_header: Option<String>,
    /// Between an IPC symbol and its title (`：`, `: `).
    pub ipc_title_separator: Option<String>,
    /// After each IPC entry but the last (`；`, `;`).
    pub ipc_item_end: Option<String>,
    /// After the last IPC entry (`。`, `.`).
    pub ipc_list_end: Option<String>,
    /// Before the description (`详细描述: `, `Description: `).
    pub description: Option<String>,
    /// Before the claims (`权利要求: `, `Claims: `).
    pub claims: Option<String>,
}

/// The built-in label set of `lang`, if there is one.
pub fn builtin_labels(lang: &str) -> Option<Labels> {
    let l = |t: &str, a: &str, h: &str, sep: &str, item: &str, end: &str, d: &str, c: &str| Labels {
        title: t.into(),
        abstract_: a.into(),
        ipc_header: h.into(),
        ipc_title_separator: sep.into(),
        ipc_item_end: item.into(),
        ipc_list_end: end.into(),
        description: d.into(),
        claims: c.into(),
    };
    Some(match lang {
        // CoreTech's own (fixtures/data/cnipa/coretech_Patent_demo.json).
        "zh" => l("标题: ", "摘要: ", "该专利涉及IPC分类号包括：", "：", "；", "。", "详细描述: ", "权利要求: "),
        "en" => l("Title: ", "Abstract: ", "IPC classifications of this patent:", ": ", ";", ".", "Description: ", "Claims: "),
        "de" => l("Titel: ", "Zusammenfassung: ", "IPC-Klassifikationen dieses Patents:", ": ", ";", ".", "Beschreibung: ", "Ansprüche: "),
        // French typography puts a space before the colon and the semicolon.
        "fr" => l("Titre : ", "Abrégé : ", "Classifications CIB de ce brevet :", " : ", " ;", ".", "Description : ", "Revendications : "),
        _ => return None,
    })
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            claims: false,
            labels_by_language: true,
            label_language: "zh".into(),
            labels: BTreeMap::new(),
            compact_ipc: true,
            ipc_title_lang: "en".into(),
        }
    }
}

impl RenderConfig {
    /// The labels a document in `lang` is rendered with.
    pub fn labels_for(&self, lang: &str) -> Labels {
        let fallback = &self.label_language;
        let lang = if self.labels_by_language && (builtin_labels(lang).is_some() || self.labels.contains_key(lang)) {
            lang
        } else {
            fallback.as_str()
        };
        let mut l = builtin_labels(lang).or_else(|| builtin_labels(fallback)).or_else(|| builtin_labels("zh")).expect("zh labels");
        if let Some(o) = self.labels.get(lang) {
            for (field, v) in [
                (&mut l.title, &o.title),
                (&mut l.abstract_, &o.abstract_),
                (&mut l.ipc_header, &o.ipc_header),
                (&mut l.ipc_title_separator, &o.ipc_title_separator),
                (&mut l.ipc_item_end, &o.ipc_item_end),
                (&mut l.ipc_list_end, &o.ipc_list_end),
                (&mut l.description, &o.description),
                (&mut l.claims, &o.claims),
            ] {
                if let Some(v) = v {
                    *field = v.clone();
                }
            }
        }
        l
    }
}

/// Renders `p` into a document: the CoreTech text, with the patent's fields kept in the
/// document's columns and `meta`. Empty parts are left out with their labels.
pub fn render_patent(p: &Patent, cfg: &RenderConfig, scheme: Option<&IpcScheme>) -> Document {
    let labels = cfg.labels_for(&p.lang);
    let mut parts: Vec<String> = Vec::new();
    if !p.title.is_empty() {
        parts.push(format!("{}{}", labels.title, p.title));
    }
    if !p.abstract_text.is_empty() {
        parts.push(format!("{}{}", labels.abstract_, p.abstract_text));
    }
    if !p.ipc.is_empty() {
        let mut s = labels.ipc_header.clone();
        let n = p.ipc.len();
        for (i, sym) in p.ipc.iter().enumerate() {
            let shown = if cfg.compact_ipc { sym.replace(' ', "") } else { sym.clone() };
            let title = p
                .ipc_titles
                .get(i)
                .filter(|t| !t.is_empty())
                .cloned()
                .or_else(|| scheme.and_then(|sc| sc.title(sym, &cfg.ipc_title_lang)).map(str::to_string));
            s.push('\n');
            s.push_str(&shown);
            if let Some(t) = title {
                s.push_str(&labels.ipc_title_separator);
                s.push_str(&t);
            }
            s.push_str(if i + 1 == n { &labels.ipc_list_end } else { &labels.ipc_item_end });
        }
        parts.push(s);
    }
    if !p.description.is_empty() {
        parts.push(format!("{}{}", labels.description, p.description));
    }
    if cfg.claims && !p.claims.is_empty() {
        parts.push(format!("{}{}", labels.claims, p.claims.join("\n")));
    }
    let mut meta = p.meta.clone();
    meta.insert("number".into(), p.number.clone().into());
    Document {
        id: format!("{}:{}", p.source, p.number),
        source: p.source.clone(),
        lang: p.lang.clone(),
        title: p.title.clone(),
        ipc: p.ipc.clone(),
        date: p.date.clone(),
        text: parts.join("\n\n"),
        meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coretech_layout() {
        let p = Patent {
            source: "cnipa".into(),
            number: "CN1A".into(),
            lang: "zh".into(),
            title: "一种连接器".into(),
            abstract_text: "摘要文本".into(),
            ipc: vec!["H01R 13/64".into(), "H01R 35/00".into()],
            ipc_titles: vec!["Means for preventing incorrect coupling".into(), "Flexible line connectors".into()],
            description: "技术领域\n本发明涉及连接器领域。".into(),
            claims: vec!["1. 一种连接器。".into()],
            ..Default::default()
        };
        let d = render_patent(&p, &RenderConfig::default(), None);
        assert_eq!(
            d.text,
            "标题: 一种连接器\n\n摘要: 摘要文本\n\n该专利涉及IPC分类号包括：\nH01R13/64：Means for preventing incorrect coupling；\nH01R35/00：Flexible line connectors。\n\n详细描述: 技术领域\n本发明涉及连接器领域。"
        );
        assert_eq!(d.id, "cnipa:CN1A");
        let d = render_patent(&p, &RenderConfig { claims: true, ..Default::default() }, None);
        assert!(d.text.ends_with("\n\n权利要求: 1. 一种连接器。"));
    }

    #[test]
    fn labels_follow_the_language() {
        let p = |lang: &str| Patent {
            source: "epo".into(),
            number: "EP1A1".into(),
            lang: lang.into(),
            title: "T".into(),
            abstract_text: "A".into(),
            ipc: vec!["H01R 13/64".into(), "H01R 35/00".into()],
            ipc_titles: vec!["x".into(), "y".into()],
            description: "D".into(),
            claims: vec!["1. C".into()],
            ..Default::default()
        };
        let cfg = RenderConfig { claims: true, ..Default::default() };
        let r = |lang: &str, cfg: &RenderConfig| render_patent(&p(lang), cfg, None).text;
        assert_eq!(
            r("en", &cfg),
            "Title: T\n\nAbstract: A\n\nIPC classifications of this patent:\nH01R13/64: x;\nH01R35/00: y.\n\nDescription: D\n\nClaims: 1. C"
        );
        assert!(r("de", &cfg).starts_with("Titel: T\n\nZusammenfassung: A\n\nIPC-Klassifikationen dieses Patents:\nH01R13/64: x;"));
        assert!(r("fr", &cfg).starts_with("Titre : T\n\nAbrégé : A\n\nClassifications CIB de ce brevet :\nH01R13/64 : x ;"));
        // A language without a set falls back to `label_language`; CoreTech's behaviour on demand.
        assert!(r("ja", &cfg).starts_with("标题: T\n\n摘要: A"));
        let coretech = RenderConfig { labels_by_language: false, ..cfg.clone() };
        assert!(r("en", &coretech).starts_with("标题: T\n\n摘要: A\n\n该专利涉及IPC分类号包括：\nH01R13/64：x；"));
        // One label overridden, the others kept.
        let mut o = cfg.clone();
        o.labels.insert("en".into(), LabelOverrides { abstract_: Some("Summary: ".into()), ..Default::default() });
        assert!(r("en", &o).starts_with("Title: T\n\nSummary: A"));
        let o: RenderConfig = toml::from_str("[labels.ja]\ntitle = \"名称: \"\n").unwrap();
        assert!(r("ja", &o).starts_with("名称: T\n\n摘要: A"));
    }
}
