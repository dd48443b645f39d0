#!/usr/bin/env bash
# What an unchanged rerun costs next to the build it skips: docs, pack and dedup over about
# BYTES of generated JSONL (benches/stage_skip_gen.py). A rerun reads every input again (the
# fingerprint hashes each input's bytes: xxh3; pack and dedup also check every input shard
# against its manifest) and writes nothing. Prints wall and CPU seconds of each build and its
# skipped rerun, and the ratio.
#
#   benches/stage_skip.sh [BYTES]        (default 200000000; BIN overrides the binary)
#
# The second, skipped runs find the inputs in the page cache (as a rerun right after a build
# does); a cold cache adds the disk read of the inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${1:-200000000}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/coretech}
OUT=${BENCH_DIR:-out/bench-skip}
mkdir -p "$OUT"
[ -x "$BIN" ] || cargo build --release
[ -f "$OUT/in.jsonl" ] || python3 benches/stage_skip_gen.py "$OUT/in.jsonl" "$BYTES"
rm -rf "$OUT/docs" "$OUT/tokens" "$OUT/dedup"
cat > "$OUT/skip.toml" <<TOML
stages = ["docs", "pack", "dedup"]
[docs]
inputs = ["$OUT/in.jsonl"]
output = "$OUT/docs"
rows_per_shard = 20000
[pack]
inputs = ["$OUT/docs"]
output = "$OUT/tokens"
[dedup]
input = "$OUT/docs"
output = "$OUT/dedup"
TOML
# Wall and CPU (user + sys) seconds of one command.
timed() { /usr/bin/time -f "%e %U %S" "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.3f %.3f", $1, $2 + $3}'; }
printf "%-6s %10s %10s %10s %10s %9s %9s\n" stage build_wall build_cpu skip_wall skip_cpu wall_pct cpu_pct
for s in docs pack dedup; do
  read -r bw bc <<<"$(timed "$BIN" "$s" "$OUT/skip.toml")"
  read -r sw sc <<<"$(timed "$BIN" "$s" "$OUT/skip.toml")"
  "$BIN" "$s" "$OUT/skip.toml" 2>&1 >/dev/null | grep -q "up to date" || { echo "$s: the rerun was not skipped" >&2; exit 1; }
  awk -v s="$s" -v bw="$bw" -v bc="$bc" -v sw="$sw" -v sc="$sc" \
    'BEGIN { printf "%-6s %10.2f %10.2f %10.3f %10.3f %8.2f%% %8.2f%%\n", s, bw, bc, sw, sc, 100*sw/bw, 100*sc/bc }'
done
echo "input: $(stat -c %s "$OUT/in.jsonl") bytes of JSONL; binary: $BIN"
