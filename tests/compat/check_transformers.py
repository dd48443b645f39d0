#!/usr/bin/env python3
"""transformers compatibility of the trainer's checkpoints, both directions, f32 on CPU:

1. a checkpoint coretech saved (CKPT, e.g. runs/demo-cpt/checkpoints/step-00000016) loads in
   transformers' Qwen2ForCausalLM and gives the logits of coretech's training forward;
2. HF weights transformers writes (a seeded random Qwen2 with tied embeddings and one with an
   untied head, save_pretrained) load in coretech and give transformers' logits.

Usage: python3 tests/compat/check_transformers.py CORETECH_BINARY CKPT [TOLERANCE]
Needs torch and transformers; without them it says so and exits 0 (skipped, not passed).
Prints the max abs logit difference of each check; exits 1 when one exceeds TOLERANCE (1e-3:
f32 forwards in different op orders over a 151k vocabulary).
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
except ImportError as e:  # noqa: F841
    print(f"SKIPPED: torch/transformers/numpy not importable here ({e})")
    sys.exit(0)

IDS = [151644, 872, 198, 3838, 374, 279, 6722, 315, 9625, 30, 151645, 198, 42, 7, 1000, 2]


def ours(binary, weights, ids):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.f32")
        subprocess.run([binary, "logits", "--checkpoint", weights, "--ids", ",".join(map(str, ids)), "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        return np.fromfile(out, dtype="<f4").reshape(len(ids), -1)


def theirs(weights, ids):
    m = Qwen2ForCausalLM.from_pretrained(weights, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def check(name, a, b, tol):
    if a.shape != b.shape:
        print(f"FAIL {name}: shapes {a.shape} vs {b.shape}")
        return False
    d = float(np.abs(a - b).max())
    ok = d <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs logit difference {d:.3e} "
          f"(logits up to {float(np.abs(b).max()):.2f}, tolerance {tol:g}), argmax agreement "
          f"{float((a.argmax(-1) == b.argmax(-1)).mean()):.3f}")
    return ok


def main():
    binary, ckpt = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
    print("torch", torch.__version__, "| checkpoint", ckpt)
    ok = check("coretech checkpoint in transformers", ours(binary, ckpt, IDS), theirs(ckpt, IDS), tol)
    for tied in (True, False):
        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=151936, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=tied)
        with tempfile.TemporaryDirectory() as d:
            Qwen2ForCausalLM(cfg).float().save_pretrained(d, safe_serialization=True)
            ok &= check(f"HF weights (tie_word_embeddings={tied}) in coretech", ours(binary, d, IDS), theirs(d, IDS), tol)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
