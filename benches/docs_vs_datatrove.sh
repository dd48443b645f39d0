#!/usr/bin/env bash
# Side by side, one core each, same JSONL input: our `docs` stage (generic JSONL reader -> clean:
# NFC, controls, entities, markup, whitespace, boilerplate, length, script, Gopher quality and
# repetition -> zstd Parquet shards) vs datatrove (JsonlReader -> FTFYFormatter(NFC) ->
# GopherRepetitionFilter -> GopherQualityFilter -> ParquetWriter(zstd)).
#
#   benches/docs_vs_datatrove.sh [BYTES] [DATATROVE_BYTES]
#
# The input: the fixture documents as rendered by `coretech docs` (the fixture part of
# pipelines/cpt.toml), written as JSONL {id, text, lang} and repeated to BYTES (default 1e9) with
# varied ids and three seeded character edits per copy (benches/docs_jsonl_gen.py). datatrove
# reads its own file of DATATROVE_BYTES (default: the same file; a smaller one makes the ratio
# per MB). Needs a release build and datatrove in .dev/venv (python3 -m venv .dev/venv &&
# .dev/venv/bin/pip install "datatrove[processing]" spacy pyarrow orjson:
# datatrove[processing] pulled neither pyarrow nor orjson here). BIN overrides the binary.
# Peak RSS and CPU time come from /usr/bin/time -v; on a shared machine compare the CPU-time
# ratio (user + sys), which contention does not inflate. Both sides are pinned to core 0.
# DT_LANGUAGE (e.g. zh) sets the language of datatrove's Gopher filters (default: English).
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${1:-1000000000}
DT_BYTES=${2:-$BYTES}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/coretech}
OUT=${BENCH_DIR:-out/bench-docs}
PY=.dev/venv/bin/python
mkdir -p "$OUT"
[ -x "$BIN" ] || cargo build --release

# Fixture documents: the docs stage of pipelines/cpt.toml on the bundled fixtures.
if [ ! -f "$OUT/fixture-docs/.manifest.json" ]; then
  sed -e 's|^stages = .*|stages = ["docs"]|' -e "s|^output = \"out/cpt/documents\"|output = \"$OUT/fixture-docs\"|" \
    -e '/^\[dedup\]/,$d' pipelines/cpt.toml > "$OUT/fixture.toml"
  "$BIN" docs "$OUT/fixture.toml" > "$OUT/fixture.log"
fi
gen() { [ -f "$OUT/in-$1.jsonl" ] || "$PY" benches/docs_jsonl_gen.py "$OUT/fixture-docs" "$OUT/in-$1.jsonl" "$1"; }
gen "$BYTES"
[ "$DT_BYTES" = "$BYTES" ] || gen "$DT_BYTES"
size() { stat -c %s "$1"; }
in_b=$(size "$OUT/in-$BYTES.jsonl")
dt_b=$(size "$OUT/in-$DT_BYTES.jsonl")

cat > "$OUT/ours.toml" <<TOML
stages = ["docs"]
[docs]
inputs = ["$OUT/in-$BYTES.jsonl"]
output = "$OUT/ours-$BYTES"
TOML
secs() { grep "Elapsed (wall" "$1" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'; }
rss() { grep "Maximum resident" "$1" | awk '{print $NF}'; }
cpu() { awk -F: '/User time|System time/ {s += $2} END {print s}' "$1"; }

rm -rf "$OUT/ours-$BYTES"
RAYON_NUM_THREADS=1 taskset -c 0 /usr/bin/time -v "$BIN" docs "$OUT/ours.toml" > "$OUT/ours.log" 2> "$OUT/ours.time"
rm -rf "$OUT/dt-$DT_BYTES"
taskset -c 0 /usr/bin/time -v "$PY" benches/docs_datatrove.py "$OUT/in-$DT_BYTES.jsonl" "$OUT/dt-$DT_BYTES" > "$OUT/dt.log" 2> "$OUT/dt.time"

tail -15 "$OUT/ours.log"
grep -h "datatrove docs" "$OUT/dt.log"
# Documents kept by datatrove: the rows of its output.
dt_kept=$("$PY" -c "import glob, sys, pyarrow.parquet as pq; print(sum(pq.ParquetFile(p).metadata.num_rows for p in glob.glob(sys.argv[1] + '/**/*.parquet', recursive=True)))" "$OUT/dt-$DT_BYTES/output")
python3 - "$in_b" "$(secs "$OUT/ours.time")" "$(rss "$OUT/ours.time")" "$(cpu "$OUT/ours.time")" \
  "$dt_b" "$(secs "$OUT/dt.time")" "$(rss "$OUT/dt.time")" "$(cpu "$OUT/dt.time")" "$dt_kept" <<'PY'
import sys
b, s, r, c, db, ds, dr, dc, dk = (float(x) for x in sys.argv[1:])
mb, dmb = b / 1e6, db / 1e6
print(f"coretech  : {mb:.0f} MB JSONL, wall {s:.1f} s ({mb/s:.1f} MB/s), CPU {c:.1f} s ({mb/c:.1f} MB/s), peak RSS {r/1024:.0f} MiB (1 thread)")
print(f"datatrove : {dmb:.0f} MB JSONL, wall {ds:.1f} s ({dmb/ds:.2f} MB/s), CPU {dc:.1f} s ({dmb/dc:.2f} MB/s), peak RSS {dr/1024:.0f} MiB (1 worker), kept {dk:.0f} documents")
print(f"ratio     : {(mb/s)/(dmb/ds):.1f}x per core by wall time, {(mb/c)/(dmb/dc):.1f}x by CPU time")
PY
