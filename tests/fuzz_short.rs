//! The fuzz targets' bodies (`fuzz/src/lib.rs`, also run by cargo-fuzz), run here on stable
//! Rust, seeded and short: each target mutates its seed files (the fixtures) with proptest
//! byte-level mutations — bit flips, byte changes, insertions, deletions, duplicated slices,
//! truncation, dictionary tokens, deep nesting — for a fixed number of cases from a fixed seed,
//! so every run sees the same inputs. A case that panics is shrunk, written to
//! `target/fuzz-failures/` and reported; a crash found this way becomes a fixture under
//! `fixtures/bad/` with a regression test (`fuzz_regressions` below).
//!
//! `CORETECH_FUZZ_CASES=N` runs N cases per target instead of the default (a longer run);
//! `CORETECH_FUZZ_SEED=S` draws other inputs.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Cases per target by default: all targets together take about 5 CPU-seconds (4.6 s user for
/// the whole file in a dev build, 23.6 s wall on the shared 2-core machine at load 10).
const DEFAULT_CASES: u32 = 500;

/// Largest seed used whole; bigger fixtures are cut at the last line break before this.
const SEED_BYTES: usize = 48 << 10;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> u32 {
    std::env::var("CORETECH_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("CORETECH_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261207)
}

/// Every file under `dirs` (relative to the crate), sorted by its path relative to the crate.
fn files(dirs: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root().join(d)).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.is_file() && p.extension().is_none_or(|e| e != "md") {
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.strip_prefix(root()).unwrap().to_path_buf());
    out
}

/// A seed: the file, cut to [`SEED_BYTES`] at a line break when longer.
fn seed_bytes(p: &Path) -> Vec<u8> {
    let mut b = std::fs::read(p).unwrap();
    if b.len() > SEED_BYTES {
        let cut = b[..SEED_BYTES].iter().rposition(|&c| c == b'\n').map_or(SEED_BYTES, |i| i + 1);
        b.truncate(cut);
    }
    b
}

/// Tokens the mutator splices in: structure of every format read.
const DICTIONARY: &[&[u8]] = &[
    b"<",
    b">",
    b"</",
    b"/>",
    b"<?xml version=\"1.0\"?>\n",
    b"<!DOCTYPE x [<!ENTITY a \"&b;\">]>",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"&undefined;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<math><mroot><mi>x</mi></mroot></math>",
    b"<claim-text>",
    b"</claim-text>",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"1e999",
    b"-0",
    b"\n",
    b"\r\n",
    b"\t",
    b"\0",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\xc3",
    b"\xe2\x80\xae",
    b"\x1f\x8b\x08",
    b"\x28\xb5\x2f\xfd",
    b"PK\x03\x04",
    b"PATN\n",
    b"WKU  ",
    b"ABST\n",
    b"PAL  ",
    b"question,answer\n",
    b"\"conversations\": [",
    b"{\"from\": \"human\", \"value\": ",
    b"\"instruction\": ",
    b"\"output\": ",
    b"\"RECORDS\": [",
    b"[docs]\n",
    b"stages = [\"docs\"]\n",
    b"inputs = []\n",
    b"= 9223372036854775807\n",
    b"= -1\n",
    b"= nan\n",
    b"[[train.x.data.stages]]\n",
];

/// One byte-level mutation: what, where (a fraction of the length), how much, which byte or token.
type Mutation = (u8, u32, u16, u8);

