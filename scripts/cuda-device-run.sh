#!/usr/bin/env bash
# One device call of the CUDA trainer work (docs/cuda-notes.md): selftest, our training bench and
# the PyTorch reference in the same call, logs under $OUT. Run from the repo root on the device
# with .dev/ carried, holding bin/coretech.xz (the --features cuda release binary, xz),
# torch_qwen2_train.py (../shared/gpu) and torch_qwen2_shape.py (scripts/).
# Part cptshards also needs .dev/cpt-shards.toml (pipelines/demo.toml's [train.cpt] with shards =
# ".dev/shards/tokens", max_steps = 80) and .dev/shards/tokens (a copy of out/demo/tokens).
# PARTS picks what runs (default: all), e.g. PARTS="selftest ours05 torch05"; OURS15_BATCHES and
# TORCH15_BATCHES the 1.5B batches tried, largest first (the first that fits is reported).
set -u
OUT=${OUT:-/tmp/ct-out}; mkdir -p "$OUT"
PARTS=${PARTS:-"selftest ours05 torch05c ours05x ours15 cpt torch05x torch15"}
SP=/opt/torch/.venv/lib/python3.12/site-packages
PY=/opt/torch/.venv/bin/python3
export LD_LIBRARY_PATH=$(find $SP/nvidia -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
xz -dc .dev/bin/coretech.xz > /tmp/ct && chmod +x /tmp/ct
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$OUT/gpu.txt"
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
# step NAME TIMEOUT CMD...: runs, keeps the log, prints the result lines
step() {
  local name=$1 t=$2; shift 2
  echo "== $name: $*"
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "rc=$rc"
  grep -E '^(RESULT|selftest:|\{|train losses)|FAIL|rror' "$OUT/$name.log" | cut -c1-1500 | tail -n 30
  return $rc
}
B="/tmp/ct bench train --device cuda --dtype bf16 --seq 2048 --warmup 3 --steps 10"
if has selftest; then step selftest 240 /tmp/ct selftest --device cuda; fi
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
  cp runs/train-tiny-cuda/metrics.jsonl "$OUT/cpt_cuda_metrics.jsonl"; cp runs/train-tiny/metrics.jsonl "$OUT/cpt_cpu_metrics.jsonl"
  $PY scripts/cuda-compare-losses.py "$OUT/cpt_cuda_metrics.jsonl" "$OUT/cpt_cpu_metrics.jsonl"
fi
if has cptshards; then
  # Real CPT on fixture token shards (.dev/cpt-shards.toml, data.source = "shards"): GPU bf16 vs CPU f32.
  sed -e 's/^device = "cpu"/device = "cuda"/' -e 's/^dtype = "f32"/dtype = "bf16"/' -e 's#runs/gpu-cpt-cpu"#runs/gpu-cpt-cuda"#' .dev/cpt-shards.toml > /tmp/cpt-shards-cuda.toml
  step cptshards_cuda 240 /tmp/ct train /tmp/cpt-shards-cuda.toml
  step cptshards_cpu 300 /tmp/ct train .dev/cpt-shards.toml
  cp runs/gpu-cpt-cuda/metrics.jsonl "$OUT/cptshards_cuda_metrics.jsonl"; cp runs/gpu-cpt-cpu/metrics.jsonl "$OUT/cptshards_cpu_metrics.jsonl"
  $PY scripts/cuda-compare-losses.py "$OUT/cptshards_cuda_metrics.jsonl" "$OUT/cptshards_cpu_metrics.jsonl"
fi
if has torch05x; then
  for m in bf16 ampc amp; do BATCHES=8 step torch05_$m 200 $PY .dev/torch_qwen2_train.py $m; done
fi
if has torch15; then QWEN=1.5b BATCHES="${TORCH15_BATCHES:-8 6 4}" step torch15_bf16c 420 $PY .dev/torch_qwen2_shape.py bf16c; fi
echo "== done"
