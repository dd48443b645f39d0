//! Throughput of the default `Cleaner` (normalizers + filters) on the real fixture texts, one
//! core: WuDao (JSON array and JSONL `content`), CoreTech CN patents (`text`), IPC
//! descriptions (`des`), and the EP full-text TSV (one document per publication, with its
//! inline markup). Run: `cargo bench --bench clean`. Criterion prints MiB/s; the summary line
//! at the end gives MB/s (10^6 bytes) per core for the whole mix.

use std::path::Path;
use std::time::Instant;

use coretech::clean::{CleanConfig, Cleaner};
use coretech::Document;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn doc(lang: &str, text: &str) -> Document {
    Document { lang: lang.into(), text: text.into(), ..Default::default() }
}

fn field(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}")).to_string()
}

/// (collection, documents) of every fixture source whose text is JSON or TSV.
fn corpus() -> Vec<(&'static str, Vec<Document>)> {
    let mut wudao: Vec<Document> = Vec::new();
    let arr: Vec<serde_json::Value> = serde_json::from_str(&read("wudao/wudaosailing_corpus_test.json")).unwrap();
    wudao.extend(arr.iter().map(|v| doc("zh", &field(v, "content"))));
    for l in read("wudao/coretech_wudao_demo.jsonl").lines() {
        wudao.push(doc("zh", &field(&serde_json::from_str(l).unwrap(), "content")));
    }
    let arr: Vec<serde_json::Value> = serde_json::from_str(&read("cnipa/coretech_Patent_demo.json")).unwrap();
    let cnipa: Vec<Document> = arr.iter().map(|v| doc("zh", &field(v, "text"))).collect();
    let mut ipc = Vec::new();
    for f in ["ipc/coretech_ipcDes_demo.jsonl", "ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl"] {
        for l in read(f).lines() {
            ipc.push(doc("zh", &field(&serde_json::from_str(l).unwrap(), "des")));
        }
    }
    let mut epo: Vec<(String, String, String)> = Vec::new(); // (number, lang, text)
    for l in read("epo/EP0600000-fulltext-sample.tsv").lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f[5] == "PDFEP" {
            continue;
        }
        match epo.last_mut() {
            Some(e) if e.0 == f[1] => {
                e.2.push_str("\n\n");
                e.2.push_str(f[6]);
                if f[5] == "DESCR" {
                    e.1 = f[4].to_string();
                }
            }
            _ => epo.push((f[1].to_string(), f[4].to_string(), f[6].to_string())),
        }
    }
    let epo = epo.iter().map(|(_, lang, text)| doc(lang, text)).collect();
    vec![("wudao", wudao), ("cnipa", cnipa), ("ipc", ipc), ("epo-tsv", epo)]
}

fn bytes(docs: &[Document]) -> u64 {
    docs.iter().map(|d| d.text.len() as u64).sum()
}

fn bench(c: &mut Criterion) {
    let cleaner = Cleaner::new(&CleanConfig::default()).unwrap();
    let parts = corpus();
    let all: Vec<Document> = parts.iter().flat_map(|(_, d)| d.iter().cloned()).collect();

    let mut g = c.benchmark_group("clean");
    for (name, docs) in parts.iter().map(|(n, d)| (*n, d)).chain([("all", &all)]) {
        g.throughput(Throughput::Bytes(bytes(docs)));
        g.bench_function(name, |b| {
            b.iter_batched(
                || docs.clone(),
                |mut docs| {
                    for d in &mut docs {
                        let _ = cleaner.apply(d);
                    }
                    docs
                },
                BatchSize::LargeInput,
            )
        });
    }
    // The two halves on their own: normalizers, and filters on normalized text.
    g.throughput(Throughput::Bytes(bytes(&all)));
    g.bench_function("all/normalize", |b| {
        b.iter_batched(
            || all.iter().map(|d| d.text.clone()).collect::<Vec<_>>(),
            |mut texts| {
                for t in &mut texts {
                    cleaner.normalize(t);
                }
                texts
            },
            BatchSize::LargeInput,
        )
    });
    let normalized: Vec<(String, String)> = all
        .iter()
        .map(|d| {
            let mut t = d.text.clone();
            cleaner.normalize(&mut t);
            (d.lang.clone(), t)
        })
        .collect();
    g.bench_function("all/filter", |b| b.iter(|| normalized.iter().filter(|(lang, t)| cleaner.filter(lang, t).is_ok()).count()));
    g.finish();

    // Summary in MB/s (10^6 bytes), one core, whole mix. Wall time, and this thread's CPU
    // time from the scheduler (on a shared machine the wall time includes waiting for a core).
    let total = bytes(&all) as f64;
    let rounds = 20;
    let (mut best_wall, mut best_cpu) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let mut docs = all.clone();
        let (t, cpu) = (Instant::now(), thread_cpu_ns());
        for d in &mut docs {
            let _ = cleaner.apply(d);
        }
        best_wall = best_wall.min(t.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu, thread_cpu_ns()) {
            best_cpu = best_cpu.min((b - a) as f64 / 1e9);
        }
        drop(docs);
    }
    let kept = all.clone().iter_mut().map(|d| cleaner.apply(d).is_ok()).filter(|&k| k).count();
    println!(
        "clean summary: {} documents, {:.2} MB, kept {kept}; best of {rounds}: wall {:.1} ms = {:.1} MB/s, thread CPU {:.1} ms = {:.1} MB/s per core",
        all.len(),
        total / 1e6,
        best_wall * 1e3,
        total / 1e6 / best_wall,
        best_cpu * 1e3,
        total / 1e6 / best_cpu
    );
}

/// CPU time of this thread in ns (Linux `schedstat`), if available.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

criterion_group!(benches, bench);
criterion_main!(benches);
