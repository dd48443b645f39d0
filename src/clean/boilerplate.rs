//! Boilerplate: editor credits, "click to view" links, disclaimers and copyright lines that web
//! pages repeat on every article. Configured as regular expressions; every match is deleted.
//!
//! Patterns run in multi-line mode (`^`/`$` match at line starts/ends) after white space is
//! normalized (lines are trimmed). To remove whole lines, anchor both ends (`^…$`); to remove a
//! trailing credit from a line (WuDao articles are one line each), anchor the end only.

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::rewrite::run_stage;
use crate::error::{Error, Result};

/// Boilerplate removal.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BoilerplateConfig {
    /// Delete every match of `patterns`.
    pub enabled: bool,
    /// Regular expressions (Rust `regex` syntax, multi-line mode), applied in order; every
    /// match is deleted, and lines left empty disappear. Deleting repeats until nothing matches, so a credit exposed
    /// by deleting another (`本文来源：… 责任编辑：…`) goes too.
    pub patterns: Vec<String>,
}

impl Default for BoilerplateConfig {
    fn default() -> Self {
        // One bounded repetition per pattern, case spelled out, no Unicode `\b`: each pattern
        // then runs on the regex crate's fast automaton behind a literal prefilter.
        let patterns = [
            // WuDao news: `… 本文来源：X 责任编辑：Z` at the end of the article (one line).
            r"责任编辑[:：][^\n。！？]{0,30}$",
            // What a deleted credit leaves at the line end: `点击进入专题：X`, `本文来源：Y`.
            r"(?:点击进入专题|本文来源)[:：][^\n。！？]{0,40}$",
            // "Click to view / enter / follow …" at the end of a line.
            r"点击(?:查看|进入|阅读|关注)[^\n。！？]{0,40}[。！？!]?$",
            // Disclaimers at the end of a line: `声明：文字原创，图片来自网络。如有侵权，请联系我们删除，谢谢。`
            r"[（(]?(?:免责)?声明[:：][^\n]{0,80}(?:侵权|删除|转载)[^\n]{0,40}$",
            // Copyright lines.
            r"^(?:©|\([cC]\)|版权所有|[Cc]opyright|COPYRIGHT)[^\n]{0,120}$",
            // Navigation lines.
            r"^(?:上一篇|下一篇|返回顶部|分享到|相关阅读|[Ss]hare this|[Cc]lick here|[Rr]ead more)[:：]?[^\n]{0,60}$",
        ];
        Self { enabled: true, patterns: patterns.iter().map(|s| s.to_string()).collect() }
    }
}

/// The compiled patterns.
#[derive(Debug)]
pub struct Boilerplate {
    patterns: Vec<Regex>,
}

impl Boilerplate {
    /// Compiles the patterns (multi-line mode); a bad pattern is an error naming its index.
    pub fn new(cfg: &BoilerplateConfig) -> Result<Self> {
        let patterns = cfg
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(&format!("(?m){p}")).map_err(|e| Error::Config {
                    file: String::new(),
                    key: format!("clean.boilerplate.patterns[{i}]"),
                    message: format!("invalid regular expression: {e}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { patterns })
    }

    /// Deletes the matches of each pattern in turn (one round; the caller repeats while it
    /// changes). Returns whether anything was deleted.
    pub fn run(&self, text: &mut String, buf: &mut String) -> bool {
        let mut changed = false;
        for re in &self.patterns {
            changed |= run_stage(text, buf, |w| {
                let src = w.src();
                let mut last = 0;
                for m in re.find_iter(src) {
                    w.keep(last, m.start());
                    last = m.end();
                }
                w.keep(last, src.len());
            });
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remove(s: &str) -> String {
        let b = Boilerplate::new(&BoilerplateConfig::default()).unwrap();
        let mut t = s.to_string();
        let mut buf = String::new();
        while b.run(&mut t, &mut buf) {}
        t
    }

    #[test]
    fn wudao_credits() {
        // Real WuDao endings (wudaosailing_corpus_test.json).
        assert_eq!(remove("王兴2020.1.20本文来源：网易科技报道责任编辑：乔俊婧_NBJ11279"), "王兴2020.1.20");
        assert_eq!(remove("才能定罪。 记者：孙丁陈静点击进入专题：特朗普弹劾案责任编辑：张义凌"), "才能定罪。 记者：孙丁陈静");
        assert_eq!(remove("坚决防止“灯下黑”。 新京报记者吴为责任编辑：杨杰"), "坚决防止“灯下黑”。 新京报记者吴为");
        assert_eq!(remove("酷炫又帅气。 声明：文字原创，图片来自网络。如有侵权，请联系我们删除，谢谢。"), "酷炫又帅气。 ");
        assert_eq!(
            remove("时髦感满满，还超级有气质的呢！ 点击关注，每天为你传递最新时尚资讯！（声明：文字原创，抄袭必究，图片来自网络，如有侵权，请联系删除。）"),
            "时髦感满满，还超级有气质的呢！ "
        );
    }

    #[test]
    fn whole_lines() {
        assert_eq!(
            remove("正文第一段。\nCopyright © 2019 Example Inc. All rights reserved.\n正文第二段。"),
            "正文第一段。\n\n正文第二段。"
        );
        assert_eq!(remove("text\n上一篇：某文章\n下一篇：另一篇"), "text\n\n");
        assert_eq!(remove("点击查看大图"), "");
        // Mid-line mentions and long lines stay.
        let keep = "眼影盘 Copyright 2019@Cosmetic美妆大赏 参考价格： 35";
        assert_eq!(remove(keep), keep);
        let patent = "A portion of the disclosure of this patent document contains material which is subject to copyright protection.";
        assert_eq!(remove(patent), patent);
        assert_eq!(remove("中国版权协会版权监测中心主任吴冠勇称。"), "中国版权协会版权监测中心主任吴冠勇称。");
    }

    #[test]
    fn bad_pattern_names_its_index() {
        let cfg = BoilerplateConfig { enabled: true, patterns: vec!["ok".into(), "(unclosed".into()] };
        let e = Boilerplate::new(&cfg).unwrap_err().to_string();
        assert!(e.contains("patterns[1]"), "{e}");
    }
}
