#!/usr/bin/env python3
"""CPU training side by side, same machine, same shape, same thread count: `coretech bench
train` against a PyTorch eager reference of the same architecture (written below: Qwen2 with
tied embeddings, q/k/v biases, RoPE θ = 1e6, GQA, SwiGLU, RMSNorm eps 1e-6, HF init), f32,
random tokens with every next token counted, AdamW (β 0.9/0.95, eps 1e-8, wd 0.1 off norms
and biases, lr 3e-4) with global-norm clipping at 1.0.

Each tool runs in its own process (RAYON_NUM_THREADS / torch.set_num_threads = the thread
count), a warm-up step untimed, then --steps timed steps. Printed per row: tokens/s (wall),
tokens per CPU-second of the whole process (every thread: on a shared machine the wall figure
moves with the load, the CPU one much less), the CPU seconds per step and the peak RSS; then
the ratios ours / PyTorch on both bases. PyTorch rows are skipped with a note when torch is not
importable (PyPI's x86-64 torch needs the CUDA wheels, several GB).

Usage (our crate at release settings first, e.g. cargo build --release):
    python3 benches/train_cpu_compare.py [--threads 1 2] [--steps 3] [--model tiny]
        [--batch 4] [--seq 256] [--binary target/release/coretech]
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (hidden, intermediate, layers, heads, kv heads, vocab) of coretech's presets (src/train/arch.rs).
PRESETS = {"tiny": (64, 176, 2, 4, 2, 151936), "small": (256, 704, 4, 4, 2, 151936)}

TORCH_WORKER = r'''
import json, math, resource, sys, time
import torch
import torch.nn.functional as F

hidden, inter, layers, heads, kv, vocab, batch, seq, steps, threads, seed = (int(a) for a in sys.argv[1:12])
torch.set_num_threads(threads)
torch.manual_seed(seed)
D = hidden // heads

class RMSNorm(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
    def forward(self, x):
        # HF Qwen2RMSNorm: normalise in f32, then scale
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

def rope(x, cos, sin):
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin

class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = RMSNorm(hidden), RMSNorm(hidden)
        self.q = torch.nn.Linear(hidden, heads * D, bias=True)
        self.k = torch.nn.Linear(hidden, kv * D, bias=True)
        self.v = torch.nn.Linear(hidden, kv * D, bias=True)
        self.o = torch.nn.Linear(heads * D, hidden, bias=False)
        self.gate = torch.nn.Linear(hidden, inter, bias=False)
        self.up = torch.nn.Linear(hidden, inter, bias=False)
        self.down = torch.nn.Linear(inter, hidden, bias=False)
    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.ln1(x)
        q = self.q(h).view(B, T, heads, D).transpose(1, 2)
        k = self.k(h).view(B, T, kv, D).transpose(1, 2)
        v = self.v(h).view(B, T, kv, D).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, heads * D))
        h = self.ln2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(layers))
        self.norm = RMSNorm(hidden)
        for m in self.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        inv = 1.0 / (1e6 ** (torch.arange(0, D, 2).float() / D))
        ang = torch.outer(torch.arange(seq).float(), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
    def forward(self, ids):
        x = self.embed(ids)
        for l in self.layers:
            x = l(x, self.cos, self.sin)
        logits = self.norm(x) @ self.embed.weight.t()  # tied head
        return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))

model = Model()
decay = [p for n, p in model.named_parameters() if p.dim() > 1]
no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
gen = torch.Generator().manual_seed(seed)
def step():
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    loss = model(ids)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
first = step()
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(steps):
    last = step()
secs, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"tokens_per_s": batch * seq * steps / secs, "cpu_s_per_step": cpu / steps, "tokens_per_cpu_s": batch * seq * steps / cpu,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "loss_first": first, "loss_last": last,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
'''


def env(threads):
    return dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def ours(binary, args, threads):
    out = subprocess.run([binary, "bench", "train", "--model", args.model, "--batch", str(args.batch), "--seq", str(args.seq),
                          "--steps", str(args.steps), "--warmup", "1", "--ce-chunk", str(args.ce_chunk)],
                         env=env(threads), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def torch_ref(args, threads):
    h, i, l, nh, kv, v = PRESETS[args.model]
    cmd = [sys.executable, "-c", TORCH_WORKER] + [str(x) for x in (h, i, l, nh, kv, v, args.batch, args.seq, args.steps, threads, 0)]
    out = subprocess.run(cmd, env=env(threads), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (one untimed warm-up step before)")
    ap.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--ce-chunk", type=int, default=1024)
    ap.add_argument("--binary", default=os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "coretech"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: run cargo build --release first")
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print(f"note: torch is not installed in {sys.executable}: the PyTorch rows are skipped", file=sys.stderr)
    load = os.getloadavg()[0]
    rows = []
    for th in args.threads:
        r = ours(args.binary, args, th)
        rows.append({"threads": th, "what": f"coretech bench train ({r['backend']} ops)", "tokens_per_s": r["tokens_per_s"],
                     "tokens_per_cpu_s": r["tokens_per_cpu_s"], "cpu_s_per_step": r["cpu_s_per_step"],
                     "peak_rss_mib": r["peak_rss_bytes"] / 2**20, "loss_first": r["loss_first"],
                     "optimizer_s_mean": r["optimizer_s_mean"]})
        if have_torch:
            t = torch_ref(args, th)
            rows.append({"threads": th, "what": f"PyTorch {t['torch']} eager", "tokens_per_s": t["tokens_per_s"],
                         "tokens_per_cpu_s": t["tokens_per_cpu_s"], "cpu_s_per_step": t["cpu_s_per_step"],
                         "peak_rss_mib": t["peak_rss_bytes"] / 2**20, "loss_first": t["loss_first"]})
            a, b = rows[-2], rows[-1]
            rows.append({"threads": th, "what": "ratio coretech / PyTorch", "ratio": round(a["tokens_per_s"] / b["tokens_per_s"], 2),
                         "ratio_per_cpu_s": round(a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"], 2)})
    ours_rows = {r["threads"]: r for r in rows if r["what"].startswith("coretech")}
    if len(ours_rows) > 1:
        lo, hi = min(ours_rows), max(ours_rows)
        rows.append({"threads": hi, "what": f"scaling coretech {lo} -> {hi} threads",
                     "ratio": round(ours_rows[hi]["tokens_per_s"] / ours_rows[lo]["tokens_per_s"], 2),
                     "ratio_per_cpu_s": round(ours_rows[hi]["tokens_per_cpu_s"] / ours_rows[lo]["tokens_per_cpu_s"], 2)})
    print(f"model {args.model}, batch {args.batch} x {args.seq}, f32, {args.steps} timed steps; load average at start {load:.1f}")
    print(f"{'threads':>7}  {'what':<34} {'tokens/s':>9} {'tok/CPU-s':>10} {'CPU-s/step':>10} {'RSS MiB':>8} {'1st loss':>9}")
    for r in rows:
        if "ratio" in r:
            print(f"{r['threads']:>7}  {r['what']:<34} {'x' + str(r['ratio']):>9} {'x' + str(r['ratio_per_cpu_s']):>10}")
        else:
            print(f"{r['threads']:>7}  {r['what']:<34} {r['tokens_per_s']:>9.1f} {r['tokens_per_cpu_s']:>10.1f} {r['cpu_s_per_step']:>10.2f} "
                  f"{r['peak_rss_mib']:>8.0f} {r['loss_first']:>9.4f}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
