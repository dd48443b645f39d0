#!/usr/bin/env python3
"""Golden SFT token ids and loss masks for every fixture example.

input_ids: transformers' `apply_chat_template` with the Qwen2.5 chat template
(fixtures/tokenizers/qwen2.5/chat_template.jinja) and the Qwen2.5 tokenizer loaded from its
tokenizer.json through `PreTrainedTokenizerFast(tokenizer_file=...)`.

loss mask: LLaMA-Factory's labels for its `qwen` template, reproduced from its source
(src/llamafactory/data/template.py, processor/supervised.py, processor/processor_utils.py):
  - Template._encode: message i is encoded on its own (`tokenizer.encode(elem,
    add_special_tokens=False)` per slot element); message 0 is preceded by the system slot
    `<|im_start|>system\n{system}<|im_end|>\n` (system = the example's or the default
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."); user messages use
    `<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n`, assistant messages
    `{content}<|im_end|>\n`.
  - encode_multiturn pairs them (user_i, assistant_i); _encode_supervised_example (no
    train_on_prompt, no mask_history, efficient_eos False for qwen) labels every source token
    -100 and keeps every target token: the assistant content, `<|im_end|>` and `\n`.
  - cutoff_len truncation: for each pair in order, stop once the total reaches cutoff_len,
    else infer_seqlen(source_len, target_len, cutoff_len - total) and keep the heads.
The script checks that LLaMA-Factory's ids equal transformers' ids for every example (they
can differ only when an answer starts with a line break; none does) and writes the mask as
[start, end) spans of label-kept tokens, plus the truncated ids/mask at CUTOFF for examples
longer than it.

Records are read as coretech reads the fixture files (bare files, no dataset_info.json):
alpaca `instruction` + "\n" + `input` (empty parts left out) → user, `output` → assistant,
`system`/`history` by name; sharegpt `conversations` (from/value, human/gpt, leading system
turn) with a trailing unanswered user turn removed (coretech's default; LLaMA-Factory would
drop such a conversation); the GovPatent CSV `question` → user, `answer` → assistant.
Records coretech reports as errors are skipped here too.

Usage (from the repository root, in a venv with `pip install transformers tokenizers jinja2
zstandard`):  python tests/golden/make_sft_ids.py
Writes fixtures/golden/sft/qwen2.5_chatml.jsonl.zst.
"""

import csv
import io
import json
import os
import sys
import tempfile

import zstandard
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "fixtures/tokenizers/qwen2.5/tokenizer.json.zst")
TEMPLATE = os.path.join(ROOT, "fixtures/tokenizers/qwen2.5/chat_template.jinja")
DATA = os.path.join(ROOT, "fixtures/data/sft")
OUT = os.path.join(ROOT, "fixtures/golden/sft/qwen2.5_chatml.jsonl.zst")
FILES = [
    "GovPatent-SFT_QA_IPC.jsonl",
    "GovPatent-SFT_QA_Tech.jsonl",
    "GovPatent-SFT_raw_data.csv",
    "Paper-SFT_QA_IPC.jsonl",
    "Paper-SFT_QA_Tech.jsonl",
    "flagai_aquila_convo_samples.sharegpt.jsonl",
]
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CUTOFF = 512
IGNORE = -100


def records(name):
    """(ordinal, record dict) for every record of a fixture file."""
    path = os.path.join(DATA, name)
    if name.endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                yield i, {"instruction": row["question"], "output": row["answer"]}
        return
    with open(path, encoding="utf-8") as f:
        lines = [l for l in f.read().split("\n") if l.strip()]
    for i, line in enumerate(lines):
        yield i, json.loads(line)


def convert(rec):
    """(system, messages) as coretech's bare-file reader builds them, or None when skipped."""
    if "conversations" in rec:
        turns = rec["conversations"]
        system = ""
        if turns and turns[0]["from"] == "system":
            system, turns = turns[0]["value"], turns[1:]
        msgs = []
        for i, t in enumerate(turns):
            role = {"human": "user", "gpt": "assistant"}[t["from"]]
            if (role == "user") != (i % 2 == 0):
                return None
            msgs.append({"role": role, "content": t["value"]})
        if msgs and msgs[-1]["role"] == "user":
            msgs.pop()
        return (system, msgs) if msgs else None
    msgs = []
    for q, a in rec.get("history") or []:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    query = [x for x in (rec.get("instruction"), rec.get("input")) if x]
    if not query or not isinstance(rec.get("output"), str):
        return None
    msgs += [{"role": "user", "content": "\n".join(query)}, {"role": "assistant", "content": rec["output"]}]
    return rec.get("system") or "", msgs


