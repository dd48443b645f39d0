#!/usr/bin/env python3
"""Opens a coretech token shard directory in pyarrow, polars and HF `datasets` and checks it
against its .manifest.json (rows, sha256, seq_len) and, optionally, an expected first row.

Usage: check_shards.py TOKEN_DIR [EXPECTED_FIRST_ROW.json]
Exit 0 when every check passes; prints what it checked. Run by `cargo test --test pack_stage`
when a python3 with pyarrow, polars and datasets is available (it says SKIPPED otherwise).
"""
import hashlib
import json
import os
import sys
import tempfile

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from coretech_loader import MANIFEST_FILE  # noqa: E402  (the one name of the manifest)


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 2:
        fail("usage: check_shards.py TOKEN_DIR [EXPECTED_FIRST_ROW.json]")
    root = sys.argv[1]
    expected = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
    manifest = json.load(open(os.path.join(root, MANIFEST_FILE)))
    if manifest["kind"] not in ("tokens", "sft"):
        fail(f"manifest kind {manifest['kind']!r}")
    seq_len = manifest["info"]["seq_len"]
    files = [os.path.join(root, s["file"]) for s in manifest["shards"]]
    total_rows = 0
    for shard, path in zip(manifest["shards"], files):
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if digest != shard["sha256"]:
            fail(f"{path}: sha256 {digest} != manifest {shard['sha256']}")
        # pyarrow
        table = pq.read_table(path)
        schema = table.schema
        if schema.field("input_ids").type != pa.list_(pa.field("item", pa.uint32(), nullable=False)):
            fail(f"{path}: input_ids is {schema.field('input_ids').type}")
        if schema.field("seg_lens").type.value_type != pa.uint32():
            fail(f"{path}: seg_lens is {schema.field('seg_lens').type}")
        if schema.field("source").type.value_type not in (pa.string(), pa.large_string()):
            fail(f"{path}: source is {schema.field('source').type}")
        if table.num_rows != shard["rows"]:
            fail(f"{path}: {table.num_rows} rows, manifest says {shard['rows']}")
        ids = table.column("input_ids").to_pylist()
        segs = table.column("seg_lens").to_pylist()
        srcs = table.column("source").to_pylist()
        tokens = 0
        for i, (row, sl, src) in enumerate(zip(ids, segs, srcs)):
            if len(row) != seq_len:
                fail(f"{path} row {i}: {len(row)} ids, seq_len {seq_len}")
            if sum(sl) > seq_len or len(sl) != len(src):
                fail(f"{path} row {i}: seg_lens {sl} / sources {src} inconsistent")
            tokens += sum(sl)
        if shard.get("tokens") is not None and tokens != shard["tokens"]:
            fail(f"{path}: {tokens} real tokens, manifest says {shard['tokens']}")
        # polars
        df = pl.read_parquet(path)
        if df.height != table.num_rows or df.schema["input_ids"] != pl.List(pl.UInt32):
            fail(f"{path}: polars reads {df.height} rows, input_ids {df.schema['input_ids']}")
        if df["input_ids"][0].to_list() != ids[0] or df["seg_lens"][-1].to_list() != segs[-1]:
            fail(f"{path}: polars values differ from pyarrow")
        total_rows += table.num_rows
    # HF datasets over all shards at once
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
        if len(ds) != total_rows:
            fail(f"datasets reads {len(ds)} rows, expected {total_rows}")
        feat = ds.features["input_ids"]
        if "uint32" not in str(feat):
            fail(f"datasets feature input_ids is {feat}")
        first = ds[0]
        if len(first["input_ids"]) != seq_len:
            fail("datasets row 0 has the wrong length")
    if expected is not None:
        t0 = pq.read_table(files[0]).slice(0, 1).to_pylist()[0]
        got = {"input_ids": t0["input_ids"], "seg_lens": t0["seg_lens"], "source": t0["source"]}
        if got != expected:
            fail("first row differs from what Rust read")
        if first["input_ids"] != expected["input_ids"] or first["seg_lens"] != expected["seg_lens"]:
            fail("datasets first row differs from what Rust read")
        if pl.read_parquet(files[0])["input_ids"][0].to_list() != expected["input_ids"]:
            fail("polars first row differs from what Rust read")
    print(f"ok: {len(files)} shards, {total_rows} rows of {seq_len} tokens; pyarrow {pa.__version__}, polars {pl.__version__}, datasets {datasets.__version__}")


if __name__ == "__main__":
    main()
