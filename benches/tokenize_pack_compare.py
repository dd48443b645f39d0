#!/usr/bin/env python3
"""Side by side, same machine, same texts, same thread count: coretech's tokenizer against
bpe-qwen (GitHub's `bpe` crate behind Python) and HF `tokenizers` (Python), and the coretech
pack stage against HF `encode_batch` + LLaMA-Factory-style `group_texts` packing.

Texts:
  * unseen: the fixture mix of DESIGN.md (CN patents, WuDao, EP full text, IPC descriptions),
    each text once (3,375 texts, 5.0 MB): the figure that counts, since real corpora do not
    repeat;
  * repetitive: the same mix repeated with two seeded character edits per copy up to --mb MB
    (coretech's per-thread piece cache then hits far more often).
Both are written once as JSONL that every tool reads.

Each tool runs in its own process, timed in-process around the encoding only (the tokenizer is
loaded before the clock starts), --runs times; the best run counts (the machine may be shared).
Every process starts cold, so each run sees the texts for the first time. Ids are compared by
digest (sha256 of each text's u32-LE count and ids). Start-up is measured apart: the CPU time
of a whole `coretech bench tokenize` process on a one-line input, of its tokenizer load alone,
and its peak RSS (for HF and bpe-qwen: the CPU time of constructing the tokenizer in Python). Each row also gives tokens per
CPU-second (every thread of the process, during encoding): on a shared machine the wall-time
figures move with the load, the CPU-time ones much less. The thread scaling is given both as the
wall-time ratio (meaningful on idle cores only) and as the share of the one-thread tokens per
CPU-second kept with more threads.

Usage (release build first: cargo build --release):
    .venv/bin/python benches/tokenize_pack_compare.py [--mb 40] [--threads 1 2] [--runs 3]
        [--pack] [--binary target/release/coretech]
A venv with `tokenizers`, `zstandard` and `bpe-qwen` (pip) gives every row; a tool that is not
installed is skipped with a note. Prints a table and one JSON line per result.
"""
import argparse
import glob
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "fixtures", "data")
TOKENIZER = os.path.join(ROOT, "fixtures", "tokenizers", "qwen2.5", "tokenizer.json.zst")


