//! Hostile inputs through the command line, for what the in-process suites
//! (`docs_hostile_input.rs`, `stage_safety.rs`) cannot see: the exit status, and a memory bound
//! (each run is capped at 512 MiB of address space with `ulimit -v`, so a reader that buffers a
//! 1 GiB record or recurses into 100,000 nested elements fails here).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_coretech");
/// Address-space cap of each run, in KiB.
const CAP_KIB: u64 = 512 << 10;
const DEEP: usize = 100_000;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel)
}

fn insert_after(doc: &str, anchor: &str, what: &str) -> String {
    let at = doc.find(anchor).expect("anchor");
    let gt = at + doc[at..].find('>').unwrap() + 1;
    format!("{}{what}{}", &doc[..gt], &doc[gt..])
}

fn nest(open: &str, close: &str, n: usize) -> String {
    format!("{}deep{}", open.repeat(n), close.repeat(n))
}

/// `coretech ARGS` under the address-space cap.
fn capped(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {CAP_KIB}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// A folder of hostile inputs, each next to good records: a USPTO grant whose abstract nests
/// 100,000 elements (then two good applications), EPO claims nested as deep, a WuDao JSONL line
/// nesting 100,000 JSON arrays, and a gzip file whose second line decompresses to 1 GiB (twice
/// the cap) with no line break.
fn hostile_inputs(dir: &Path) -> Vec<PathBuf> {
    let grant = std::fs::read_to_string(data("uspto/US08930553-grant-v45.xml")).unwrap();
    let apps = std::fs::read_to_string(data("uspto/ipa130117.two-applications.xml")).unwrap();
    let uspto = dir.join("uspto-deep.xml");
    std::fs::write(&uspto, format!("{}\n{apps}", insert_after(&grant, "<abstract", &nest("<b>", "</b>", DEEP)).trim_end())).unwrap();
    let ep = std::fs::read_to_string(data("epo/EP3782854A1-v1-5.xml")).unwrap();
    let epo = dir.join("ep-deep-claims.xml");
    std::fs::write(&epo, insert_after(&ep, "<claim-text", &nest("<claim-text>", "</claim-text>", DEEP))).unwrap();
    let wudao = std::fs::read_to_string(data("wudao/coretech_wudao_demo.jsonl")).unwrap();
    let first = wudao.lines().next().unwrap();
    let json = dir.join("wudao-deep.jsonl");
    std::fs::write(&json, format!("{first}\n{{\"id\": 1, \"content\": {}0{}}}\n{first}\n", "[".repeat(DEEP), "]".repeat(DEEP))).unwrap();
    // 64 gzip members of 16 MiB of 'a' each: 1 GiB in one line, cheap to build.
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    member.write_all(&vec![b'a'; 16 << 20]).unwrap();
    let member = member.finish().unwrap();
    let mut head = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    head.write_all(format!("{first}\n").as_bytes()).unwrap();
    let mut bomb = head.finish().unwrap();
    for _ in 0..64 {
        bomb.extend_from_slice(&member);
    }
    let gz = dir.join("wudao-bomb.jsonl.gz");
    std::fs::write(&gz, bomb).unwrap();
    vec![uspto, epo, json, gz]
}

fn docs_config(dir: &Path, inputs: &[PathBuf], strict: bool) -> PathBuf {
    let list: Vec<String> = inputs.iter().map(|p| format!("{:?}", p.to_str().unwrap())).collect();
    let cfg = dir.join(if strict { "strict.toml" } else { "docs.toml" });
    let out = dir.join(if strict { "out-strict" } else { "out" });
    std::fs::write(&cfg, format!("[docs]\ninputs = [{}]\noutput = {:?}\nstrict = {strict}\n", list.join(", "), out.to_str().unwrap()))
        .unwrap();
    cfg
}

#[test]
fn hostile_inputs_exit_0_with_counted_errors_within_the_memory_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = hostile_inputs(tmp.path());
    let cfg = docs_config(tmp.path(), &inputs, false);
    let out = capped(&["docs", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out").join(coretech::stage::REPORT_FILE)).unwrap()).unwrap();
    let src = |s: &str| &report["sources"][s];
    assert_eq!(src("uspto")["kept"], 2, "{report:#}");
    assert_eq!(src("uspto")["errors"]["xml-too-deep"], 1, "{report:#}");
    assert_eq!(src("epo")["errors"]["xml-too-deep"], 1, "{report:#}");
    // The deep JSON line is one error; the bomb line is one too-large error; the good lines of
    // both files are kept.
    assert_eq!(src("wudao")["kept"], 3, "{report:#}");
    assert_eq!(src("wudao")["errors"]["json"], 1, "{report:#}");
    assert_eq!(src("wudao")["errors"]["too-large"], 1, "{report:#}");
}

#[test]
fn strict_stops_at_the_first_hostile_record_with_exit_1_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = hostile_inputs(tmp.path());
    let cfg = docs_config(tmp.path(), &inputs[..1], true);
    let out = capped(&["docs", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(error.contains("uspto-deep.xml") && error.contains("deeper than"), "{stderr}");
}
