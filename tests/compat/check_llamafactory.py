#!/usr/bin/env python3
"""Checks a `coretech export llamafactory` directory the way LLaMA-Factory reads it.

For every entry of dataset_info.json: the keys are LLaMA-Factory's documented dataset
description (data/README.md; DatasetAttr in src/llamafactory/data/parser.py), the file loads
with `datasets.load_dataset("json", data_files=[file], split="train")` as LLaMA-Factory's loader
does for a local file, and every row converts with the rules of its Alpaca/ShareGPT converters
(src/llamafactory/data/converter.py: prompt = history pairs + "instruction\ninput", one response;
sharegpt roles human/gpt at odd/even positions, an even count) to a non-empty prompt ending with
a user turn and one assistant response. Optionally compares the conversations with the SFT
build's examples.parquet (same examples, turns and system prompts, default system filled in).

Usage: check_llamafactory.py EXPORT_DIR [SFT_DIR DEFAULT_SYSTEM]
Exit 0 when every check passes. SKIPPED (exit 0, says so) without `datasets`.
"""
import json
import os
import sys
import tempfile

try:
    import datasets
except ImportError:
    print("SKIPPED: no datasets")
    sys.exit(0)

ENTRY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "file_name", "file_sha1", "formatting", "ranking",
              "subset", "split", "folder", "num_samples", "columns", "tags"}
COLUMNS = {"alpaca": {"prompt", "query", "response", "history", "system", "tools", "images", "chosen", "rejected", "kto_tag"},
           "sharegpt": {"messages", "system", "tools", "images", "chosen", "rejected", "kto_tag"}}
TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def convert(attr, ex):
    """LLaMA-Factory's converters, reduced to supervised examples: (system, prompt, response)."""
    if attr["formatting"] == "alpaca":
        cols = attr["columns"]
        prompt = []
        if cols.get("history") and isinstance(ex[cols["history"]], list):
            for old_prompt, old_response in ex[cols["history"]]:
                prompt += [("user", old_prompt), ("assistant", old_response)]
        query = [ex[c] for c in (cols.get("prompt", "instruction"), cols.get("query", "input")) if c and ex.get(c)]
        prompt.append(("user", "\n".join(query)))
        response = [("assistant", ex[cols.get("response", "output")])]
        system = ex[cols["system"]] if cols.get("system") else ""
        return system, prompt, response
    cols, tags = attr["columns"], attr.get("tags", {})
    role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    user, assistant = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")
    msgs = ex[cols.get("messages", "conversations")]
    system = ex[cols["system"]] if cols.get("system") else ""
    if msgs and msgs[0][role] == tags.get("system_tag", "system"):
        system, msgs = msgs[0][content], msgs[1:]
    accept = ((user, tags.get("observation_tag", "observation")), (assistant, tags.get("function_tag", "function_call")))
    aligned = []
    for i, m in enumerate(msgs):
        if m[role] not in accept[i % 2]:
            return None  # LLaMA-Factory: "Invalid role tag", example skipped
        aligned.append(("user" if m[role] == user else "assistant", m[content]))
    if len(aligned) % 2 != 0:
        return None  # "Invalid message count"
    return system, aligned[:-1], aligned[-1:]


def main():
    if len(sys.argv) not in (2, 4):
        fail("usage: check_llamafactory.py EXPORT_DIR [SFT_DIR DEFAULT_SYSTEM]")
    root = sys.argv[1]
    info = json.load(open(os.path.join(root, "dataset_info.json")))
    if not info:
        fail("dataset_info.json is empty")
    seen = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, attr in info.items():
            extra = set(attr) - ENTRY_KEYS
            if extra:
                fail(f"{name}: keys LLaMA-Factory does not know: {sorted(extra)}")
            fmt = attr.get("formatting", "alpaca")
            if fmt not in COLUMNS:
                fail(f"{name}: formatting {fmt!r}")
            attr = {**attr, "formatting": fmt}
            bad_cols = set(attr.get("columns", {})) - COLUMNS[fmt]
            if bad_cols:
                fail(f"{name}: columns LLaMA-Factory ignores for {fmt}: {sorted(bad_cols)}")
            if fmt == "sharegpt" and set(attr.get("tags", {})) - TAGS:
                fail(f"{name}: unknown tags {sorted(set(attr['tags']) - TAGS)}")
            path = os.path.join(root, attr["file_name"])
            ds = datasets.load_dataset("json", data_files=[path], split=attr.get("split", "train"), cache_dir=cache)
            if len(ds) == 0:
                fail(f"{name}: {path} has no rows")
            for i, ex in enumerate(ds):
                conv = convert(attr, ex)
                if conv is None:
                    fail(f"{name} row {i}: LLaMA-Factory would skip it (roles or count)")
                system, prompt, response = conv
                if not prompt or prompt[-1][0] != "user" or len(response) != 1 or response[0][0] != "assistant":
                    fail(f"{name} row {i}: prompt {prompt!r} / response {response!r}")
                seen[ex["id"]] = (system, prompt + response, name)
            print(f"{name}: {attr['file_name']} {len(ds)} examples, {fmt}: OK")
    if len(sys.argv) == 4:
        import pyarrow.parquet as pq
        sft_dir, default_system = sys.argv[2], sys.argv[3]
        table = pq.read_table(os.path.join(sft_dir, "examples.parquet"), columns=["id", "split", "stage", "system", "messages"])
        want = table.to_pylist()
        if len(want) != len(seen):
            fail(f"{len(seen)} examples exported, examples.parquet has {len(want)}")
        for row in want:
            got = seen.get(row["id"])
            if got is None:
                fail(f"{row['id']} missing from the export")
            system, turns, name = got
            if not name.endswith(f"_{row['split']}_stage{row['stage']}"):
                fail(f"{row['id']}: in {name}, split {row['split']} stage {row['stage']}")
            msgs = [(m["role"], m["content"]) for m in json.loads(row["messages"])]
            if turns != msgs:
                fail(f"{row['id']}: turns differ\n{turns}\n{msgs}")
            if system != (row["system"] or default_system):
                fail(f"{row['id']}: system {system!r}")
        print(f"{len(want)} examples equal examples.parquet (turns, system, split, stage)")
    print("OK")


if __name__ == "__main__":
    main()
