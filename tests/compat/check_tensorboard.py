#!/usr/bin/env python3
"""Opens a coretech run directory with TensorBoard's own reader (EventAccumulator, what
`tensorboard --logdir` uses) and checks its scalars against metrics.jsonl: train/loss, train/lr,
train/grad_norm, train/tokens_per_s per step, val/loss per evaluation, same values (float32).

Usage: check_tensorboard.py RUN_DIR STEPS EVALUATIONS
Needs the `tensorboard` package; run by `cargo test --test train_watch`, which says SKIPPED
without it.
"""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 4:
        fail("usage: check_tensorboard.py RUN_DIR STEPS EVALUATIONS")
    run, steps, evals = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    acc = EventAccumulator(run, size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    want = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/stage", "val/loss"}
    if not want <= tags:
        fail(f"scalar tags {sorted(tags)} lack {sorted(want - tags)}")
    recs = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    train = [r for r in recs if "val_loss" not in r]
    val = [r for r in recs if "val_loss" in r]
    loss = acc.Scalars("train/loss")
    if [e.step for e in loss] != [r["step"] for r in train] or len(loss) != steps:
        fail(f"train/loss steps {[e.step for e in loss]}")
    for e, r in zip(loss, train):
        if abs(e.value - r["loss"]) > 1e-6 * max(1.0, abs(r["loss"])):
            fail(f"step {e.step}: train/loss {e.value} vs metrics.jsonl {r['loss']}")
    vl = acc.Scalars("val/loss")
    if len(vl) != evals or [e.step for e in vl] != sorted({r["step"] for r in val}):
        fail(f"val/loss steps {[e.step for e in vl]}")
    print(f"tensorboard EventAccumulator: {len(tags)} scalar tags, {len(loss)} train/loss and {len(vl)} val/loss points match metrics.jsonl")


if __name__ == "__main__":
    main()
