#!/usr/bin/env python3
"""Times PyTorch's SDPA backends (flash = FA2, cuDNN, memory-efficient) on the trainer's
attention shapes, forward and forward+backward, causal, bf16, GQA. Used to choose the CUDA
trainer's attention kernel (docs/cuda-notes.md).

Inputs are views of (b, T, heads, D) tensors transposed to (b, heads, T, D), as the projection
outputs are laid out in the trainer (and in HF). Prints one 'ATTN {json}' line per result.
Env: REPS (20), WARMUP (3).
"""
import json, os, sys
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

REPS = int(os.environ.get("REPS", 20))
WARMUP = int(os.environ.get("WARMUP", 3))
SHAPES = [  # name, batch, seq, q heads, kv heads, head dim
    ("qwen2.5-0.5b", 8, 2048, 14, 2, 64),
    ("qwen2.5-1.5b", 4, 2048, 12, 2, 128),
]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def timed(fn):
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(REPS):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    ts.sort()
    return ts[len(ts) // 2], ts[0]


def main():
    print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0), flush=True)
    for name, b, t, hq, hkv, d in SHAPES:
        torch.manual_seed(0)
        mk = lambda h: torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16)
        q0, k0, v0, g0 = mk(hq), mk(hkv), mk(hkv), mk(hq)
        q = q0.transpose(1, 2).detach().requires_grad_()
        k = k0.transpose(1, 2).detach().requires_grad_()
        v = v0.transpose(1, 2).detach().requires_grad_()
        g = g0.transpose(1, 2)
        rep = hq // hkv
        fwd_flops = 4.0 * b * hq * t * t * d / 2  # causal: half the scores
        ref = None
        for bname, be in BACKENDS:
            for gqa in ("native", "expanded"):
                def fwd():
                    if gqa == "native":
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True)

                def fb():
                    o = fwd()
                    o.backward(g)
                res = {"shape": name, "backend": bname, "gqa": gqa, "batch": b, "seq": t, "hq": hq, "hkv": hkv, "d": d}
                try:
                    with sdpa_kernel([be]):
                        o = fwd().float()
                        if ref is None:
                            ref = o
                        res["max_abs_diff_vs_first"] = (o - ref).abs().max().item()
                        del o
                        mf, bf = timed(lambda: fwd())
                        q.grad = k.grad = v.grad = None
                        mb, bb = timed(fb)
                        q.grad = k.grad = v.grad = None
                    res.update({"fwd_ms": mf * 1e3, "fwd_tflops": fwd_flops / mf / 1e12,
                                "fwd_bwd_ms": mb * 1e3, "fwd_bwd_tflops": 3.5 * fwd_flops / mb / 1e12,
                                "fwd_bwd_best_ms": bb * 1e3})
                except Exception as e:  # backend refuses the shape: report and go on
                    res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                print("ATTN " + json.dumps(res), flush=True)
                torch.cuda.empty_cache()
        del q, k, v, g, q0, k0, v0, g0, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
