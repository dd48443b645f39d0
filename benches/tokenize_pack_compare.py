#!/usr/bin/env python3
"""Side by side, same machine, same texts, same thread count: coretech tokenize / tokenize+pack
against HF `tokenizers` (Python) `encode_batch` and the LLaMA-Factory-style `group_texts`
packing (preprocess_pretrain_dataset with packing: text + eos, tokenize a batch of 1000, chain,
cut into blocks of cutoff_len, drop the batch's tail).

Texts: the fixture mix of DESIGN.md (CN patents, WuDao, EP full-text, IPC descriptions), repeated
with small seeded edits up to --mb megabytes, written once as JSONL that both sides read.

Usage (release build first: cargo build --release):
    .venv/bin/python benches/tokenize_pack_compare.py [--mb 40] [--threads 1 2] [--seq-len 2048]
Needs `tokenizers` and `zstandard` in that Python. Prints a table and one JSON line per result.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

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


PY_WORKER = r'''
import json, sys, time, subprocess
from itertools import chain
import tokenizers
path, tok_path, seq_len, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import zstandard
tok = tokenizers.Tokenizer.from_str(zstandard.ZstdDecompressor().decompress(open(tok_path, "rb").read(), max_output_size=1 << 30).decode("utf-8"))
texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8")]
nbytes = sum(len(t.encode("utf-8")) for t in texts)
eos = "<|endoftext|>"
B = 1000
t0 = time.perf_counter()
tokens = 0
if mode == "tokenize":
    for i in range(0, len(texts), B):
        encs = tok.encode_batch(texts[i:i + B], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encs)
else:
    blocks = 0
    for i in range(0, len(texts), B):
        batch = [t + eos for t in texts[i:i + B]]
        encs = tok.encode_batch(batch, add_special_tokens=False)
        tokenized = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
        concatenated = {k: list(chain(*tokenized[k])) for k in tokenized.keys()}
        total_length = len(concatenated["input_ids"])
        tokens += total_length
        total_length = (total_length // seq_len) * seq_len
        result = {k: [t[j:j + seq_len] for j in range(0, total_length, seq_len)] for k, t in concatenated.items()}
        blocks += len(result["input_ids"])
secs = time.perf_counter() - t0
print(json.dumps({"tokens": tokens, "bytes": nbytes, "seconds": secs}))
'''


def python_side(path, threads, seq_len, mode):
    env = dict(os.environ, RAYON_RS_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", PY_WORKER, path, TOKENIZER, str(seq_len), mode], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rust_side(binary, args):
    out = subprocess.run([binary] + args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--binary", default=os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "coretech"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: run cargo build --release first")
    mix = fixture_mix()
    docs, size = scaled(mix, args.mb)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "texts.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        print(f"texts: {len(mix)} fixture texts scaled to {len(docs)} texts, {size / 1e6:.1f} MB", file=sys.stderr)
        for th in args.threads:
            hf_tok = python_side(path, th, args.seq_len, "tokenize")
            hf_e2e = python_side(path, th, args.seq_len, "group_texts")
            ours_tok = rust_side(args.binary, ["bench", "tokenize", path, "--threads", str(th), "--batch", "1000"])
            ours_hf = rust_side(args.binary, ["bench", "tokenize", path, "--threads", str(th), "--batch", "1000", "--engine", "hf"])
            ours_e2e = rust_side(args.binary, ["bench", "pack", path, "--threads", str(th), "--seq-len", str(args.seq_len)])
            for name, r in [("HF tokenizers (Python) encode_batch", hf_tok), ("coretech tokenize, hf engine (Rust)", ours_hf), ("coretech tokenize, fast engine", ours_tok),
                            ("HF encode_batch + group_texts (Python)", hf_e2e), ("coretech pack stage (docs -> token shards)", ours_e2e)]:
                tps = r["tokens"] / r["seconds"]
                results.append({"threads": th, "what": name, "tokens": r["tokens"], "seconds": round(r["seconds"], 3), "tokens_per_s": round(tps), "tokens_per_s_per_thread": round(tps / th), "mb_per_s": round(r["bytes"] / 1e6 / r["seconds"], 2)})
            results.append({"threads": th, "what": "ratio tokenize (fast / HF Python)", "ratio": round((ours_tok["tokens"] / ours_tok["seconds"]) / (hf_tok["tokens"] / hf_tok["seconds"]), 2)})
            results.append({"threads": th, "what": "ratio end to end (pack stage / encode_batch + group_texts)", "ratio": round((ours_e2e["tokens"] / ours_e2e["seconds"]) / (hf_e2e["tokens"] / hf_e2e["seconds"]), 2)})
    print(f"{'threads':>7}  {'what':<58} {'tokens/s':>12} {'tok/s/thread':>12} {'MB/s':>8}")
    for r in results:
        if "ratio" in r:
            print(f"{r['threads']:>7}  {r['what']:<58} {'x' + str(r['ratio']):>12}")
        else:
            print(f"{r['threads']:>7}  {r['what']:<58} {r['tokens_per_s']:>12,} {r['tokens_per_s_per_thread']:>12,} {r['mb_per_s']:>8}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
