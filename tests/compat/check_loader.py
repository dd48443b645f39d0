#!/usr/bin/env python3
"""Checks python/coretech_loader.py against the Rust loader (`coretech batches`): the same
batches (input_ids, position_ids, segment_ids, loss_mask, cu_seqlens, stage), labels that count
exactly the Rust loader's targets, the same cursor after every batch, and a resume from a
cursor of either side continuing with the same batches. Settings: one stage over 2 epochs;
ranks of a 2-rank run with drop_last; every directory as a curriculum stage with replay on 3
ranks.

Usage: check_loader.py CORETECH_BIN SHARD_DIR [SHARD_DIR ...]
Needs pyarrow (torch optional: then tensors are checked too). Run by
`cargo test --test python_loader`, which says SKIPPED without pyarrow.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from coretech_loader import ShardLoader  # noqa: E402

FIELDS = ("input_ids", "position_ids", "segment_ids", "loss_mask")


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def rust_batches(bin_, dirs, s, state=None):
    cmd = [bin_, "batches", *dirs, "--batch-size", str(s["batch_size"]), "--seed", str(s["seed"]), "--epochs", str(s["epochs"]),
           "--rank", str(s["rank"]), "--world-size", str(s["world_size"]), "--replay", str(s["replay"])]
    if s["drop_last"]:
        cmd.append("--drop-last")
    if state is not None:
        cmd += ["--state", json.dumps(state)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{' '.join(cmd[:3])}…: exit {p.returncode}: {p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines()]


def compare(name, py_loader, rust, start=0):
    n = 0
    for k, r in enumerate(rust):
        b = py_loader.next_batch()
        if b is None:
            fail(f"{name}: python ended after {k} batches, rust has {len(rust)}")
        for f in FIELDS:
            flat = [x for row in b[f] for x in row]
            if flat != r[f]:
                fail(f"{name}: batch {start + k}: {f} differs")
        if b["cu_seqlens"] != r["cu_seqlens"]:
            fail(f"{name}: batch {start + k}: cu_seqlens {b['cu_seqlens']} vs {r['cu_seqlens']}")
        if b["stage"] != r["stage"]:
            fail(f"{name}: batch {start + k}: stage {b['stage']} vs {r['stage']}")
        labels = [x for row in b["labels"] for x in row]
        counted = sum(1 for x in labels if x != -100)
        if counted != r["targets"]:
            fail(f"{name}: batch {start + k}: {counted} labels count, rust counts {r['targets']} targets")
        S = r["seq_len"]
        for i, x in enumerate(labels):
            if x != -100 and (x != r["input_ids"][i] or i % S == 0 or r["segment_ids"][i] != r["segment_ids"][i - 1] or r["loss_mask"][i] != 1):
                fail(f"{name}: batch {start + k}: label at {i} is {x}")
        if py_loader.state_dict() != r["state"]:
            fail(f"{name}: batch {start + k}: cursor {py_loader.state_dict()} vs {r['state']}")
        n += 1
    if py_loader.next_batch() is not None:
        fail(f"{name}: python yields more than rust's {len(rust)} batches")
    return n


def main():
    if len(sys.argv) < 3:
        fail("usage: check_loader.py CORETECH_BIN SHARD_DIR [SHARD_DIR ...]")
    bin_, dirs = os.path.abspath(sys.argv[1]), sys.argv[2:]
    base = dict(batch_size=3, seed=7, epochs=2, rank=0, world_size=1, replay=0.0, drop_last=False)
    settings = [
        ("one stage, 2 epochs", dirs[:1], base),
        ("rank 1 of 2, drop_last", dirs[:1], dict(base, rank=1, world_size=2, drop_last=True, epochs=1, seed=11)),
    ]
    if len(dirs) > 1:
        settings.append(("stages with replay, rank 2 of 3", dirs, dict(base, batch_size=2, rank=2, world_size=3, replay=0.3, epochs=1, seed=3)))
    total = 0
    for name, ds, s in settings:
        rust = rust_batches(bin_, ds, s)
        if not rust:
            fail(f"{name}: the rust loader yields no batch")
        total += compare(name, ShardLoader(ds, **s), rust)
        # Resume from a cursor in the middle: python from rust's cursor, rust from python's.
        k = len(rust) // 2
        state = rust[k - 1]["state"] if k > 0 else None
        if state is not None:
            compare(name + " (python resumed from rust's cursor)", ShardLoader(ds, state=state, **s), rust[k:], start=k)
            py = ShardLoader(ds, **s)
            for _ in range(k):
                py.next_batch()
            compare(name + " (rust resumed from python's cursor)", ShardLoader(ds, state=py.state_dict(), **s), rust_batches(bin_, ds, s, py.state_dict()), start=k)
        print(f"{name}: {len(rust)} batches equal, cursors equal, resume at batch {k} equal")
    # Another seed is refused as a cursor (the fingerprint covers the settings).
    try:
        ShardLoader(dirs[:1], **dict(base, seed=8), state=rust_batches(bin_, dirs[:1], base)[0]["state"])
        fail("a cursor of other settings was accepted")
    except ValueError as e:
        if "other data or settings" not in str(e):
            raise
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch not installed: tensor output not checked")
    else:
        b = ShardLoader(dirs[:1], torch=True, **base).next_batch()
        assert tuple(b["input_ids"].shape) == (3, ShardLoader(dirs[:1], **base).seq_len), b["input_ids"].shape
        assert b["cu_seqlens"][-1].item() == b["input_ids"].numel()
        print("torch tensors: shapes ok")
    print(f"coretech_loader: OK ({total} batches compared)")


if __name__ == "__main__":
    main()
