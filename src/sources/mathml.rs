//! MathML as one line of plain text, the same for every office: `a/b`, `x_i`, `x^2`,
//! `x_i^2`, `√(x)`, `√[n](x)`, `lim_(x→0)`, fenced groups, table rows joined by `; `. Tokens
//! are set off by spaces (`y = (a + b)/x^2`: multi-letter identifiers such as `Response factor`
//! stay words); invisible operators (U+2061–U+2064), spacing, phantoms and annotations are
//! dropped, and so are formula images next to the MathML.
//!
//! Recursion follows the element tree, whose depth the XML parser bounds
//! ([`crate::io::xml::ParseOptions::max_depth`]).

use crate::io::xml::{collapse_ws, El};

/// Linear text of a MathML element (`math`, or a wrapper such as EPO's `maths` holding `math`
/// and its image).
pub fn mathml(el: El<'_>) -> String {
    let mut s = collapse_ws(&node(el));
    for (from, to) in [("( ", "("), ("[ ", "["), (" )", ")"), (" ]", "]"), (" ,", ","), (" ;", ";"), (" .", ".")] {
        s = s.replace(from, to);
    }
    s
}

fn node(el: El<'_>) -> String {
    let full = el.name();
    let local = full.rsplit(':').next().unwrap_or(full).to_ascii_lowercase();
    let parts = || el.children().map(node).collect::<Vec<String>>();
    let nth = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
    match local.as_str() {
        "mi" | "mn" | "mo" | "mtext" | "ms" => {
            collapse_ws(&el.raw_text().chars().filter(|c| !('\u{2061}'..='\u{2064}').contains(c)).collect::<String>())
        }
        "mspace" | "none" | "mprescripts" | "annotation" | "annotation-xml" | "mphantom" | "img" => String::new(),
        "mfrac" => {
            let v = parts();
            format!("{}/{}", group(&nth(&v, 0)), group(&nth(&v, 1)))
        }
        "msub" | "munder" => {
            let v = parts();
            format!("{}_{}", nth(&v, 0), group(&nth(&v, 1)))
        }
        "msup" | "mover" => {
            let v = parts();
            format!("{}^{}", nth(&v, 0), group(&nth(&v, 1)))
        }
        "msubsup" | "munderover" => {
            let v = parts();
            format!("{}_{}^{}", nth(&v, 0), group(&nth(&v, 1)), group(&nth(&v, 2)))
        }
        "msqrt" => format!("√({})", join_nonempty(&parts(), " ")),
        "mroot" => {
            let v = parts();
            format!("√[{}]({})", nth(&v, 1), nth(&v, 0))
        }
        "mfenced" => {
            let open = el.attr("open").unwrap_or("(");
            let close = el.attr("close").unwrap_or(")");
            let sep =
                el.attr("separators").map(|s| s.trim().chars().next().map(String::from).unwrap_or_default()).unwrap_or_else(|| ",".into());
            format!("{open}{}{close}", join_nonempty(&parts(), &format!("{sep} ")))
        }
        "mtable" => {
            let rows: Vec<String> = el.children().map(|r| join_nonempty(&r.children().map(node).collect::<Vec<_>>(), " ")).collect();
            join_nonempty(&rows, "; ")
        }
        _ => join_nonempty(&parts(), " "),
    }
}

fn join_nonempty(v: &[String], sep: &str) -> String {
    v.iter().filter(|s| !s.trim().is_empty()).map(|s| s.trim()).collect::<Vec<_>>().join(sep)
}

