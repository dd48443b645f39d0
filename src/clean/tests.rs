//! Tests of the whole pipeline: hand-made bad texts, every fixture text, idempotency.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::io::xml::{El, XmlDoc};

/// A text to clean, from a fixture.
pub(crate) struct FixtureText {
    pub collection: &'static str,
    pub id: String,
    pub lang: String,
    pub text: String,
}

fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

/// Paragraph-like elements of the patent XML formats, taken as one line each.
const PARAGRAPHS: &[&str] =
    &["p", "paragraph", "PARA", "heading", "H", "claim-text", "CLMSTEP", "invention-title", "title-of-invention", "B542"];

fn paragraphs(e: El<'_>, out: &mut Vec<String>) {
    for c in e.children() {
        if PARAGRAPHS.contains(&c.name()) {
            let t = c.text();
            if !t.is_empty() {
                out.push(t);
            }
        } else {
            paragraphs(c, out);
        }
    }
}

/// Every text of the fixture sources: the JSON ones as their readers give them (WuDao
/// `content`, CoreTech patents `text`, IPC `des`); the EP full-text TSV with its inline
/// markup, raw; the XML patents as one paragraph per line (a stand-in for the readers).
pub(crate) fn fixture_texts() -> Vec<FixtureText> {
    let mut out = Vec::new();
    let wudao: Vec<serde_json::Value> = serde_json::from_str(&fixture("wudao/wudaosailing_corpus_test.json")).unwrap();
    for v in &wudao {
        out.push(FixtureText {
            collection: "wudao-json",
            id: v["id"].to_string(),
            lang: "zh".into(),
            text: str_field(v, "content").into(),
        });
    }
    for line in fixture("wudao/coretech_wudao_demo.jsonl").lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        out.push(FixtureText {
            collection: "wudao-jsonl",
            id: v["id"].to_string(),
            lang: "zh".into(),
            text: str_field(&v, "content").into(),
        });
    }
    let patents: Vec<serde_json::Value> = serde_json::from_str(&fixture("cnipa/coretech_Patent_demo.json")).unwrap();
    for v in &patents {
        out.push(FixtureText {
            collection: "cnipa",
            id: str_field(v, "patent_id").into(),
            lang: "zh".into(),
            text: str_field(v, "text").into(),
        });
    }
    for (collection, file) in
        [("ipc-demo", "ipc/coretech_ipcDes_demo.jsonl"), ("ipc-expand", "ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl")]
    {
        for line in fixture(file).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(FixtureText { collection, id: str_field(&v, "ipc").into(), lang: "zh".into(), text: str_field(&v, "des").into() });
        }
    }
    // EP full text: one document per publication, in the language of its description.
    let mut ep: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in fixture("epo/EP0600000-fulltext-sample.tsv").lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 7, "{line}");
        let e = ep.entry(f[1].to_string()).or_default();
        if f[5] == "DESCR" {
            e.0 = f[4].to_string();
        }
        if f[5] != "PDFEP" && (f[5] != "TITLE" || f[4] == "en") {
            e.1.push(f[6].to_string());
        }
    }
    for (id, (lang, parts)) in ep {
        out.push(FixtureText { collection: "epo-tsv", id, lang, text: parts.join("\n\n") });
    }
    // XML patents (bulk files hold several documents, each with its own declaration).
    let xml_files = [
        "epo/EP1442058B1-v1-0.xml",
        "epo/EP1873405A2-v1-2.xml",
        "epo/EP2716170B2-v1-5-1.xml",
        "epo/EP3782854A1-v1-5.xml",
        "uspto/US06336130-grant-v25-PATDOC.xml",
        "uspto/US08930553-grant-v45.xml",
        "uspto/US20010000943A1-pap-v15.xml",
        "uspto/US20230080311A1-20230316-application-v46.xml",
        "uspto/ipa130117.two-applications.xml",
        "uspto/ipg130416.small.xml",
    ];
    for file in xml_files {
        let all = fixture(file);
        for (k, part) in all.split("<?xml").filter(|p| !p.trim().is_empty()).enumerate() {
            let doc = XmlDoc::parse(&format!("<?xml{part}")).unwrap_or_else(|e| panic!("{file} #{k}: {e}"));
            let root = doc.root();
            if root.name() == "sequence-cwu" {
                continue;
            }
            let mut lines = Vec::new();
            paragraphs(root, &mut lines);
            let lang = root.attr("lang").unwrap_or("en").to_string();
            out.push(FixtureText {
                collection: if file.starts_with("epo") { "epo-xml" } else { "uspto-xml" },
                id: format!("{file}#{k}"),
                lang,
                text: lines.join("\n"),
            });
        }
    }
    out
}

