"""About BYTES of JSONL ({id, text}) from the WuDao and IPC fixtures, repeated with fresh ids
and three seeded character edits per copy (no two lines equal). Standard library only.
The input of benches/stage_skip.sh.

usage: stage_skip_gen.py OUT.jsonl BYTES [SEED]
"""
import json
import random
import sys

out, target = sys.argv[1], int(sys.argv[2])
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 7)
texts = [r["title"] + "\n" + r["content"] for r in json.load(open("fixtures/data/wudao/wudaosailing_corpus_test.json", encoding="utf-8"))]
with open("fixtures/data/ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl", encoding="utf-8") as f:
    texts += [json.loads(line)["des"] for line in f if line.strip()]
written, copy = 0, 0
with open(out, "w", encoding="utf-8") as f:
    while written < target:
        for n, text in enumerate(texts):
            chars = list(text)
            for _ in range(3 if copy else 0):
                chars[rng.randrange(len(chars))] = chr(0x4E00 + rng.randrange(2000))
            line = json.dumps({"id": f"{copy}-{n}", "text": "".join(chars)}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            if written >= target:
                break
        copy += 1
