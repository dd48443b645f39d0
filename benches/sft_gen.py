"""The fixture alpaca SFT records (fixtures/data/sft/*.jsonl, sharegpt left out) scaled by
repetition to about BYTES: every copy's instruction gets a `#copy` suffix, so no two records are
equal. Written as JSONL, or as one JSON array (one record per line) with --array.
The input of the SFT reader memory measurement (README, "SFT reading").

usage: sft_gen.py OUT BYTES [--array]
"""
import glob
import json
import os
import sys

out, target = sys.argv[1], int(sys.argv[2])
array = "--array" in sys.argv[3:]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "data", "sft")
records = []
for path in sorted(glob.glob(os.path.join(root, "*.jsonl"))):
    if "sharegpt" in path:
        continue
    with open(path, encoding="utf-8") as f:
        records += [json.loads(line) for line in f if line.strip()]
written, copy = 0, 0
with open(out, "w", encoding="utf-8") as f:
    if array:
        f.write("[\n")
        written += 2
    first = True
    while written < target:
        for r in records:
            r = dict(r, instruction=f"{r.get('instruction', '')}#{copy}")
            line = json.dumps(r, ensure_ascii=False)
            line = (("" if first else ",\n") + line) if array else line + "\n"
            first = False
            f.write(line)
            written += len(line.encode("utf-8"))
            if written >= target:
                break
        copy += 1
    if array:
        f.write("\n]\n")
print(f"{out}: {written} bytes, {len(records)} fixture records x {copy} copies")