fn cleaner() -> Cleaner {
    Cleaner::new(&CleanConfig::default()).unwrap()
}

fn doc(lang: &str, text: &str) -> Document {
    Document { id: "t:1".into(), source: "t".into(), lang: lang.into(), text: text.into(), ..Default::default() }
}

fn verdict(c: &Cleaner, lang: &str, text: &str) -> std::result::Result<String, String> {
    let mut d = doc(lang, text);
    c.apply(&mut d).map(|_| d.text)
}

/// The measured values behind every filter, for one text (normalized first).
fn measure(c: &Cleaner, lang: &str, text: &str) -> Vec<(String, f64)> {
    let mut t = text.to_string();
    c.normalize(&mut t);
    let mut units = stats::Units::default();
    let mut lines = Vec::new();
    let st = stats::compute(&t, &mut units, &mut lines);
    units.prepare_pow(c.repetition.max_n());
    let profile = c.script.profile(lang, &st);
    let mut s = repetition::Scratch::default();
    let r = c.repetition.lines(&lines, st.chars, &mut s);
    let mut m = vec![
        ("chars".to_string(), st.chars as f64),
        ("script_ratio".into(), st.script_ratio(c.script.rule(lang).map_or(profile, |r| r.script))),
        ("symbol_ratio".into(), stats::ratio(st.symbols, st.units)),
        ("alpha_ratio".into(), stats::ratio(st.alpha_units, st.units)),
        ("bullet_lines".into(), stats::ratio(st.bullet_lines, st.lines)),
        ("ellipsis_lines".into(), stats::ratio(st.ellipsis_lines, st.lines)),
        ("mean_word_chars".into(), stats::ratio(st.word_chars, st.words)),
        ("dup_line_frac".into(), r.dup_line_frac),
        ("dup_line_char_frac".into(), r.dup_line_char_frac),
        ("dup_para_frac".into(), r.dup_para_frac),
        ("dup_para_char_frac".into(), r.dup_para_char_frac),
    ];
    let (top, dup) = match profile {
        Script::Cjk => (&c.cfg.repetition.cjk.top, &c.cfg.repetition.cjk.duplicated),
        Script::Latin => (&c.cfg.repetition.latin.top, &c.cfg.repetition.latin.duplicated),
    };
    for l in top {
        let v = repetition::RepetitionFilter::top_ngram_chars(&units, l.n, &mut s);
        m.push((format!("top_{}", l.n), stats::ratio(v, st.chars)));
    }
    for l in dup {
        let v = repetition::RepetitionFilter::duplicated_ngram_chars(&units, l.n, &mut s);
        m.push((format!("dup_{}", l.n), stats::ratio(v, st.chars)));
    }
    m
}

/// Gopher's web-text thresholds on our units (CJK n-grams at twice Gopher's n).
fn gopher_config() -> CleanConfig {
    let lim = |v: &[(usize, f64)]| v.iter().map(|&(n, max_frac)| NgramLimit { n, max_frac }).collect::<Vec<_>>();
    let mut c = CleanConfig::default();
    c.repetition.max_dup_line_frac = 0.3;
    c.repetition.max_dup_line_char_frac = 0.2;
    c.repetition.latin.duplicated = lim(&[(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]);
    c.repetition.cjk.top = lim(&[(4, 0.20), (6, 0.18), (8, 0.16)]);
    c.repetition.cjk.duplicated = lim(&[(10, 0.15), (12, 0.14), (14, 0.13), (16, 0.12), (18, 0.11), (20, 0.10)]);
    c.quality.cjk.min_alpha_ratio = 0.8;
    c
}

/// Prints the distribution of every measure per collection (for choosing thresholds), and
/// what the default and Gopher's thresholds drop:
/// `cargo test --lib clean::tests::print_fixture_measures -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_fixture_measures() {
    let c = cleaner();
    let texts = fixture_texts();
    let mut by: BTreeMap<(&str, String), Vec<(f64, String)>> = BTreeMap::new();
    for t in &texts {
        let profile = if t.lang == "zh" { "cjk" } else { "latin" };
        for (k, v) in measure(&c, &t.lang, &t.text) {
            by.entry((profile, k)).or_default().push((v, format!("{}:{}", t.collection, t.id)));
        }
    }
    for ((p, k), mut v) in by {
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let n = v.len();
        let q = |f: f64| v[((n - 1) as f64 * f) as usize].0;
        let top: Vec<String> = v.iter().rev().take(4).map(|(x, id)| format!("{x:.3} {id}")).collect();
        println!("{p:5} {k:20} min {:8.3} ({})  p50 {:8.3}  p99 {:8.3}  top {}", v[0].0, v[0].1, q(0.5), q(0.99), top.join(", "));
    }
    for (name, cfg) in [("default", CleanConfig::default()), ("gopher", gopher_config())] {
        let c = Cleaner::new(&cfg).unwrap();
        let mut drops: BTreeMap<(&str, String), usize> = BTreeMap::new();
        for t in &texts {
            if let Err(r) = verdict(&c, &t.lang, &t.text) {
                *drops.entry((t.collection, r)).or_default() += 1;
            }
        }
        println!("{name}: {drops:?}");
    }
}

