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
//! Claims are appended (`权利要求: …`) when configured. Labels are configurable; the defaults
//! are CoreTech's, which the original system used for patents of every language.

use serde::{Deserialize, Serialize};

use crate::doc::{Document, Patent};
use crate::ipc::IpcScheme;

/// How patents are rendered.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// Append the claims.
    pub claims: bool,
    /// Label before the title.
    pub title_label: String,
    /// Label before the abstract.
    pub abstract_label: String,
    /// Line introducing the IPC list.
    pub ipc_header: String,
    /// Label before the description.
    pub description_label: String,
    /// Label before the claims.
    pub claims_label: String,
    /// Write IPC symbols compactly (`H04W24/02`, as CoreTech) instead of normalized (`H04W 24/02`).
    pub compact_ipc: bool,
    /// Language of the IPC titles taken from the scheme (`en` or `zh`), when the patent does not
    /// carry its own.
    pub ipc_title_lang: String,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            claims: false,
            title_label: "标题: ".into(),
            abstract_label: "摘要: ".into(),
            ipc_header: "该专利涉及IPC分类号包括：".into(),
            description_label: "详细描述: ".into(),
            claims_label: "权利要求: ".into(),
            compact_ipc: true,
            ipc_title_lang: "en".into(),
        }
    }
}

/// Renders `p` into a document: the CoreTech text, with the patent's fields kept in the
/// document's columns and `meta`. Empty parts are left out with their labels.
pub fn render_patent(p: &Patent, cfg: &RenderConfig, scheme: Option<&IpcScheme>) -> Document {
    let mut parts: Vec<String> = Vec::new();
    if !p.title.is_empty() {
        parts.push(format!("{}{}", cfg.title_label, p.title));
    }
    if !p.abstract_text.is_empty() {
        parts.push(format!("{}{}", cfg.abstract_label, p.abstract_text));
    }
    if !p.ipc.is_empty() {
        let mut s = cfg.ipc_header.clone();
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
                s.push('：');
                s.push_str(&t);
            }
            s.push(if i + 1 == n { '。' } else { '；' });
        }
        parts.push(s);
    }
    if !p.description.is_empty() {
        parts.push(format!("{}{}", cfg.description_label, p.description));
    }
    if cfg.claims && !p.claims.is_empty() {
        parts.push(format!("{}{}", cfg.claims_label, p.claims.join("\n")));
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
}
