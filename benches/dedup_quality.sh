#!/usr/bin/env bash
# Dedup quality against ground truth, both benchmarks in one run at the default settings:
#
#   benches/dedup_quality.sh
#
# 1. Pair-Jaccard (`dedup-bench gen` / `score`): every fixture text plus 13 variants (exact and
#    whitespace copies, 0.5-10 % character edits, paragraph shuffle, truncations, CN/EN
#    mixtures); recall over the pairs with exact Jaccard >= 0.8, precision of the removals.
#    Run twice: with the default per-source policies (a patent's variants carry other
#    publication numbers, so they are kept by design) and with identities off (the machinery
#    alone; how the figure was measured before identities existed).
# 2. Copy families (`dedup-bench families` / `families-score`): originals of which no two have
#    exact Jaccard >= 0.5, each with 10 copies (8 edited, a paragraph shuffle and a 90 %
#    truncation, all with the same character edit rate), one corpus per edit rate (0.5, 2, 5 %);
#    one source and no dates, as the fixture mix repeated as JSONL (the issue's corpus).
#    Near-copy recall: copies removed / copies whose exact Jaccard with their original reaches
#    the threshold; families with no survivor; precision of removals against the families.
#    Then datatrove's MinHash on the same corpora (benches/dedup_families_datatrove.py), when
#    .dev/venv holds it.
#
# BIN overrides the binary (default: the release build); OUT the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/coretech}
OUT=${OUT:-out/bench-quality}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"

[ -f "$OUT/labelled/pairs.jsonl" ] || "$BIN" dedup-bench gen "$OUT/labelled"
for policy in default no-identity; do
  cfg="$OUT/labelled-$policy.toml"
  printf 'stages = ["dedup"]\n[dedup]\ninput = "%s"\noutput = "%s"\n' "$OUT/labelled/documents" "$OUT/labelled/dedup-$policy" > "$cfg"
  if [ "$policy" = no-identity ]; then
    for s in cnipa epo uspto ipc; do printf '[dedup.sources.%s]\nidentity = "none"\n' "$s" >> "$cfg"; done
  fi
  rm -rf "$OUT/labelled/dedup-$policy"
  "$BIN" dedup "$cfg" > /dev/null 2> "$OUT/labelled/dedup-$policy.log"
  echo "== pair-Jaccard benchmark, $policy policies"
  "$BIN" dedup-bench score "$OUT/labelled" "$cfg" | sed -n '1,4p'
done

[ -d "$OUT/families/edit-0.5%" ] || "$BIN" dedup-bench families "$OUT/families"
for rate in 0.5 2 5; do
  dir="$OUT/families/edit-$rate%"
  printf 'stages = ["dedup"]\n[dedup]\ninput = "%s"\noutput = "%s"\n' "$dir/documents" "$dir/dedup" > "$dir/dedup.toml"
  rm -rf "$dir/dedup"
  "$BIN" dedup "$dir/dedup.toml" > /dev/null 2> "$dir/dedup.log"
  echo "== copy families, $rate % character edits"
  "$BIN" dedup-bench families-score "$dir" "$dir/dedup.toml"
done

# The reference on the same copy-family corpora, where datatrove is installed (see
# benches/dedup_vs_datatrove.sh for the venv): scored on the same removable copies.
if [ -x .dev/venv/bin/python ]; then
  .dev/venv/bin/python benches/dedup_families_datatrove.py "$OUT/families"
fi
