//! Fuzz target bodies, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! seeded short run in the normal test suite (`tests/fuzz_short.rs` includes this file with
//! `#[path]`, so both exercise the same code). Each body takes arbitrary bytes and must return
//! without a panic, an abort or a hang; the assertions inside are what holds for any input.
//! Only the library's public API is used.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use coretech::clean::{CleanConfig, Cleaner};
use coretech::io::input::peek;
use coretech::io::{for_each_stream, frame, InputStream, SNIFF_BYTES};
use coretech::ipc::IpcScheme;
use coretech::render::{render_patent, RenderConfig};
use coretech::sources::{Format, ParseContext, SourcesConfig};
use coretech::{ReadError, Record};

/// Name of the in-memory stream in positions.
const NAME: &str = "fuzz-input";

/// Every corpus format the docs stage reads from a stream, by its report name.
pub const FORMATS: &[&str] = &[
    "uspto-ice",
    "uspto-pap",
    "uspto-patdoc",
    "uspto-aps",
    "epo-xml",
    "epo-tsv",
    "google-patents",
    "coretech-patents",
    "ipc-jsonl",
    "wudao-json",
    "wudao-jsonl",
    "jsonl",
];

/// The SFT reader's `format` values.
pub const SFT_FORMATS: &[&str] = &["auto", "alpaca", "sharegpt", "csv"];

fn sources_config() -> &'static SourcesConfig {
    static CFG: OnceLock<SourcesConfig> = OnceLock::new();
    CFG.get_or_init(SourcesConfig::default)
}

fn cleaner() -> &'static Cleaner {
    static CLEANER: OnceLock<Cleaner> = OnceLock::new();
    CLEANER.get_or_init(|| Cleaner::new(&CleanConfig::default()).expect("default clean config is valid"))
}

/// An error of an in-memory stream of `len` bytes must point into it.
fn check_position(e: &ReadError, len: usize) {
    assert_eq!(e.position.file.split('!').next(), Some(NAME), "error names another file: {e}");
    if let Some(off) = e.position.offset {
        assert!(off <= len as u64, "error offset {off} beyond the {len}-byte input: {e}");
    }
    if let Some(line) = e.position.line {
        assert!(line >= 1, "line 0: {e}");
    }
}

/// Frames `stream` as `format` and parses every record, rendering patents and cleaning the
/// documents as the docs stage does.
fn frame_and_parse(format: &dyn Format, stream: InputStream<'_>, len: usize) {
    let cfg = sources_config();
    let cx = ParseContext { cfg };
    let mut records = 0u64;
    frame(format.framing(), stream, cfg.max_record_bytes, &mut |raw| {
        records += 1;
        // Checked here, not after the stream: a framer that makes no progress never returns.
        assert!(records <= len as u64 + 1, "{records} records from {len} bytes");
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                check_position(&e, len);
                return true;
            }
        };
        assert!(raw.bytes.len() <= cfg.max_record_bytes, "a record over max_record_bytes was framed");
        assert!(raw.offset as usize + raw.bytes.len() <= len, "record beyond the input");
        let mut doc = match format.parse(&raw, &cx) {
            Ok(Record::Doc(d)) => d,
            Ok(Record::Patent(p)) => render_patent(&p, &RenderConfig::default(), None),
            Ok(Record::Skip { .. }) => return true,
            Err(e) => {
                check_position(&e, len);
                return true;
            }
        };
        let _ = cleaner().apply(&mut doc);
        true
    });
}

fn memory_stream(data: &[u8]) -> InputStream<'_> {
    InputStream { name: NAME.to_string(), reader: Box::new(Cursor::new(data)) }
}

/// The docs stage's path over one decoded stream: the head is read, the format sniffed from
/// it, the stream framed and every record parsed, rendered and cleaned.
pub fn sniff_frame_parse(data: &[u8]) {
    let peeked = match peek(memory_stream(data), SNIFF_BYTES) {
        Ok(p) => p,
        Err(e) => return check_position(&e, data.len()),
    };
    if let Some(format) = coretech::sources::sniff(&peeked.head) {
        frame_and_parse(format, peeked.into_stream(), data.len());
    }
}

/// One format's framing and parser, whatever the sniff would say (so mutations that break the
/// format's signature still reach its parser).
pub fn format(name: &str, data: &[u8]) {
    let format = coretech::sources::by_name(name).unwrap_or_else(|| panic!("no format {name:?}"));
    frame_and_parse(format, memory_stream(data), data.len());
}

/// A scratch file for the bodies that read through a path, in its own temporary folder that is
/// removed when this guard drops — after each case, also when a body panics and unwinds (the
/// seeded stable run); only a libFuzzer crash, which aborts, leaves its one folder behind.
struct Scratch {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn scratch(data: &[u8], name: &str) -> Scratch {
    let dir = tempfile::Builder::new().prefix("coretech-fuzz-").tempdir().expect("scratch dir");
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("write scratch input");
    Scratch { path, _dir: dir }
}

/// A whole input file as the docs stage opens it: compression (gzip, zstd, zip) and UTF-16
/// sniffed from the bytes, then every stream sniffed, framed and parsed.
pub fn input_file(data: &[u8]) {
    let file = scratch(data, "input");
    let progress = Default::default();
    let _ = for_each_stream(&file.path, &progress, |stream| {
        let peeked = match peek(stream, SNIFF_BYTES) {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        if let Some(format) = coretech::sources::sniff(&peeked.head) {
            // Decompressed streams may be longer than the file: no bound on positions here.
            frame_and_parse_unbounded(format, peeked.into_stream());
        }
        Ok(())
    });
}

fn frame_and_parse_unbounded(format: &dyn Format, stream: InputStream<'_>) {
    let cfg = sources_config();
    let cx = ParseContext { cfg };
    frame(format.framing(), stream, cfg.max_record_bytes, &mut |raw| {
        if let Ok(raw) = raw {
            if let Ok(Record::Patent(p)) = format.parse(&raw, &cx) {
                let mut doc = render_patent(&p, &RenderConfig::default(), None);
                let _ = cleaner().apply(&mut doc);
            }
        }
        true
    });
}

/// The IPC scheme loader (WIPO master-file XML or CoreTech IPC JSONL).
pub fn ipc_scheme(data: &[u8]) {
    let file = scratch(data, "input.ipc");
    let mut scheme = IpcScheme::default();
    if scheme.add_file(&file.path).is_ok() {
        for e in scheme.entries().take(64) {
            let _ = scheme.ancestry(&e.symbol);
        }
    }
}

/// The SFT reader's public entry point on one file read as `format` (`auto`, `alpaca`,
/// `sharegpt` or `csv`).
pub fn sft_read(format: &str, data: &[u8]) {
    use coretech::sft::read::{read_input, ReadContext, ReadResult};
    let file = scratch(data, "input.sft");
    let path = &file.path;
    let input: coretech::sft::config::SftInput =
        serde_json::from_value(serde_json::json!({"path": path, "format": format})).expect("input spec");
    let tasks = coretech::sft::task::TaskResolver::new(&Default::default()).expect("default tasks");
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: coretech::sft::config::TrailingUserTurn::Trim, base: path.parent().unwrap() };
    let mut out = ReadResult::default();
    let _ = read_input(&input, &cx, &mut out);
}

/// The pipeline config parser: any bytes give a config or an error naming the file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = coretech::config::PipelineConfig::parse(&text, "fuzz.toml") {
        let msg = e.to_string();
        assert!(msg.starts_with("config fuzz.toml: "), "config error without the file: {msg}");
    }
}
