"""datatrove's MinHash pipeline on the copy-family corpora of `coretech dedup-bench families`,
scored the way `coretech dedup-bench families-score` scores ours: the reference side of the
copy-family benchmark (benches/dedup_quality.sh runs it when .dev/venv has datatrove).

usage: dedup_families_datatrove.py FAMILIES_DIR [RATE_DIR ...] [--threshold 0.81]

For each corpus (default: every edit-*% folder), runs benches/dedup_datatrove.py's pipeline
(datatrove defaults: word 5-grams, 14 buckets x 8 hashes) into RATE_DIR/datatrove and prints:
near-copy recall over the copies whose exact Jaccard with their original reaches the threshold
(our verification threshold, so both sides are scored on the same removable set), families with
no survivor, families keeping a removable copy. datatrove's output does not say in favour of
which document a removal was made, so precision against the families is not scored; a family
with no survivor is a removal across families.
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys

import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("families")
ap.add_argument("rates", nargs="*")
ap.add_argument("--threshold", type=float, default=0.81)
a = ap.parse_args()
root = pathlib.Path(a.families)
dirs = [root / r for r in a.rates] if a.rates else sorted(root.glob("edit-*%"))
here = pathlib.Path(__file__).parent
for d in dirs:
    work = d / "datatrove"
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run([sys.executable, str(here / "dedup_datatrove.py"), str(d / "documents"), str(work)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kept = set()
    for f in (work / "output").rglob("*.parquet"):
        kept.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    labels = [json.loads(l) for l in open(d / "labels.jsonl", encoding="utf-8")]
    fams = {}
    removable = removed_removable = 0
    for l in labels:
        n, k, extra = fams.get(l["family"], (0, 0, False))
        alive = l["id"] in kept
        if l["variant"] != "original" and l["jaccard"] >= a.threshold:
            removable += 1
            removed_removable += not alive
            extra |= alive
        fams[l["family"]] = (n + 1, k + alive, extra)
    none = sum(1 for n, k, _ in fams.values() if k == 0)
    extra = sum(1 for _, _, x in fams.values() if x)
    rec = f"{removed_removable / removable:.4f}" if removable else "n/a"
    print(f"== datatrove, {d.name}: {len(labels)} documents, {len(labels) - len(kept)} removed")
    print(f"near-copy recall: {rec} ({removed_removable} of {removable})")
    print(f"families with no survivor: {none} of {len(fams)}")
    print(f"families keeping a removable copy: {extra}")