fn mutate(seed: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for &(op, at, n, byte) in muts {
        let pos = if b.is_empty() { 0 } else { (at as usize) % (b.len() + 1) };
        let n = n as usize;
        match op % 9 {
            0 if pos < b.len() => b[pos] ^= 1 << (byte % 8),
            1 if pos < b.len() => b[pos] = byte,
            2 => b.insert(pos, byte),
            3 => {
                let end = (pos + n % 256).min(b.len());
                b.drain(pos..end);
            }
            4 => {
                let end = (pos + n % 512).min(b.len());
                let slice = b[pos..end].to_vec();
                b.splice(pos..pos, slice);
            }
            5 => b.truncate(pos),
            6 | 7 => {
                let tok = DICTIONARY[byte as usize % DICTIONARY.len()];
                b.splice(pos..pos, tok.iter().copied());
            }
            8 => {
                // Deep nesting: thousands of opening tokens (stack depth of every tree walk).
                let tok: &[u8] = [b"<i>".as_slice(), b"[", b"{\"a\":", b"<claim-text>", b"<mrow>"][byte as usize % 5];
                let deep: Vec<u8> = tok.iter().copied().cycle().take(tok.len() * (1000 + n % 3000)).collect();
                b.splice(pos..pos, deep);
            }
            _ => {}
        }
    }
    b
}

/// Runs `body` on `cases()` mutations of `seeds` (plus the seeds themselves and random bytes),
/// panicking with the shrunk failing input's path if any case panics.
fn run(target: &str, seeds: Vec<Vec<u8>>, body: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{target}: no seeds");
    for s in &seeds {
        body(s);
    }
    body(&[]);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed().to_le_bytes());
    key[8..8 + target.len().min(24)].copy_from_slice(&target.as_bytes()[..target.len().min(24)]);
    let config = Config { cases: cases(), failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let n = seeds.len();
    let strategy = (0..n + 1, prop::collection::vec(any::<Mutation>(), 0..8), prop::collection::vec(any::<u8>(), 0..256));
    let result = runner.run(&strategy, |(i, muts, random)| {
        let data = if i == n { random } else { mutate(&seeds[i], &muts) };
        body(&data);
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        let (why, (i, muts, random)) = match e {
            TestError::Fail(why, v) => (why.to_string(), v),
            TestError::Abort(why) => panic!("{target}: aborted: {why}"),
        };
        let data = if i == n { random } else { mutate(&seeds[i], &muts) };
        let dir = root().join("target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{target}-{:016x}.bin", xxhash(&data)));
        std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
        panic!("{target}: a case failed ({why}); input written to {}", path.display());
    }
}

fn xxhash(b: &[u8]) -> u64 {
    // FNV-1a: a name for the failure file, nothing more.
    b.iter().fold(0xcbf29ce484222325u64, |h, &c| (h ^ c as u64).wrapping_mul(0x100000001b3))
}

/// The corpus fixtures (good and bad), as seeds.
fn corpus_seeds() -> Vec<(PathBuf, Vec<u8>)> {
    files(&[
        "fixtures/data/uspto",
        "fixtures/data/epo",
        "fixtures/data/cnipa",
        "fixtures/data/wudao",
        "fixtures/data/ipc",
        "fixtures/bad",
        "fixtures/handmade",
    ])
    .into_iter()
    .filter(|p| !p.to_string_lossy().contains("sft"))
    .map(|p| {
        let b = seed_bytes(&p);
        (p, b)
    })
    .collect()
}

#[test]
fn sniff_frame_parse() {
    run("sniff_frame_parse", corpus_seeds().into_iter().map(|(_, b)| b).collect(), bodies::sniff_frame_parse);
}

/// Each format's parser on the fixtures the sniff assigns to it (every format has at least one).
#[test]
fn each_format() {
    let seeds = corpus_seeds();
    for name in bodies::FORMATS {
        let mine: Vec<Vec<u8>> =
            seeds.iter().filter(|(_, b)| coretech::sources::sniff(b).is_some_and(|f| f.name() == *name)).map(|(_, b)| b.clone()).collect();
        let mine = if mine.is_empty() && *name == "jsonl" { vec![b"{\"text\": \"a plain document\"}\n".to_vec()] } else { mine };
        assert!(!mine.is_empty(), "no fixture is sniffed as {name}");
        run(&format!("format_{name}"), mine, |d| bodies::format(name, d));
    }
}

