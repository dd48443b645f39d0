#!/usr/bin/env bash
# Side by side, one core each, same input: coretech dedup (exact + MinHash LSH, all four steps)
# vs datatrove's MinHash pipeline (signature -> buckets -> cluster -> filter).
#
#   benches/dedup_vs_datatrove.sh [BYTES] [DATATROVE_BYTES]
#
# BYTES (default 1e9) of documents are generated from the fixtures (`coretech dedup-bench scale`:
# fixture chunks with 1 % character edits and varied ids, a share NEAR_COPIES of them (default
# 0.2; 0.8 gives heavily duplicated input) near copies of recent documents). datatrove
# runs on its own input of DATATROVE_BYTES (default: the same input; pass a smaller size when a
# full datatrove run would take too long, and the ratio is then per MB; 0 runs our side only).
# Needs a release build
# and datatrove in .dev/venv (python3 -m venv .dev/venv && .dev/venv/bin/pip install
# "datatrove[processing]" spacy pyarrow: its MinHash stage needs the spacy word tokenizer, its
# ParquetReader pyarrow, which datatrove[processing] does not pull). BIN overrides the binary.
# Both sides are pinned to core CORE (default 0; taskset). BENCH_DIR (default out/bench-dedup) holds
# inputs, outputs and logs: give concurrent runs their own. Peak RSS and CPU time come from /usr/bin/time -v;
# on a shared machine compare the CPU-time ratio (user + sys), which contention does not inflate.
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${1:-1000000000}
DT_BYTES=${2:-$BYTES}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/coretech}
OUT=${BENCH_DIR:-out/bench-dedup}
mkdir -p "$OUT"
[ -x "$BIN" ] || cargo build --release
NEAR_COPIES=${NEAR_COPIES:-0.2}
CORE=${CORE:-0}  # the core both sides are pinned to
# The default keeps the input directory names of earlier runs.
SUFFIX=$([ "$NEAR_COPIES" = 0.2 ] || echo "-copies$NEAR_COPIES")
gen() { [ -f "$2/.manifest.json" ] || "$BIN" dedup-bench scale "$2" --bytes "$1" --seed 7 --near-copies "$NEAR_COPIES" >/dev/null; }
gen "$BYTES" "$OUT/in-$BYTES$SUFFIX"
[ "$DT_BYTES" = "$BYTES" ] || [ "$DT_BYTES" = 0 ] || gen "$DT_BYTES" "$OUT/in-$DT_BYTES$SUFFIX"
mb() { python3 -c "import sys; print(round(int(sys.argv[1]) / 1e6, 1))" "$1"; }

cat > "$OUT/ours.toml" <<TOML
stages = ["dedup"]
[dedup]
input = "$OUT/in-$BYTES$SUFFIX"
output = "$OUT/ours-$BYTES$SUFFIX"
TOML
# WORK_DIR puts our work files (signatures, shingle hashes, bucket runs: the bulk of the disk
# use) elsewhere, e.g. on /dev/shm when the disk is short (tmpfs pages are not counted in RSS).
[ -z "${WORK_DIR:-}" ] || echo "work_dir = \"$WORK_DIR\"" >> "$OUT/ours.toml"
rm -rf "$OUT/ours-$BYTES$SUFFIX" "$OUT/ours-$BYTES$SUFFIX.rejects" "$OUT/ours-$BYTES$SUFFIX.duplicates.parquet"  # the output and what dedup writes beside it
RAYON_NUM_THREADS=1 taskset -c "$CORE" /usr/bin/time -v "$BIN" dedup "$OUT/ours.toml" > "$OUT/ours.log" 2> "$OUT/ours.time"
ours_s=$(grep "Elapsed (wall" "$OUT/ours.time" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
ours_rss=$(grep "Maximum resident" "$OUT/ours.time" | awk '{print $NF}')
cpu() { awk -F: '/User time|System time/ {s += $2} END {print s}' "$1"; }
ours_cpu=$(cpu "$OUT/ours.time")

tail -12 "$OUT/ours.log"
if [ "$DT_BYTES" = 0 ]; then  # our side only (the memory runs)
  python3 -c "import sys; b, s, r, c = int(sys.argv[1]) / 1e6, float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]); print(f'coretech  : {b:.0f} MB, wall {s:.1f} s ({b/s:.1f} MB/s), CPU {c:.1f} s ({b/c:.1f} MB/s), peak RSS {r/1024:.0f} MiB (1 thread)')" "$BYTES" "$ours_s" "$ours_rss" "$ours_cpu"
  exit 0
fi
rm -rf "$OUT/dt-$DT_BYTES$SUFFIX"
taskset -c "$CORE" /usr/bin/time -v .dev/venv/bin/python benches/dedup_datatrove.py "$OUT/in-$DT_BYTES$SUFFIX" "$OUT/dt-$DT_BYTES$SUFFIX" > "$OUT/dt.log" 2> "$OUT/dt.time"
dt_s=$(grep "Elapsed (wall" "$OUT/dt.time" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
dt_rss=$(grep "Maximum resident" "$OUT/dt.time" | awk '{print $NF}')
dt_cpu=$(cpu "$OUT/dt.time")

grep "^datatrove" "$OUT/dt.log"  # its own timings, not the loguru lines that name the package
python3 - "$BYTES" "$ours_s" "$ours_rss" "$ours_cpu" "$DT_BYTES" "$dt_s" "$dt_rss" "$dt_cpu" <<'PY'
import sys
b, s, r, c, db, ds, dr, dc = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
mb, dmb = b / 1e6, db / 1e6
print(f"coretech  : {mb:.0f} MB, wall {s:.1f} s ({mb/s:.1f} MB/s), CPU {c:.1f} s ({mb/c:.1f} MB/s), peak RSS {r/1024:.0f} MiB (1 thread)")
print(f"datatrove : {dmb:.0f} MB, wall {ds:.1f} s ({dmb/ds:.2f} MB/s), CPU {dc:.1f} s ({dmb/dc:.2f} MB/s), peak RSS {dr/1024:.0f} MiB (1 worker)")
print(f"ratio     : {(mb/s)/(dmb/ds):.1f}x per core by wall time, {(mb/c)/(dmb/dc):.1f}x by CPU time")
PY
