#!/usr/bin/env python3
"""Turns the logs of scripts/cuda-device-run.sh (a folder) into the markdown tables of
docs/cuda-notes.md: ours vs PyTorch (tokens/s, MFU, peak memory), the step split and the
per-unit device times. Usage: python3 scripts/cuda-summarize.py LOGDIR"""
import glob, json, os, sys

d = sys.argv[1]
GiB = 2 ** 30
rows = []
for f in sorted(glob.glob(os.path.join(d, "ours*.log"))):
    for line in open(f, errors="replace"):
        if line.startswith("{"):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows.append((os.path.basename(f)[:-4], r))
torch = []
for f in sorted(glob.glob(os.path.join(d, "torch*.log"))):
    for line in open(f, errors="replace"):
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            torch.append((os.path.basename(f)[:-4], r))
print("| run | model | batch | step s | tokens/s | MFU 989 | MFU measured | peak alloc GiB | peak reserved GiB | loss first → last |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, r in rows:
    pa = r.get("peak_alloc_bytes"); pr = r.get("peak_reserved_bytes")
    print(f"| ours {name} | {r['model']} | {r['batch']} | {r['step_s_mean']:.4f} | {r['tokens_per_s']:,.0f} | {100*(r.get('mfu') or 0):.1f} % | "
          f"{100*(r.get('mfu_measured_peak') or 0):.1f} % | {pa/GiB if pa else float('nan'):.1f} | {pr/GiB if pr else float('nan'):.1f} | {r['loss_first']:.3f} → {r['loss_last']:.3f} |")
for name, r in torch:
    if "error" in r:
        print(f"| torch {name} | | {r.get('batch')} | {r['error']} | | | | | | |")
        continue
    if r.get("mode") == "matmul":
        print(f"| torch matmul 8192³ | | | | {r['tflops']:.0f} TFLOP/s | | | | | |")
        continue
    print(f"| torch {r['mode']} ({name}) | {r['n_params']/1e9:.2f} B | {r['batch']} | {r['step_s_mean']:.4f} | {r['tokens_per_s']:,.0f} | {100*r['mfu_6N']:.1f} % | | "
          f"{r['peak_alloc_GiB']:.1f} | {r['peak_reserved_GiB']:.1f} | {r['loss_first']:.3f} → {r['loss_last']:.3f} |")
for name, r in rows:
    print(f"\n### {name}: {r['model']} batch {r['batch']}, GPU {r.get('gpu')}, matmul {r.get('matmul_tflops') or 0:.0f} TFLOP/s")
    print(f"step {r['step_s_mean']*1e3:.1f} ms = forward {1e3*(r.get('forward_s_mean') or 0):.1f} + backward {1e3*(r.get('backward_s_mean') or 0):.1f} "
          f"+ optimizer {1e3*r['optimizer_s_mean']:.1f} ms; profiled step {1e3*(r.get('profiled_step_s') or 0):.1f} ms")
    units = sorted(r.get("units", []), key=lambda u: -u["seconds"])
    tot = sum(u["seconds"] for u in units)
    if units:
        print("\n| unit | calls | ms | share of step |\n|---|---|---|---|")
        for u in units:
            print(f"| {u['name']} | {u['calls']} | {u['seconds']*1e3:.2f} | {100*u['seconds']/r['step_s_mean']:.1f} % |")
        print(f"| (rest: candle matmuls, adds, casts, gathers) | | {1e3*(r['step_s_mean']-tot):.2f} | {100*(1-tot/r['step_s_mean']):.1f} % |")
