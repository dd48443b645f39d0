#!/usr/bin/env bash
# One device call of the CUDA trainer work (docs/cuda-notes.md): selftest, our training bench and
# the PyTorch reference in the same call, logs under $OUT. Run from the repo root on the device
# with .dev/ carried, holding bin/coretech.xz (the --features cuda release binary, xz),
# torch_qwen2_train.py (../shared/gpu) and torch_qwen2_shape.py (scripts/).
# Part cptshards also needs .dev/cpt-shards.toml (pipelines/demo.toml's [train.cpt] with shards =
# ".dev/shards/tokens", max_steps = 80) and .dev/shards/tokens (a copy of out/demo/tokens).
# PARTS picks what runs (default: all), e.g. PARTS="selftest ours05 torch05"; OURS15_BATCHES and
# TORCH15_BATCHES the 1.5B batches tried, largest first (the first that fits is reported).
# Parts b7 and sft7 (Qwen2.5-7B bench, CPT and SFT shape, seq 4096 and 2048) and cpt7 (a 7B CPT on
# fixture shards packed at 2048, then tests/compat/check_transformers.py on its checkpoint) need
# an H200 (the fixed state alone is 99.3 GiB); cpt7 needs .dev/cpt7b.toml and .dev/shards7b/tokens
# (pipelines' pack at seq_len 2048, see docs/cuda-notes.md). On an H200, one call of
# PARTS="selftest b7 sft7 ours05 torch05c" and one of PARTS=cpt7 each fit the tool's 600 s.
# Logs go to $LOGD and, after every step, into $OUT/logs.tgz (the device tool brings back at most
# 8 files); the summary table is printed last and kept as $OUT/summary.txt.
set -u
OUT=${OUT:-/tmp/ct-out}; mkdir -p "$OUT"
LOGD=${LOGD:-/tmp/ct-logs}; mkdir -p "$LOGD"
PARTS=${PARTS:-"selftest ours05 torch05c ours05x ours15 cpt torch05x torch15"}
SP=/opt/torch/.venv/lib/python3.12/site-packages
PY=/opt/torch/.venv/bin/python3
export LD_LIBRARY_PATH=$(find $SP/nvidia -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
xz -dc .dev/bin/coretech.xz > /tmp/ct && chmod +x /tmp/ct
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$LOGD/gpu.txt" "$OUT/gpu.txt"
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
# step NAME TIMEOUT CMD...: runs, keeps the log, prints the result lines
step() {
  local name=$1 t=$2; shift 2
  echo "== $name: $*"
  local t0=$SECONDS
  timeout "$t" "$@" > "$LOGD/$name.log" 2>&1
  local rc=$?
  echo "rc=$rc ($((SECONDS - t0)) s)"
  grep -E '^(RESULT|selftest:|\{|train losses|memory plan)|FAIL|rror|ok  ' "$LOGD/$name.log" | cut -c1-600 | tail -n 12
  tar czf "$OUT/logs.tgz" -C "$LOGD" .
  return $rc
}
B="/tmp/ct bench train --device cuda --dtype bf16 --seq 2048 --warmup 3 --steps 10"
if has selftest; then step selftest 240 /tmp/ct selftest --device cuda; fi
B7="/tmp/ct bench train --device cuda --dtype bf16 --model qwen2.5-7b --warmup 2 --steps 5"
if has b7; then
  # The planner picks recomputation and the CE chunk; a smaller batch if the larger does not fit.
  step b7_s4096_b2 150 $B7 --seq 4096 --batch 2 || step b7_s4096_b1 150 $B7 --seq 4096 --batch 1
  step b7_s2048_b4 150 $B7 --seq 2048 --batch 4 || step b7_s2048_b2 150 $B7 --seq 2048 --batch 2
fi
if has sft7; then
  # SFT shape: 4 packed documents a row (ragged attention), 30 % prompt tokens not counted.
  S7="--docs-per-row 4 --prompt-fraction 0.3"
  step b7_sft_s4096_b2 150 $B7 --seq 4096 --batch 2 $S7 || step b7_sft_s4096_b1 150 $B7 --seq 4096 --batch 1 $S7
  step b7_sft_s2048_b4 150 $B7 --seq 2048 --batch 4 $S7 || step b7_sft_s2048_b2 150 $B7 --seq 2048 --batch 2 $S7
fi
if has cpt7; then
  rm -rf runs/cpt7b
  step cpt7_train ${CPT7_TIMEOUT:-280} /tmp/ct train .dev/cpt7b.toml
  cp runs/cpt7b/metrics.jsonl "$LOGD/cpt7_metrics.jsonl"
  CK=$(ls -d runs/cpt7b/checkpoints/step-* | tail -1); ls -la "$CK" | tee "$LOGD/cpt7_ckpt.txt"
  # f32 on the CPU on both sides (coretech logits, transformers eager): 2 x 30 GB of host memory.
  step cpt7_transformers ${CHECK7_TIMEOUT:-280} $PY tests/compat/check_transformers.py /tmp/ct "$CK" 5e-3
fi
if has ours05; then step ours05_b8 120 $B --model qwen2.5-0.5b --batch 8 --ce-chunk 4096; fi
if has torch05c; then BATCHES=8 step torch05_bf16c 200 $PY .dev/torch_qwen2_train.py bf16c; fi
if has ours05x; then
  step ours05_b8_ce8k 120 $B --model qwen2.5-0.5b --batch 8 --ce-chunk 8192
  step ours05_b8_rc 120 $B --model qwen2.5-0.5b --batch 8 --ce-chunk 4096 --recompute
fi
if has ours15; then
  for b in ${OURS15_BATCHES:-8 6 4}; do step ours15_b$b 150 $B --model qwen2.5-1.5b --batch $b --ce-chunk 4096 && break; done
fi
if has cpt; then
  # The tiny CPT+SFT pipeline (.dev/train-tiny.toml = pipelines/train-tiny.toml) on the GPU in
  # bf16 and on the CPU in f32: the loss curves must track.
  sed -e 's/^device = "cpu"/device = "cuda"/' -e 's/^dtype = "f32"/dtype = "bf16"/' -e 's#runs/train-tiny"#runs/train-tiny-cuda"#' .dev/train-tiny.toml > /tmp/tiny-cuda.toml
  step cpt_cuda 240 /tmp/ct train /tmp/tiny-cuda.toml
  step cpt_cpu 300 /tmp/ct train .dev/train-tiny.toml
  cp runs/train-tiny-cuda/metrics.jsonl "$LOGD/cpt_cuda_metrics.jsonl"; cp runs/train-tiny/metrics.jsonl "$LOGD/cpt_cpu_metrics.jsonl"
  $PY scripts/cuda-compare-losses.py "$LOGD/cpt_cuda_metrics.jsonl" "$LOGD/cpt_cpu_metrics.jsonl"
fi
if has cptshards; then
  # Real CPT on fixture token shards (.dev/cpt-shards.toml, data.source = "shards"): GPU bf16 vs CPU f32.
  sed -e 's/^device = "cpu"/device = "cuda"/' -e 's/^dtype = "f32"/dtype = "bf16"/' -e 's#runs/gpu-cpt-cpu"#runs/gpu-cpt-cuda"#' .dev/cpt-shards.toml > /tmp/cpt-shards-cuda.toml
  step cptshards_cuda 240 /tmp/ct train /tmp/cpt-shards-cuda.toml
  step cptshards_cpu 300 /tmp/ct train .dev/cpt-shards.toml
  cp runs/gpu-cpt-cuda/metrics.jsonl "$LOGD/cptshards_cuda_metrics.jsonl"; cp runs/gpu-cpt-cpu/metrics.jsonl "$LOGD/cptshards_cpu_metrics.jsonl"
  $PY scripts/cuda-compare-losses.py "$LOGD/cptshards_cuda_metrics.jsonl" "$LOGD/cptshards_cpu_metrics.jsonl"
fi
if has torch05x; then
  for m in bf16 ampc amp; do BATCHES=8 step torch05_$m 200 $PY .dev/torch_qwen2_train.py $m; done
fi
if has torch15; then QWEN=1.5b BATCHES="${TORCH15_BATCHES:-8 6 4}" step torch15_bf16c 420 $PY .dev/torch_qwen2_shape.py bf16c; fi
$PY scripts/cuda-bench-summary.py "$LOGD" | tee "$OUT/summary.txt"
tar czf "$OUT/logs.tgz" -C "$LOGD" .
echo "== done"