/// Parenthesizes a multi-token operand.
fn group(s: &str) -> String {
    let s = s.trim();
    if s.contains(' ') {
        format!("({s})")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::xml::XmlDoc;

    fn render(x: &str) -> String {
        mathml(XmlDoc::parse(x).unwrap().root())
    }

    #[test]
    fn elements() {
        assert_eq!(render("<math><mroot><mi>x</mi><mn>3</mn></mroot></math>"), "√[3](x)");
        assert_eq!(render("<math><msqrt><mi>x</mi><mo>+</mo><mn>1</mn></msqrt></math>"), "√(x + 1)");
        assert_eq!(render("<math><munder><mi>lim</mi><mrow><mi>x</mi><mo>→</mo><mn>0</mn></mrow></munder></math>"), "lim_(x → 0)");
        assert_eq!(render("<math><mover><mi>x</mi><mo>¯</mo></mover></math>"), "x^¯");
        assert_eq!(render("<m:math><m:msubsup><m:mi>x</m:mi><m:mi>i</m:mi><m:mn>2</m:mn></m:msubsup></m:math>"), "x_i^2");
        assert_eq!(render("<math><mfenced separators=\";\"><mi>a</mi><mi>b</mi></mfenced></math>"), "(a; b)");
        assert_eq!(render("<math><mi>f</mi><mo>\u{2061}</mo><mi>x</mi></math>"), "f x");
        assert_eq!(
            render("<math><mtable><mtr><mtd><mi>a</mi></mtd><mtd><mn>1</mn></mtd></mtr><mtr><mtd><mi>b</mi></mtd></mtr></mtable></math>"),
            "a 1; b"
        );
        // EPO's wrapper with the formula image.
        assert_eq!(render("<maths><math><mfrac><mi>D</mi><mn>2</mn></mfrac></math><img file=\"x.tif\"/></maths>"), "D/2");
    }

    fn uspto_doc(description: &str, abstract_: &str) -> String {
        format!(
            "<us-patent-grant><us-bibliographic-data-grant><publication-reference><document-id><country>US</country>\
             <doc-number>8000001</doc-number><kind>B2</kind><date>20150106</date></document-id></publication-reference>\
             <invention-title>T</invention-title></us-bibliographic-data-grant><abstract><p>{abstract_}</p></abstract>\
             <description><p>{description}</p></description><claims><claim><claim-text>1. A thing.</claim-text></claim></claims></us-patent-grant>"
        )
    }

    fn epo_doc(description: &str, claim: &str) -> String {
        format!(
            "<ep-patent-document lang=\"en\" doc-number=\"1000001\" kind=\"A1\" date-publ=\"20200101\">\
             <description lang=\"en\"><p>{description}</p></description><claims lang=\"en\"><claim num=\"1\"><claim-text>{claim}</claim-text></claim></claims></ep-patent-document>"
        )
    }

    fn parse(format: &str, xml: &str, cfg: &crate::sources::SourcesConfig) -> Result<crate::doc::Patent, crate::error::ReadError> {
        let raw = crate::io::RawRecord { file: "t.xml".into(), index: 0, offset: 0, line: 1, bytes: xml.as_bytes().to_vec() };
        match crate::sources::by_name(format).unwrap().parse(&raw, &crate::sources::ParseContext { cfg })? {
            crate::doc::Record::Patent(p) => Ok(p),
            other => panic!("{other:?}"),
        }
    }

    /// The same MathML gives the same text whichever office's document it is in.
    #[test]
    fn one_rendering_for_every_office() {
        let cfg = crate::sources::SourcesConfig::default();
        for math in [
            "<math><mroot><mi>x</mi><mn>3</mn></mroot></math>",
            "<math><mrow><mi>V</mi><mo>=</mo><mfrac><mn>4</mn><mn>3</mn></mfrac><msup><mrow><mo>(</mo><mfrac><mi>D</mi><mn>2</mn></mfrac><mo>)</mo></mrow><mn>3</mn></msup></mrow></math>",
            "<math><munderover><mo>∑</mo><mrow><mi>i</mi><mo>=</mo><mn>1</mn></mrow><mi>n</mi></munderover><msub><mi>x</mi><mi>i</mi></msub></math>",
        ] {
            let us = parse("uspto-ice", &uspto_doc(&format!("Area {math} holds."), "A"), &cfg).unwrap();
            let ep = parse("epo-xml", &epo_doc(&format!("Area <maths>{math}<img file=\"f.tif\"/></maths> holds."), "A thing."), &cfg).unwrap();
            let want = format!("Area {} holds.", render(math));
            assert_eq!((us.description.as_str(), ep.description.as_str()), (want.as_str(), want.as_str()));
        }
    }

    /// At the deepest nesting the config allows, the text walks fit a 2 MiB worker stack.
    #[test]
    fn the_deepest_allowed_documents_fit_a_worker_stack() {
        let cfg = crate::sources::SourcesConfig { max_xml_depth: 1024, ..Default::default() };
        let nest = |open: &str, close: &str, n: usize, inner: &str| format!("{}{inner}{}", open.repeat(n), close.repeat(n));
        let inline = nest("<b>", "</b>", 1018, "deep");
        let math = format!("<math>{}</math>", nest("<mrow>", "</mrow>", 1015, "<mfrac><mi>a</mi><mi>b</mi></mfrac>"));
        let claim = nest("<claim-text>", "</claim-text>", 1018, "deep");
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let us = parse("uspto-ice", &uspto_doc(&math, &inline), &cfg).unwrap();
                assert_eq!((us.abstract_text.as_str(), us.description.as_str()), ("deep", "a/b"));
                let ep = parse("epo-xml", &epo_doc(&inline, &claim), &cfg).unwrap();
                assert_eq!((ep.description.as_str(), ep.claims[0].as_str()), ("deep", "1. deep"));
                // One level more is a counted error, not a crash.
                let e = parse(
                    "epo-xml",
                    &epo_doc(&inline, &format!("<claim-text>{claim}</claim-text>{}", "")),
                    &crate::sources::SourcesConfig { max_xml_depth: 1022, ..Default::default() },
                )
                .unwrap_err();
                assert_eq!(e.kind, "xml-too-deep", "{e}");
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }
}