def fixture_mix():
    texts = []
    for r in json.load(open(os.path.join(DATA, "cnipa", "coretech_Patent_demo.json"), encoding="utf-8")):
        texts.append(("cnipa", r["text"]))
    for r in json.load(open(os.path.join(DATA, "wudao", "wudaosailing_corpus_test.json"), encoding="utf-8")):
        texts.append(("wudao", r["content"]))
    for line in open(os.path.join(DATA, "wudao", "coretech_wudao_demo.jsonl"), encoding="utf-8"):
        if line.strip():
            texts.append(("wudao", json.loads(line)["content"]))
    for line in open(os.path.join(DATA, "epo", "EP0600000-fulltext-sample.tsv"), encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 7:
            texts.append(("epo", parts[6]))
    for line in open(os.path.join(DATA, "ipc", "coretech_ipc_description_expand.hier+G06+H04.jsonl"), encoding="utf-8"):
        if line.strip():
            texts.append(("ipc", json.loads(line)["des"]))
    return [(s, t) for s, t in texts if t]


def scaled(texts, mb, seed=0):
    """Copies of the mix with two seeded character edits per copy until `mb` MB."""
    rnd = random.Random(seed)
    out, size, k = [], 0, 0
    alphabet = "的是在了和专利方法装置abcdefgh0123456789 ，。"
    while size < mb * 1e6:
        for src, t in texts:
            if k > 0 and len(t) > 2:
                chars = list(t)
                for _ in range(2):
                    chars[rnd.randrange(len(chars))] = rnd.choice(alphabet)
                t = "".join(chars)
            out.append({"source": src, "text": t})
            size += len(t.encode("utf-8"))
            if size >= mb * 1e6:
                break
        k += 1
    return out, size


# One Python tool run: load, then encode every text in batches of 1000 on `threads` threads.
PY_WORKER = r'''
import hashlib, json, resource, struct, sys, time
from array import array
tool, path, tok_path, bq_dir, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8")]
nbytes = sum(len(t.encode("utf-8")) for t in texts)
c0 = time.process_time()
if tool == "hf":
    import tokenizers, zstandard
    raw = zstandard.ZstdDecompressor().decompress(open(tok_path, "rb").read(), max_output_size=1 << 30).decode("utf-8")
    tok = tokenizers.Tokenizer.from_str(raw)
    encode = lambda batch: [e.ids for e in tok.encode_batch(batch, add_special_tokens=False)]
else:
    import glob, importlib.util, os
    # The package's __init__ imports transformers; the compiled module alone is what is timed.
    spec = importlib.util.find_spec("bpe_qwen")
    so = glob.glob(os.path.join(os.path.dirname(spec.origin), "bpe_qwen*.so"))[0]
    spec = importlib.util.spec_from_file_location("bpe_qwen", so)
    bq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bq)
    tok = bq.QwenTokenizer(bq_dir)
    encode = lambda batch: tok.encode_batch_parallel(batch, threads)
load_cpu = time.process_time() - c0
B = 1000
h = hashlib.sha256()
tokens = 0
secs = 0.0
cpu = 0.0
for i in range(0, len(texts), B):
    t0, c0 = time.perf_counter(), time.process_time()
    ids = encode(texts[i:i + B])
    secs += time.perf_counter() - t0
    cpu += time.process_time() - c0
    for v in ids:
        tokens += len(v)
        h.update(struct.pack("<I", len(v)))
        h.update(array("I", v).tobytes())
print(json.dumps({"tokens": tokens, "bytes": nbytes, "seconds": secs, "cpu_seconds": cpu, "load_cpu_seconds": load_cpu, "ids_sha256": h.hexdigest()}))
'''

# LLaMA-Factory's preprocess_pretrain_dataset with packing: text + eos, tokenize a batch of 1000,
# chain, cut into blocks of cutoff_len, drop the batch's tail.
PY_GROUP_TEXTS = r'''
import json, sys, time
from itertools import chain
import tokenizers, zstandard
path, tok_path, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = tokenizers.Tokenizer.from_str(zstandard.ZstdDecompressor().decompress(open(tok_path, "rb").read(), max_output_size=1 << 30).decode("utf-8"))
texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8")]
nbytes = sum(len(t.encode("utf-8")) for t in texts)
eos = "<|endoftext|>"
B = 1000
t0 = time.perf_counter()
tokens = 0
for i in range(0, len(texts), B):
    batch = [t + eos for t in texts[i:i + B]]
    encs = tok.encode_batch(batch, add_special_tokens=False)
    tokenized = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
    concatenated = {k: list(chain(*tokenized[k])) for k in tokenized.keys()}
    total_length = len(concatenated["input_ids"])
    tokens += total_length
    total_length = (total_length // seq_len) * seq_len
    result = {k: [t[j:j + seq_len] for j in range(0, total_length, seq_len)] for k, t in concatenated.items()}
print(json.dumps({"tokens": tokens, "bytes": nbytes, "seconds": time.perf_counter() - t0}))
'''


def has(module):
    return importlib.util.find_spec(module) is not None


def bpe_qwen_dir(tmp):
    """bpe-qwen reads vocab.json, merges.txt and tokenizer_config.json: written from tokenizer.json."""
    import zstandard

    j = json.loads(zstandard.ZstdDecompressor().decompress(open(TOKENIZER, "rb").read(), max_output_size=1 << 30))
    d = os.path.join(tmp, "bpe-qwen")
    os.makedirs(d, exist_ok=True)
    json.dump(j["model"]["vocab"], open(os.path.join(d, "vocab.json"), "w", encoding="utf-8"), ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in j["model"]["merges"]:
            f.write((" ".join(m) if isinstance(m, list) else m) + "\n")
    added = {str(t["id"]): {"content": t["content"], "special": t["special"]} for t in j["added_tokens"]}
    json.dump({"added_tokens_decoder": added}, open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False)
    return d


def env_threads(threads):
    return dict(os.environ, RAYON_RS_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true" if threads > 1 else "false")


def best_of(runs, fn):
    results = [fn() for _ in range(runs)]
    best = min(results, key=lambda r: r["seconds"])
    digests = {r.get("ids_sha256") for r in results}
    if len(digests) > 1:
        sys.exit(f"ids differ between runs of the same tool: {digests}")
    return best


def ours(binary, path, threads, engine="auto"):
    out = subprocess.run([binary, "bench", "tokenize", path, "--threads", str(threads), "--batch", "1000", "--engine", engine],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def python_tool(tool, path, threads, bq_dir):
    out = subprocess.run([sys.executable, "-c", PY_WORKER, tool, path, TOKENIZER, bq_dir or "", str(threads)],
                         env=env_threads(threads), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def startup(binary, tiny, runs, engine):
    """Best of `runs` whole `bench tokenize` processes on one short text: the process's CPU
    seconds (from wait4), the tokenizer load's CPU seconds and the peak RSS in MiB (both as the
    process reports them: a child's ru_maxrss would include the forking Python's memory)."""
    best = None
    for _ in range(runs):
        p = subprocess.Popen([binary, "bench", "tokenize", tiny, "--threads", "1", "--engine", engine], stdout=subprocess.PIPE, text=True)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.exit(f"{binary} bench tokenize failed ({p.returncode})")
        r = json.loads(out.strip().splitlines()[-1])
        row = (ru.ru_utime + ru.ru_stime, r.get("load_cpu_seconds"), (r.get("peak_rss_bytes") or 0) / 2**20)
        best = row if best is None or row[0] < best[0] else best
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=40, help="size of the repetitive text")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=3, help="runs per tool (best counts)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--pack", action="store_true", help="also the pack stage against encode_batch + group_texts")
    ap.add_argument("--binary", default=os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "coretech"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: run cargo build --release first")
    have_hf = has("tokenizers") and has("zstandard")
    have_bq = has("bpe_qwen") and has("zstandard")
    for name, ok in [("HF tokenizers (+ zstandard)", have_hf), ("bpe-qwen (+ zstandard)", have_bq)]:
        if not ok:
            print(f"note: {name} not installed in {sys.executable}: its rows are skipped (pip install tokenizers zstandard bpe-qwen)", file=sys.stderr)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    mix = fixture_mix()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for name, docs in [("unseen", [{"source": s, "text": t} for s, t in mix]), ("repetitive", scaled(mix, args.mb)[0])]:
            path = os.path.join(tmp, f"{name}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for d in docs:
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
            sets[name] = path
            size = sum(len(d["text"].encode("utf-8")) for d in docs)
            print(f"{name}: {len(docs)} texts, {size / 1e6:.1f} MB", file=sys.stderr)
        bq_dir = bpe_qwen_dir(tmp) if have_bq else None

        def add(what, data, th, r, extra=None):
            row = {"text": data, "threads": th, "what": what, "tokens": r["tokens"], "seconds": round(r["seconds"], 4),
                   "tokens_per_s": round(r["tokens"] / r["seconds"]), "mb_per_s": round(r["bytes"] / 1e6 / r["seconds"], 2)}
            if r.get("cpu_seconds"):
                row["cpu_seconds"] = round(r["cpu_seconds"], 4)
                row["tokens_per_cpu_s"] = round(r["tokens"] / r["cpu_seconds"])
            row.update(extra or {})
            results.append(row)
            return row

        loads = {}
        for data, path in sets.items():
            for th in args.threads:
                fast = best_of(args.runs, lambda: ours(args.binary, path, th))
                f_row = add("coretech fast engine", data, th, fast, {"load_seconds": round(fast["load_seconds"], 4)})
                ref_ids = fast["ids_sha256"]
                refs = []
                if have_bq:
                    bq = best_of(args.runs, lambda: python_tool("bpe-qwen", path, th, bq_dir))
                    refs.append(("bpe-qwen", add("bpe-qwen (Rust bpe crate)", data, th, bq,
                                                 {"ids_identical": bq["ids_sha256"] == ref_ids, "load_cpu_seconds": round(bq["load_cpu_seconds"], 3)})))
                if have_hf:
                    # HF is slow on the large set: one run there.
                    hf = best_of(args.runs if data == "unseen" else 1, lambda: python_tool("hf", path, th, None))
                    refs.append(("HF", add("HF tokenizers (Python) encode_batch", data, th, hf,
                                           {"ids_identical": hf["ids_sha256"] == ref_ids, "load_cpu_seconds": round(hf["load_cpu_seconds"], 3)})))
                for name, row in refs:
                    loads.setdefault(name, row["load_cpu_seconds"])
                    ratio = {"text": data, "threads": th, "what": f"ratio fast / {name}", "ratio": round(f_row["tokens_per_s"] / row["tokens_per_s"], 2)}
                    if "tokens_per_cpu_s" in f_row and "tokens_per_cpu_s" in row:
                        ratio["ratio_per_cpu_s"] = round(f_row["tokens_per_cpu_s"] / row["tokens_per_cpu_s"], 2)
                    results.append(ratio)
            if len(args.threads) > 1:
                rows = {r["threads"]: r for r in results if r.get("what") == "coretech fast engine" and r["text"] == data}
                lo, hi = min(args.threads), max(args.threads)
                scaling = {"text": data, "threads": hi, "what": f"scaling fast engine {lo} -> {hi} threads",
                           "ratio": round(rows[hi]["tokens_per_s"] / rows[lo]["tokens_per_s"], 2)}
                if "tokens_per_cpu_s" in rows[hi] and "tokens_per_cpu_s" in rows[lo]:
                    # Tokens per CPU-second kept at hi threads: the scaling the cores would give
                    # if they were free (the wall-time ratio needs an idle machine).
                    scaling["cpu_efficiency"] = round(rows[hi]["tokens_per_cpu_s"] / rows[lo]["tokens_per_cpu_s"], 2)
                results.append(scaling)

        tiny = os.path.join(tmp, "tiny.jsonl")
        with open(tiny, "w", encoding="utf-8") as f:
            f.write(json.dumps({"text": "一种基于深度学习的专利分类方法 H04L 29/06 hello world"}, ensure_ascii=False) + "\n")
        starts = []
        for engine in ["auto", "hf"]:
            cpu, load_cpu, rss = startup(args.binary, tiny, args.runs, engine)
            starts.append({"what": f"start-up, coretech bench tokenize process on one text, engine {engine}", "cpu_seconds": round(cpu, 3),
                           "load_cpu_seconds": None if load_cpu is None else round(load_cpu, 3), "peak_rss_mib": round(rss)})
        for name, cpu in loads.items():
            starts.append({"what": f"start-up, {name}: constructing the tokenizer in Python (in-process)", "cpu_seconds": cpu})
        if args.pack and have_hf:
            for th in args.threads:
                hf_e2e = json.loads(subprocess.run([sys.executable, "-c", PY_GROUP_TEXTS, sets["repetitive"], TOKENIZER, str(args.seq_len)], env=env_threads(th),
                                                   check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                out = subprocess.run([args.binary, "bench", "pack", sets["repetitive"], "--threads", str(th), "--seq-len", str(args.seq_len)],
                                     check=True, capture_output=True, text=True).stdout
                ours_e2e = json.loads(out.strip().splitlines()[-1])
                a = add("HF encode_batch + group_texts (Python)", "repetitive", th, hf_e2e)
                b = add("coretech pack stage (docs -> token shards)", "repetitive", th, ours_e2e)
                results.append({"text": "repetitive", "threads": th, "what": "ratio pack stage / encode_batch + group_texts", "ratio": round(b["tokens_per_s"] / a["tokens_per_s"], 2)})

    print(f"load average at start: {load}")
    print(f"{'text':<10} {'threads':>7}  {'what':<46} {'tokens/s':>12} {'tok/CPU-s':>12} {'MB/s':>8}  ids")
    for r in results:
        if "ratio" in r:
            extra = r.get("ratio_per_cpu_s", r.get("cpu_efficiency"))
            extra = "" if extra is None else "x" + str(extra)
            print(f"{r['text']:<10} {r['threads']:>7}  {r['what']:<46} {'x' + str(r['ratio']):>12} {extra:>12}")
        else:
            same = {True: "identical", False: "DIFFER", None: ""}[r.get("ids_identical")]
            cpu = f"{r['tokens_per_cpu_s']:,}" if "tokens_per_cpu_s" in r else ""
            print(f"{r['text']:<10} {r['threads']:>7}  {r['what']:<46} {r['tokens_per_s']:>12,} {cpu:>12} {r['mb_per_s']:>8}  {same}")
    for s in starts:
        extra = f" (loading the tokenizer: {s['load_cpu_seconds']} s), peak RSS {s['peak_rss_mib']} MiB" if "peak_rss_mib" in s else ""
        print(f"{s['what']}: {s['cpu_seconds']} s CPU{extra}")
    for r in results + starts:
        print(json.dumps(r, ensure_ascii=False))
    if any(r.get("ids_identical") is False for r in results):
        sys.exit("ids differ from coretech's on some tool (see above)")


if __name__ == "__main__":
    main()