/// Every fixture text is kept by the default config, except the ones listed here with the
/// filter that drops them and why.
#[test]
fn default_config_keeps_the_fixture_texts() {
    let c = cleaner();
    let texts = fixture_texts();
    // Each collection is all there (counts from PROVENANCE.md; XML: 4 EP + 31 US documents).
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &texts {
        *counts.entry(t.collection).or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> = [
        ("wudao-json", 478),
        ("wudao-jsonl", 10),
        ("cnipa", 10),
        ("ipc-demo", 10),
        ("ipc-expand", 2856),
        ("epo-tsv", 3),
        ("epo-xml", 4),
        ("uspto-xml", 31),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);

    let mut dropped: Vec<(String, String)> = Vec::new();
    for t in &texts {
        if let Err(reason) = verdict(&c, &t.lang, &t.text) {
            dropped.push((format!("{}:{}", t.collection, t.id), reason));
        }
    }
    // wudao-json 272 is one sentence ("男生时尚潮流发型，这几款流行发型，每一款都很受欢迎")
    // repeated 15 times: 82 % of its characters are in repeated 10-grams.
    assert_eq!(dropped, [("wudao-json:272".to_string(), "repeated_10_grams".to_string())]);
}

/// The EP full text arrives with inline markup; cleaning leaves readable paragraphs.
#[test]
fn ep_full_text_markup_is_stripped() {
    let c = cleaner();
    let t = fixture_texts().into_iter().find(|t| t.collection == "epo-tsv" && t.id == "0600083").unwrap();
    let out = verdict(&c, &t.lang, &t.text).unwrap();
    assert!(!out.contains('<') && !out.contains("&#"), "{}", &out[..500]);
    assert!(out.contains("Field of Technology\n\nThis invention relates to a paper sheet conveying"), "{}", &out[..500]);
    // The comment `<!-- EPO <DP n="2"> -->` inside a sentence is gone, the sentence joined.
    assert!(out.contains("the distal end of the contact 1 acts at a point a in FIG. 6"), "{out}");
}

#[test]
fn web_page_leftovers_are_normalized() {
    let c = cleaner();
    let page = "\u{feff}<p>本文介绍&nbsp;GPU&amp;CPU的&#x201c;协同&#x201d;计算。</p>\r\n<br><br>\r\n\r\n\r\n<div class=\"c\">第二段　　内容，使用全角标点（括号）：１２３。</div>\u{0}\n点击查看更多\n责任编辑：张三";
    let mut t = page.to_string();
    c.normalize(&mut t);
    assert_eq!(t, "本文介绍 GPU&CPU的“协同”计算。\n\n第二段 内容，使用全角标点（括号）：１２３。");
}

#[test]
fn bad_texts_are_dropped_by_the_right_filter() {
    let c = cleaner();
    let en = "The present invention relates to a paper sheet conveying apparatus which successively conveys paper sheets sideways in an upright posture and lets them fall after arranging them. ";
    let zh = "本发明涉及边缘计算领域，具体涉及一种边缘推断应用干扰感知的GPU资源配置方法、装置和系统。边缘计算作为一种创新的计算模式，通过将云计算的核心功能下移至网络边缘，缩短了数据处理的距离。";
    // Good texts first: both kept under their own language, and a Chinese text without any
    // spaces is not "too few words".
    assert!(verdict(&c, "en", en).is_ok());
    assert!(verdict(&c, "zh", zh).is_ok());
    assert!(verdict(&c, "", zh).is_ok(), "no language: units follow the letters");
    assert!(verdict(&c, "", en).is_ok());

    let cases: Vec<(&str, String, &str)> = vec![
        ("en", "Buy cheap watches online today at the best price!\n".repeat(30), "repeated_lines"),
        ("zh", "点击这里免费领取优惠券，限时抢购！\n".repeat(30), "repeated_lines"),
        ("zh", format!("{zh}\n\n{}", "好消息好消息，全场五折，走过路过不要错过。".repeat(20)), "top_8_gram"),
        ("zh", "哈".repeat(300), "top_4_gram"),
        ("en", format!("{en}{}", "spam ".repeat(200)), "top_2_gram"),
        ("en", "★★★ ■■■ ◆◆◆ → → → ※※※ 123 456 789 ==== ---- !!!! ???? $$$$ %%%% ^^^^ |||| ~~~~ ++++ ;;;; :::: ///".to_string(), "alpha_ratio"),
        ("zh", "★★★■■■◆◆◆→→→※※※①②③④⑤⑥⑦⑧⑨⑩１２３４５６７８９０，。、；：？！…—～·「」『』【】〔〕〈〉《》".to_string(), "alpha_ratio"),
        ("en", "#deal #sale #cheap #watch #bag #shoes #style #fashion #love #instagood #photooftheday #cute #beautiful #happy".to_string(), "symbol_ratio"),
        ("zh", format!("本页内容: {}", "This page is mostly English text about patents and machine learning, with a few Chinese words. ".repeat(3)), "cjk_ratio"),
        ("en", format!("{zh}{zh} abstract"), "latin_ratio"),
        ("en", "Read the full story about the new phone that everyone is talking about this week...\nYou will not believe what happened next when the neighbours came home from their trip...\nTen tricks that doctors in your town really hate and never tell their patients about...\nClick to see more stories like this one\n".to_string(), "ellipsis_lines"),
        ("en", "• item one of the list here\n• item two of the list here\n• item three of the list\n• item four of the list".to_string(), "bullet_lines"),
        ("en", "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis".to_string(), "word_length"),
        ("zh", "<p></p>&nbsp;\u{200b}\u{3000}\r\n<br/>&#x3000;".to_string(), "empty"),
        ("zh", "责任编辑：张三\n点击查看更多\nCopyright © 2020 某某网 版权所有\n上一篇：某文章".to_string(), "empty"),
        ("zh", "短文本。".to_string(), "min_length"),
        ("zh", "专".repeat(1_000_001), "max_length"),
    ];
    for (lang, text, want) in cases {
        assert_eq!(verdict(&c, lang, &text), Err(want.to_string()), "{lang}: {}", text.chars().take(80).collect::<String>());
    }
}

#[test]
fn switches_and_thresholds_come_from_the_config() {
    let off = CleanConfig {
        unicode: UnicodeForm::None,
        controls: ControlsConfig { enabled: false, ..Default::default() },
        entities: EntitiesConfig { enabled: false },
        markup: MarkupConfig { enabled: false, ..Default::default() },
        whitespace: WhitespaceConfig { enabled: false, ..Default::default() },
        boilerplate: BoilerplateConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let c = Cleaner::new(&off).unwrap();
    let raw = " e\u{301} &amp; <b>x</b>\r\n责任编辑：张三 ";
    let mut t = raw.to_string();
    c.normalize(&mut t);
    assert_eq!(t, raw);

    let nfkc = Cleaner::new(&CleanConfig { unicode: UnicodeForm::Nfkc, ..Default::default() }).unwrap();
    let mut t = "全角（括号）：１２３".to_string();
    nfkc.normalize(&mut t);
    assert_eq!(t, "全角(括号):123");

    let strict = CleanConfig { length: LengthConfig { min_chars: 10_000, max_chars: 20_000 }, ..Default::default() };
    assert_eq!(verdict(&Cleaner::new(&strict).unwrap(), "en", &"word ".repeat(100)), Err("min_length".into()));
    let no_filters = CleanConfig {
        script: ScriptConfig { enabled: false, ..Default::default() },
        quality: QualityConfig { enabled: false, ..Default::default() },
        repetition: RepetitionConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    assert!(verdict(&Cleaner::new(&no_filters).unwrap(), "zh", &"spam spam spam\n".repeat(50)).is_ok());
}

#[test]
fn config_from_toml_and_its_errors() {
    let cfg: CleanConfig = toml::from_str(
        r#"
        unicode = "nfkc"
        [whitespace]
        max_newlines = 1
        [boilerplate]
        patterns = ["^广告$"]
        [script.rules.zh]
        script = "cjk"
        min_ratio = 0.9
        [repetition.cjk]
        top = [{ n = 3, max_frac = 0.5 }]
        "#,
    )
    .unwrap();
    assert_eq!(cfg.unicode, UnicodeForm::Nfkc);
    assert_eq!(cfg.whitespace.max_newlines, 1);
    assert!(cfg.whitespace.enabled, "unset fields keep their defaults");
    assert_eq!(cfg.script.rules.len(), 1, "a rules table replaces the default table");
    assert_eq!(cfg.repetition.cjk.top, [NgramLimit { n: 3, max_frac: 0.5 }]);
    assert_eq!(cfg.repetition.cjk.duplicated, CjkNgrams::default().duplicated);
    assert!(Cleaner::new(&cfg).is_ok());

    let e = toml::from_str::<CleanConfig>("[whitespace]\nmax_newline = 1\n").unwrap_err().to_string();
    assert!(e.contains("max_newline"), "{e}");
    let err = |cfg: CleanConfig| Cleaner::new(&cfg).unwrap_err().to_string();
    assert!(err(CleanConfig { whitespace: WhitespaceConfig { max_newlines: 0, ..Default::default() }, ..Default::default() })
        .contains("clean.whitespace.max_newlines"));
    let bad_re = BoilerplateConfig { patterns: vec!["(".into()], ..Default::default() };
    assert!(err(CleanConfig { boilerplate: bad_re, ..Default::default() }).contains("clean.boilerplate.patterns[0]"));
    let mut rep = RepetitionConfig::default();
    rep.latin.duplicated.push(NgramLimit { n: 0, max_frac: 0.1 });
    assert!(err(CleanConfig { repetition: rep, ..Default::default() }).contains("clean.repetition.latin.duplicated"));
    let mut script = ScriptConfig::default();
    script.rules.insert("xx".into(), ScriptRule { script: Script::Latin, min_ratio: 1.5 });
    assert!(err(CleanConfig { script, ..Default::default() }).contains("clean.script.rules.xx.min_ratio"));
    assert!(err(CleanConfig { length: LengthConfig { min_chars: 5, max_chars: 4 }, ..Default::default() }).contains("clean.length"));
}

/// The pipeline file's schema checks the clean section, naming the key.
#[test]
fn pipeline_schema_names_clean_keys() {
    let base = "[docs]\ninputs=[\"x\"]\noutput=\"o\"\n";
    let e = crate::config::PipelineConfig::parse(&format!("{base}[docs.clean.whitespace]\nmax_newlines = 0\n"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("docs.clean.whitespace.max_newlines"), "{e}");
    let e =
        crate::config::PipelineConfig::parse(&format!("{base}[docs.clean.script.rules.zh]\nscript = \"han\"\nmin_ratio = 0.5\n"), "t.toml")
            .unwrap_err()
            .to_string();
    assert!(e.contains("docs.clean.script.rules.zh.script"), "{e}");
    let ok = crate::config::PipelineConfig::parse(
        &format!("{base}[docs.clean]\nunicode = \"nfkc\"\n[docs.clean.length]\nmin_chars = 10\n"),
        "t.toml",
    )
    .unwrap();
    let clean = ok.docs.unwrap().clean;
    assert_eq!((clean.unicode, clean.length.min_chars, clean.length.max_chars), (UnicodeForm::Nfkc, 10, LengthConfig::default().max_chars));
}

/// Same results on many threads as on one (the per-thread scratch is reused correctly).
#[test]
fn parallel_results_equal_sequential() {
    use rayon::prelude::*;
    let c = cleaner();
    let texts: Vec<FixtureText> = fixture_texts().into_iter().filter(|t| t.collection != "ipc-expand").collect();
    let one: Vec<_> = texts.iter().map(|t| verdict(&c, &t.lang, &t.text)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let many: Vec<_> = pool.install(|| texts.par_iter().map(|t| verdict(&c, &t.lang, &t.text)).collect());
    assert_eq!(one, many);
}

/// Fixture texts are already clean once cleaned.
#[test]
fn fixture_cleaning_is_idempotent() {
    let c = cleaner();
    for t in fixture_texts() {
        let mut once = t.text.clone();
        c.normalize(&mut once);
        let mut twice = once.clone();
        c.normalize(&mut twice);
        assert!(once == twice, "{}:{}", t.collection, t.id);
    }
}

/// Cases the property test once found: a deletion exposes work for an earlier stage.
#[test]
fn found_idempotency_cases() {
    let c = cleaner();
    for (input, want) in [
        // Boilerplate deletion exposes a processing instruction `<?…-->`.
        ("<?责任编辑：&lt;¡<br>0-->", ""),
        // Removing a zero-width space brings a base and its combining mark together.
        ("c\u{200b}\u{301}", "ć"),
        // NFC maps U+037E to `;`, completing an entity.
        ("&amp\u{37e}lt\u{37e}", "<"),
    ] {
        let mut t = input.to_string();
        c.normalize(&mut t);
        assert_eq!(t, want, "{input:?}");
    }
}

/// Adversarial nesting is bounded by `max_rounds` and still ends tidy.
#[test]
fn adversarial_nesting_is_bounded() {
    let c = cleaner();
    // Each round deletes only the last credit of the chain (the pattern needs the line end
    // within 30 characters), and the last round does not delete.
    let chain = format!("正文。{}", "责任编辑：甲乙丙丁戊己庚辛壬癸甲乙丙丁戊己庚辛壬癸".repeat(20));
    let mut t = chain.clone();
    c.normalize(&mut t);
    assert_eq!(t.matches("责任编辑").count(), 20 - (CleanConfig::default().max_rounds - 1));
    let unbounded = Cleaner::new(&CleanConfig { max_rounds: 100, ..Default::default() }).unwrap();
    let mut t = chain;
    unbounded.normalize(&mut t);
    assert_eq!(t, "正文。");
    // Markup nested in entities: `&lt;` inside `<b>` inside `&lt;` …
    let mut t = format!("x{}y", "&amp;lt;b&amp;gt;<b></b>".repeat(50));
    c.normalize(&mut t);
    assert_eq!(t, "xy");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Pieces that make the stages interact: references, tags, line ends, combining marks,
    /// NFC singletons that become ASCII, credits, white space of every kind.
    fn piece() -> impl Strategy<Value = String> {
        const TRICKY: &[&str] = &[
            "&amp;",
            "&lt;",
            "&gt;",
            "&#x301;",
            "&#x37e;",
            "&#59;",
            "amp;",
            "lt;",
            "&",
            ";",
            "#x",
            "<",
            ">",
            "/",
            "<b>",
            "</b>",
            "<br>",
            "<p class=\"a\">",
            "</p>",
            "<!--",
            "-->",
            "<?",
            "?>",
            "\r",
            "\n",
            "\n\n\n",
            "\t",
            " ",
            "\u{a0}",
            "\u{3000}",
            "\u{200b}",
            "\u{feff}",
            "\u{85}",
            "\u{0}",
            "\u{7}",
            "\u{301}",
            "\u{327}",
            "e",
            "A",
            "\u{37e}",
            "\u{212b}",
            "\u{212a}",
            "责任编辑：",
            "点击查看",
            "本文来源：",
            "声明：",
            "侵权",
            "Copyright ",
            "©",
            "中",
            "文",
            "。",
            "，",
            "…",
            "...",
        ];
        prop_oneof![
            3 => any::<char>().prop_map(String::from),
            4 => proptest::sample::select(TRICKY).prop_map(str::to_string),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..60).prop_map(|v| v.concat())
    }

    fn shared() -> &'static Cleaner {
        static C: std::sync::LazyLock<Cleaner> = std::sync::LazyLock::new(|| Cleaner::new(&CleanConfig::default()).unwrap());
        &C
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn cleaning_is_idempotent(s in text()) {
            let c = shared();
            let mut once = s.clone();
            c.normalize(&mut once);
            let mut twice = once.clone();
            c.normalize(&mut twice);
            prop_assert_eq!(&once, &twice, "input {:?}", s);
        }

        #[test]
        fn never_panics_on_arbitrary_unicode(s in "\\PC*", lang in prop_oneof![Just(""), Just("zh"), Just("en"), Just("de")]) {
            let c = shared();
            let mut d = doc(lang, &s);
            let _ = c.apply(&mut d);
            let mut d = doc(lang, &format!("{s}{s}"));
            let _ = c.apply(&mut d);
        }
    }
}