def lf_pairs(tok, system, msgs):
    """LLaMA-Factory Template.encode_multiturn for the qwen template."""
    system = system or DEFAULT_SYSTEM
    enc = []
    for i, m in enumerate(msgs):
        elements = []
        if i == 0 and system:
            elements.append("<|im_start|>system\n" + system + "<|im_end|>\n")
        if m["role"] == "user":
            elements.append("<|im_start|>user\n" + m["content"] + "<|im_end|>\n<|im_start|>assistant\n")
        else:
            elements.append(m["content"] + "<|im_end|>\n")
        ids = []
        for e in elements:
            if e:
                ids += tok.encode(e, add_special_tokens=False)
        enc.append(ids)
    return [(enc[i], enc[i + 1]) for i in range(0, len(enc), 2)]


def infer_seqlen(source_len, target_len, cutoff_len):
    """LLaMA-Factory processor_utils.infer_seqlen, verbatim."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    max_source_len = max(cutoff_len - new_target_len, 0)
    new_source_len = min(max_source_len, source_len)
    return new_source_len, new_target_len


def lf_supervised(pairs, cutoff_len):
    """LLaMA-Factory SupervisedDatasetProcessor._encode_data_example (qwen: no efficient_eos)."""
    input_ids, labels, total = [], [], 0
    for source_ids, target_ids in pairs:
        if total >= cutoff_len:
            break
        sl, tl = infer_seqlen(len(source_ids), len(target_ids), cutoff_len - total)
        source_ids, target_ids = source_ids[:sl], target_ids[:tl]
        total += sl + tl
        input_ids += source_ids + target_ids
        labels += [IGNORE] * sl + target_ids
    return input_ids, labels


def spans(labels):
    out, start = [], None
    for i, l in enumerate(labels + [IGNORE]):
        if l != IGNORE and start is None:
            start = i
        elif l == IGNORE and start is not None:
            out.append([start, i])
            start = None
    return out


def main():
    raw = zstandard.ZstdDecompressor().decompress(open(TOK, "rb").read(), max_output_size=1 << 26)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(raw)
        tok_path = f.name
    tok = PreTrainedTokenizerFast(tokenizer_file=tok_path)
    os.unlink(tok_path)
    template = open(TEMPLATE, encoding="utf-8").read()

    out, mismatches, n = [], 0, 0
    for name in FILES:
        for ordinal, rec in records(name):
            conv = convert(rec)
            if conv is None:
                continue
            system, msgs = conv
            chat = ([{"role": "system", "content": system}] if system else []) + msgs
            hf = tok.apply_chat_template(chat, chat_template=template, tokenize=True, add_generation_prompt=False)
            if isinstance(hf, dict) or hasattr(hf, "input_ids"):
                hf = hf["input_ids"]
            pairs = lf_pairs(tok, system, msgs)
            lf_ids, lf_labels = lf_supervised(pairs, 1 << 30)
            if lf_ids != list(hf):
                mismatches += 1
                print(f"{name}:{ordinal}: LLaMA-Factory ids differ from apply_chat_template", file=sys.stderr)
                continue
            row = {"file": name, "ordinal": ordinal, "input_ids": list(hf), "mask": spans(lf_labels)}
            if len(hf) > CUTOFF:
                t_ids, t_labels = lf_supervised(pairs, CUTOFF)
                row["cutoff"] = CUTOFF
                row["trunc_ids"] = t_ids
                row["trunc_mask"] = spans(t_labels)
            out.append(row)
            n += 1
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in out).encode()
    with open(OUT, "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(text))
    print(f"{n} examples, {sum(1 for r in out if 'cutoff' in r)} over {CUTOFF} tokens, {mismatches} LF/HF mismatches -> {OUT}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
