"""datatrove's MinHash pipeline (signature -> buckets -> cluster -> filter) on a document shard
directory, one task and one worker per stage: the reference side of dedup_vs_datatrove.sh.

usage: dedup_datatrove.py INPUT_DIR WORK_DIR
"""
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

inp, work = sys.argv[1], sys.argv[2]
cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)  # datatrove defaults, stated
reader = lambda: ParquetReader(inp, glob_pattern="*.parquet", text_key="text", id_key="id")
stages = [
    ("signatures", [reader(), MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg)]),
    ("buckets", [MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=cfg)]),
    ("cluster", [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=cfg)]),
    ("filter", [reader(), MinhashDedupFilter(input_folder=f"{work}/remove_ids"), ParquetWriter(f"{work}/output")]),
]
total = 0.0
for name, pipeline in stages:
    tasks = cfg.num_buckets if name == "buckets" else 1
    t = time.time()
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{name}", skip_completed=False).run()
    dt = time.time() - t
    total += dt
    print(f"datatrove {name}: {dt:.1f} s", flush=True)
print(f"datatrove total: {total:.1f} s")
