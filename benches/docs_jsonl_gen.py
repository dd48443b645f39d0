"""Fixture documents (document shards from `coretech docs`) rendered to JSONL and scaled by
repetition to about BYTES of JSONL: every copy gets its own id and a few seeded character
edits, so no two lines are equal. The input of docs_vs_datatrove.sh.

usage: docs_jsonl_gen.py SHARD_DIR OUT.jsonl BYTES [SEED]
"""
import glob
import json
import random
import sys

import pyarrow.parquet as pq

shards, out, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 7)
docs = []
for path in sorted(glob.glob(f"{shards}/**/*.parquet", recursive=True)):
    t = pq.read_table(path, columns=["id", "text", "lang"])
    docs += zip(t.column("id").to_pylist(), t.column("text").to_pylist(), t.column("lang").to_pylist())
if not docs:
    sys.exit(f"no documents under {shards}")
EDITS = 3  # characters replaced per copy
written, copy = 0, 0
with open(out, "w", encoding="utf-8") as f:
    while written < target:
        for id_, text, lang in docs:
            if copy > 0 and len(text) > EDITS:
                chars = list(text)
                for _ in range(EDITS):
                    i = rng.randrange(len(chars))
                    chars[i] = chars[rng.randrange(len(chars))]
                text = "".join(chars)
            line = json.dumps({"id": f"{id_}#{copy}", "text": text, "lang": lang}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            if written >= target:
                break
        copy += 1
print(f"{out}: {written} bytes, {len(docs)} fixture documents x {copy} copies")
