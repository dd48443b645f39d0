#!/usr/bin/env python3
"""Runs ../shared/gpu/torch_qwen2_train.py (the PyTorch reference, copied next to this script
as torch_qwen2_train.py) on another Qwen2.5 shape: QWEN=1.5b|3b (default 0.5b, unchanged).
Usage: QWEN=1.5b BATCHES="8 6 4" python3 torch_qwen2_shape.py bf16c
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_qwen2_train as ref  # noqa: E402

SHAPES = {  # hidden, intermediate, layers, heads, kv heads (HF config.json of each model)
    "1.5b": (1536, 8960, 28, 12, 2),
    "3b": (2048, 11008, 36, 16, 2),
}
_orig = ref.make_cfg


def make_cfg():
    q = os.environ.get("QWEN", "0.5b")
    if q not in SHAPES:
        return _orig()
    from transformers import Qwen2Config
    h, i, l, nh, kv = SHAPES[q]
    # the reference's settings (make_cfg in torch_qwen2_train.py), other sizes
    cfg = Qwen2Config(vocab_size=151936, hidden_size=h, intermediate_size=i, num_hidden_layers=l,
                      num_attention_heads=nh, num_key_value_heads=kv, max_position_embeddings=32768,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
                      use_sliding_window=False, attention_dropout=0.0, use_cache=False,
                      initializer_range=0.02, rope_theta=1e6)
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = 1e6
    cfg._attn_implementation = "sdpa"
    return cfg


ref.make_cfg = make_cfg
if __name__ == "__main__":
    ref.main()
