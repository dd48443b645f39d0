//! Reader throughput: framing + parsing MB/s of every reader in `coretech::sources::registry()`
//! on the fixture files it recognises (`fixtures/data/**`, chosen by content sniffing as in a
//! build). Input is held in memory, so disk and decompression are not measured; one thread.
//!
//! Run: `cargo bench --bench readers` (criterion prints `thrpt` in MiB/s per file). Files no
//! reader recognises yet are listed and skipped.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use coretech::doc::Record;
use coretech::io::framing::frame;
use coretech::io::input::InputStream;
use coretech::io::SNIFF_BYTES;
use coretech::sources::{registry, sniff, Format, ParseContext, SourcesConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Counts of one pass over a file.
#[derive(Debug, Default, Clone, Copy)]
struct Pass {
    records: usize,
    skipped: usize,
    errors: usize,
}

/// Frames and parses `bytes` as `format` would in a build.
fn read(format: &dyn Format, name: &str, bytes: &[u8], cx: &ParseContext<'_>) -> Pass {
    let mut pass = Pass::default();
    let stream = InputStream { name: name.to_string(), reader: Box::new(Cursor::new(bytes)) };
    frame(format.framing(), stream, cx.cfg.max_record_bytes, &mut |raw| {
        match raw.and_then(|r| format.parse(&r, cx)) {
            Ok(Record::Skip { .. }) => pass.skipped += 1,
            Ok(r) => {
                std::hint::black_box(&r);
                pass.records += 1;
            }
            Err(_) => pass.errors += 1,
        }
        true
    });
    pass
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).expect("fixtures/data").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if !p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".md")) {
            out.push(p);
        }
    }
}

fn readers(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    let inputs: Vec<(String, Vec<u8>)> =
        paths.iter().map(|p| (p.strip_prefix(&root).unwrap().display().to_string(), std::fs::read(p).expect("fixture reads"))).collect();
    let cfg = SourcesConfig::default();
    let cx = ParseContext { cfg: &cfg };

    for (name, bytes) in &inputs {
        if sniff(&bytes[..bytes.len().min(SNIFF_BYTES)]).is_none() {
            eprintln!("readers bench: {name}: no reader recognises it (yet); skipped");
        }
    }
    for format in registry() {
        let mine: Vec<&(String, Vec<u8>)> =
            inputs.iter().filter(|(_, b)| sniff(&b[..b.len().min(SNIFF_BYTES)]).is_some_and(|f| f.name() == format.name())).collect();
        if mine.is_empty() {
            continue;
        }
        let mut group = c.benchmark_group(format.name());
        group.sample_size(20);
        for (name, bytes) in mine {
            let pass = read(*format, name, bytes, &cx);
            eprintln!(
                "readers bench: {name}: {} ({} bytes): {} records, {} skipped, {} errors",
                format.name(),
                bytes.len(),
                pass.records,
                pass.skipped,
                pass.errors
            );
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function(name.as_str(), |b| b.iter(|| read(*format, name, bytes, &cx)));
        }
        group.finish();
    }
}

criterion_group!(benches, readers);
criterion_main!(benches);
