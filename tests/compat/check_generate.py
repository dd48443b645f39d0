#!/usr/bin/env python3
"""Checks that an SFT (chat) checkpoint of coretech is ready for transformers' generate():
its tokenizer_config.json carries the Qwen2.5 chat template and `<|im_end|>` as eos_token, its
generation_config.json lists `<|im_end|>` (151645) and `<|endoftext|>` (151643) as eos ids, and
generate() stops at `<|im_end|>`.

A model trained for a few steps does not choose `<|im_end|>` by itself, so a logits processor
forces it as the 3rd new token: generate() must stop right there with the checkpoint's own
generation config, and must run on to max_new_tokens when only `<|endoftext|>` ends a sequence
(what config.json alone says: the failure this file prevents).

Usage: check_generate.py CHECKPOINT_DIR (the run's `latest` link works)
Needs torch and transformers; run by `cargo test --test checkpoint_files`, which says SKIPPED
without them.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList

IM_END, EOT = 151645, 151643
MAX_NEW = 12
FORCE_AT = 3


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


class ForceAt(LogitsProcessor):
    """Makes token `tok` the only choice at new position `at` (1-based)."""

    def __init__(self, prompt_len, tok, at):
        self.prompt_len, self.tok, self.at = prompt_len, tok, at

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len == self.at - 1:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.tok] = 0.0
        return scores


def main():
    if len(sys.argv) != 2:
        fail("usage: check_generate.py CHECKPOINT_DIR")
    ckpt = os.path.realpath(sys.argv[1])
    gen = json.load(open(os.path.join(ckpt, "generation_config.json")))
    if sorted(gen["eos_token_id"]) != sorted([IM_END, EOT]):
        fail(f"generation_config.json eos_token_id {gen['eos_token_id']}")
    tok = AutoTokenizer.from_pretrained(ckpt)
    if tok.eos_token != "<|im_end|>" or tok.eos_token_id != IM_END:
        fail(f"tokenizer eos_token {tok.eos_token!r} ({tok.eos_token_id})")
    msgs = [{"role": "user", "content": "H04L 29/06 属于哪个IPC大类？"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nH04L 29/06 属于哪个IPC大类？<|im_end|>\n<|im_start|>assistant\n")
    if text != want:
        fail(f"chat template renders {text!r}")
    model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32)
    model.eval()
    ids = tok(text, return_tensors="pt").input_ids
    n = ids.shape[1]
    procs = LogitsProcessorList([ForceAt(n, IM_END, FORCE_AT)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False, logits_processor=procs)
        new = out[0, n:].tolist()
        if len(new) != FORCE_AT or new[-1] != IM_END:
            fail(f"with the checkpoint's generation_config, generate() gave {new}: it did not stop at <|im_end|>")
        base_only = GenerationConfig.from_pretrained(ckpt)
        base_only.eos_token_id = EOT
        out2 = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=base_only, max_new_tokens=MAX_NEW,
                              do_sample=False, logits_processor=procs)
        new2 = out2[0, n:].tolist()
        if len(new2) != MAX_NEW:
            fail(f"control: with only <|endoftext|> as eos generate() still stopped: {new2}")
    print(f"generate() stops at <|im_end|> after {len(new)} new tokens (control without it: {len(new2)}); "
          f"chat template and eos ids as Qwen2.5-Instruct's (transformers {__import__('transformers').__version__})")


if __name__ == "__main__":
    main()
