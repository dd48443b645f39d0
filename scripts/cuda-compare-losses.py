#!/usr/bin/env python3
"""Compares two metrics.jsonl loss curves (device run first, CPU run second): a table every
10 steps and the worst relative difference. Usage: cuda-compare-losses.py CUDA.jsonl CPU.jsonl"""
import json
import sys

a, b = ([r for r in (json.loads(l) for l in open(p) if l.strip()) if r.get("loss") is not None] for p in sys.argv[1:3])
print("step  loss_cuda_bf16  loss_cpu_f32  rel_diff")
worst = 0.0
for x, y in zip(a, b):
    d = abs(x["loss"] - y["loss"]) / abs(y["loss"])
    worst = max(worst, d)
    if x["step"] % 10 == 0 or x is a[-1]:
        print(f'{x["step"]:4d}  {x["loss"]:.4f}  {y["loss"]:.4f}  {d:.2e}')
print(f"steps cuda {len(a)} cpu {len(b)}, worst relative loss difference {worst:.3e}")
