#!/usr/bin/env python3
"""Summary table of a device call's logs (scripts/cuda-device-run.sh): for every `bench train`
JSON line, tokens/s, MFU, peak memory, the memory plan and the step breakdown; for every
metrics.jsonl given, the loss curve and median step throughput.
Usage: cuda-bench-summary.py OUT_DIR"""
import glob
import json
import os
import statistics
import sys

GIB = 1 << 30


def bench(path):
    for line in open(path, errors="replace"):
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "tokens_per_s" not in r:
            continue
        p = r.get("plan") or {}
        units = sorted(r.get("units") or [], key=lambda u: -u["seconds"])[:6]
        print(f"{os.path.basename(path)[:-4]}: {r['model']} b{r['batch']}x{r['seq_len']} docs/row {r.get('docs_per_row', 1)} "
              f"targets {r.get('targets')}: {r['tokens_per_s']:,.0f} tokens/s, MFU {100 * (r['mfu'] or 0):.1f} % "
              f"(measured-peak {100 * (r['mfu_measured_peak'] or 0):.1f} %, matmul {r['matmul_tflops'] or 0:.0f} TFLOP/s), "
              f"step {r['step_s_mean']:.3f} s (fwd+bwd {r['fwd_bwd_s_mean']:.3f}, opt {r['optimizer_s_mean']:.3f}), "
              f"peak alloc {(r['peak_alloc_bytes'] or 0) / GIB:.1f} GiB, reserved {(r['peak_reserved_bytes'] or 0) / GIB:.1f}, "
              f"device used {(r['device_used_bytes'] or 0) / GIB:.1f}; plan: recompute {p.get('recompute_layers')}/{p.get('layers')}, "
              f"chunk {p.get('ce_chunk')}, est. step peak {p.get('step_peak_bytes', 0) / GIB:.1f} GiB of "
              f"{(p.get('available_bytes') or 0) / GIB:.1f} free; loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
        print("   units (ms): " + ", ".join(f"{u['name']} {1e3 * u['seconds']:.1f}/{u['calls']}" for u in units))


def metrics(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    rows = [r for r in rows if r.get("loss") is not None]
    if not rows:
        return
    tps = statistics.median(r["tokens_per_s"] for r in rows[1:] or rows)
    mfu = statistics.median((r.get("mfu") or 0) for r in rows[1:] or rows)
    losses = [r["loss"] for r in rows]
    pick = [losses[i] for i in sorted({0, 4, 9, 19, 29, 39, len(losses) - 1}) if i < len(losses)]
    print(f"{os.path.basename(path)}: {len(rows)} steps, loss {' '.join(f'{x:.3f}' for x in pick)}; "
          f"median {tps:,.0f} tokens/s, MFU {100 * mfu:.1f} %")


def main():
    out = sys.argv[1]
    for p in sorted(glob.glob(os.path.join(out, "*.log"))):
        bench(p)
    for p in sorted(glob.glob(os.path.join(out, "*metrics.jsonl"))):
        metrics(p)


if __name__ == "__main__":
    main()