/// Compressed and UTF-16 inputs, through a file as the docs stage opens them.
#[test]
fn input_file() {
    let plain = seed_bytes(&root().join("fixtures/data/wudao/coretech_wudao_demo.jsonl"));
    let xml = seed_bytes(&root().join("fixtures/data/epo/EP4090146A1-v1-5-1-biblio-only.xml"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&xml[..], 1).unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("a.jsonl", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(&plain[..plain.len().min(4096)]).unwrap();
    let zip = zip.finish().unwrap().into_inner();
    let mut utf16 = vec![0xff, 0xfe];
    for u in String::from_utf8_lossy(&plain[..plain.len().min(8192)]).encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    let mut seeds = vec![gz, zst, zip, utf16];
    seeds.extend(files(&["fixtures/bad"]).iter().filter(|p| p.to_string_lossy().contains("input-")).map(|p| seed_bytes(p)));
    run("input_file", seeds, bodies::input_file);
}

#[test]
fn ipc_scheme() {
    let seeds = files(&["fixtures/data/ipc"]).iter().map(|p| seed_bytes(p)).collect();
    run("ipc_scheme", seeds, bodies::ipc_scheme);
}

#[test]
fn sft_readers() {
    let seeds: Vec<Vec<u8>> = files(&["fixtures/data/sft", "fixtures/bad"])
        .iter()
        .filter(|p| p.to_string_lossy().contains("sft") && p.is_file())
        .map(|p| seed_bytes(p))
        .collect();
    for format in bodies::SFT_FORMATS {
        run(&format!("sft_{format}"), seeds.clone(), |d| bodies::sft_read(format, d));
    }
}

/// Every input under `fixtures/bad` (crashes the harness found are kept there) through every
/// body, plus the exact position of each fixed finding.
#[test]
fn fuzz_regressions() {
    for p in files(&["fixtures/bad"]) {
        let b = std::fs::read(&p).unwrap();
        bodies::sniff_frame_parse(&b);
        for name in bodies::FORMATS {
            bodies::format(name, &b);
        }
        bodies::input_file(&b);
    }
    // epo-gbk-unclosed.xml (found by format_epo-xml): GBK text decodes to a longer string, and
    // the unclosed root was reported at its offset in that string, past the end of the record.
    let b = std::fs::read(root().join("fixtures/bad/epo-gbk-unclosed.xml")).unwrap();
    let raw = coretech::io::RawRecord { file: "epo-gbk-unclosed.xml".into(), index: 0, offset: 0, line: 1, bytes: b.clone() };
    let cfg = coretech::sources::SourcesConfig::default();
    let e = match coretech::sources::by_name("epo-xml").unwrap().parse(&raw, &coretech::sources::ParseContext { cfg: &cfg }) {
        Err(e) => e,
        Ok(_) => panic!("an unclosed document parsed"),
    };
    assert_eq!((e.kind.as_str(), e.position.offset), ("xml", Some(b.len() as u64)), "{e}");
    // epo-tsv-gbk-fallback.tsv (found by format_epo-tsv): one stray byte (0x80) in UTF-8 lines
    // makes the record decode as GB18030, longer than its bytes; the unclosed `<p>` of the last
    // line was reported past the end of the record. Now at its end, on line 4.
    let b = std::fs::read(root().join("fixtures/bad/epo-tsv-gbk-fallback.tsv")).unwrap();
    let raw = coretech::io::RawRecord { file: "epo-tsv-gbk-fallback.tsv".into(), index: 0, offset: 0, line: 1, bytes: b.clone() };
    let e = match coretech::sources::by_name("epo-tsv").unwrap().parse(&raw, &coretech::sources::ParseContext { cfg: &cfg }) {
        Err(e) => e,
        Ok(_) => panic!("an unclosed abstract parsed"),
    };
    assert_eq!((e.kind.as_str(), e.position.offset, e.position.line), ("xml", Some(b.len() as u64), Some(4)), "{e}");
    assert!(e.message.starts_with("abstract (en): "), "{e}");
}

#[test]
fn config_parser() {
    let seeds = files(&["pipelines", "fixtures/bad-config"]).iter().map(|p| seed_bytes(p)).collect();
    run("config", seeds, bodies::config);
}
