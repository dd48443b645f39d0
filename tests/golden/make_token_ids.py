#!/usr/bin/env python3
"""Golden token ids: every fixture text encoded with HF `tokenizers` (Python), the reference the
Rust tokenizer (HF path and fast path) must match exactly.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install tokenizers zstandard
    .venv/bin/python tests/golden/make_token_ids.py

Texts (the Rust test `tests/golden_tokens.rs` extracts the same ones, by the same rules):
  * `*.json` / `*.jsonl` under fixtures/data: every non-empty string leaf of every record, keyed by
    (file, record index, JSON pointer);
  * every other fixture file (XML, TSV, TXT, CSV): the whole file as one text (pointer "");
  * `edge_cases.json` in this directory: hand-written strings (the PROVENANCE check string,
    contractions, whitespace runs, CR/LF, special tokens inside text, non-NFC input, emoji, digits).

Output: fixtures/golden/tokens/fixtures.jsonl, one line per record (a whole non-JSON file is one
record) with its texts in pointer order (byte order of the pointer strings): the number of texts,
the token count, the sha256 of the texts (each as u32-LE byte length + UTF-8 bytes) and the sha256
of the ids (each text as u32-LE count + u32-LE ids); and fixtures/golden/tokens/edge_cases.jsonl
with the full ids of every edge case. (Full ids of 2.8M fixture tokens would be 20 MB; on a
mismatch the Rust test finds the differing text by comparing with the HF Rust path.)
Encoding is `encode(text, add_special_tokens=False)` (Qwen adds none either way).
"""
import hashlib
import json
import os
import struct
import sys

import tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "fixtures", "data")
OUT = os.path.join(ROOT, "fixtures", "golden", "tokens")
TOKENIZER = os.path.join(ROOT, "fixtures", "tokenizers", "qwen2.5", "tokenizer.json.zst")


def load_tokenizer():
    import subprocess

    raw = subprocess.run(["zstd", "-dc", TOKENIZER], check=True, capture_output=True).stdout
    return tokenizers.Tokenizer.from_str(raw.decode("utf-8"))


def pointer_escape(key):
    return key.replace("~", "~0").replace("/", "~1")


def leaves(value, pointer=""):
    """Every non-empty string leaf of a JSON value with its JSON pointer."""
    if isinstance(value, str):
        if value:
            yield pointer, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, pointer + "/" + pointer_escape(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, pointer + "/" + str(i))


def fixture_texts():
    """(file relative to fixtures/data, record index, pointer, text) in a stable order."""
    for dirpath, _, names in sorted(os.walk(DATA)):
        for name in sorted(names):
            if name == "PROVENANCE.md":
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, DATA)
            text = open(path, "rb").read().decode("utf-8")
            if name.endswith(".jsonl"):
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            elif name.endswith(".json"):
                records = json.loads(text)
                if not isinstance(records, list):
                    records = [records]
            else:
                yield rel, 0, "", text
                continue
            for i, rec in enumerate(records):
                for ptr, s in leaves(rec):
                    yield rel, i, ptr, s


def u32(n):
    return struct.pack("<I", n)


def main():
    tok = load_tokenizer()
    os.makedirs(OUT, exist_ok=True)
    entries = list(fixture_texts())
    # Within a record, texts in byte order of their pointers (what a sorted map gives in Rust).
    entries.sort(key=lambda e: (e[0], e[1], e[2].encode("utf-8")))
    encodings = tok.encode_batch([e[3] for e in entries], add_special_tokens=False)
    total = 0
    records = {}
    for (rel, rec, ptr, text), enc in zip(entries, encodings):
        r = records.setdefault((rel, rec), {"texts": 0, "tokens": 0, "t": hashlib.sha256(), "i": hashlib.sha256()})
        ids = enc.ids
        total += len(ids)
        raw = text.encode("utf-8")
        r["texts"] += 1
        r["tokens"] += len(ids)
        r["t"].update(u32(len(raw)) + raw)
        r["i"].update(u32(len(ids)) + struct.pack("<%dI" % len(ids), *ids))
    with open(os.path.join(OUT, "fixtures.jsonl"), "w", encoding="utf-8") as f:
        for (rel, rec), r in records.items():
            row = {"file": rel, "record": rec, "texts": r["texts"], "tokens": r["tokens"], "texts_sha256": r["t"].hexdigest(), "ids_sha256": r["i"].hexdigest()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    cases = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "edge_cases.json"), encoding="utf-8"))
    with open(os.path.join(OUT, "edge_cases.jsonl"), "w", encoding="utf-8") as f:
        for case in cases:
            ids = tok.encode(case, add_special_tokens=False).ids
            f.write(json.dumps({"text": case, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"{len(entries)} fixture texts, {total} tokens; {len(cases)} edge cases (tokenizers {tokenizers.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
