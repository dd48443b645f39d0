#!/usr/bin/env python3
"""Opens coretech shard folders the way researchers do, with nothing but the folder's path:

  datasets.load_dataset("parquet", data_dir=DIR)    the Parquet builder over the folder
  datasets.load_dataset(DIR)                        the builder inferred from the files
  pl.scan_parquet(f"{DIR}/*.parquet")               a polars glob (`**/*.parquet` for a whole
                                                    SFT split, whose shards sit in stage folders)
  pl.scan_parquet(DIR, hidden_file_prefix=".")      a polars folder read (polars reads every
                                                    file of a folder unless told which to skip)
  pyarrow.dataset.dataset(DIR, format="parquet")    pyarrow's dataset discovery

and checks each sees exactly the rows the folder's manifest lists (no side file taken for data,
no shard missed). Side files (.manifest.json, .report.json) are dot-prefixed for this: datasets
skips names starting with "." only, pyarrow skips "." and "_".

Usage: check_loaders.py DIR [DIR ...]
Exit 0 when every check passes; prints one line per folder and loader. SKIPPED (exit 0, says so)
without datasets, polars or pyarrow.
"""
import json
import logging
import os
import sys
import tempfile
import warnings

try:
    import datasets
    import polars as pl
    import pyarrow.dataset as pads
except ImportError as e:
    print(f"SKIPPED: {e}")
    sys.exit(0)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from coretech_loader import MANIFEST_FILE  # noqa: E402  (the one name of the manifest)


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def visible_files(d):
    """Files under `d` (relative paths, sorted) with no dot-prefixed name on the way."""
    out = []
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        rel = os.path.relpath(root, d)
        out += [f if rel == "." else f"{rel}/{f}" for f in files if not f.startswith(".")]
    return sorted(out)


def main():
    if len(sys.argv) < 2:
        fail("usage: check_loaders.py DIR [DIR ...]")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache:
        for n, d in enumerate(sys.argv[1:]):
            with open(os.path.join(d, MANIFEST_FILE), encoding="utf-8") as f:
                manifest = json.load(f)
            want = sum(s["rows"] for s in manifest["shards"])
            if want == 0:
                fail(f"{d}: the manifest lists no rows (nothing to check)")
            visible = visible_files(d)
            shards = sorted(s["file"] for s in manifest["shards"])
            if visible != shards:
                fail(f"{d}: visible files {visible} are not the manifest's shards {shards}")
            # A whole SFT split lists its stages' shards (`stage-K/part-*.parquet`): globbed
            # recursively, as a researcher would for a folder of folders.
            glob = "**/*.parquet" if any("/" in f for f in shards) else "*.parquet"
            loaders = {
                'load_dataset("parquet", data_dir=DIR)': lambda: datasets.load_dataset(
                    "parquet", data_dir=d, split="train", cache_dir=os.path.join(cache, f"{n}a")
                ).num_rows,
                "load_dataset(DIR)": lambda: datasets.load_dataset(d, split="train", cache_dir=os.path.join(cache, f"{n}b")).num_rows,
                f'pl.scan_parquet("DIR/{glob}")': lambda: pl.scan_parquet(os.path.join(d, glob)).select(pl.len()).collect().item(),
                'pl.scan_parquet(DIR, hidden_file_prefix=".")': lambda: pl.scan_parquet(d, hidden_file_prefix=".")
                .select(pl.len())
                .collect()
                .item(),
                'pyarrow.dataset.dataset(DIR, format="parquet")': lambda: pads.dataset(d, format="parquet").count_rows(),
            }
            for name, load in loaders.items():
                try:
                    got = load()
                except Exception as e:  # the loader's own error, shown as it is
                    fail(f"{d}: {name}: {type(e).__name__}: {e}")
                if got != want:
                    fail(f"{d}: {name} reads {got} rows, the manifest lists {want}")
            print(f"{d}: {want} rows in {len(shards)} shards; each of {len(loaders)} loaders reads exactly them")
    print(f"OK (datasets {datasets.__version__}, polars {pl.__version__}, pyarrow {pads.pa.__version__})")


if __name__ == "__main__":
    main()
