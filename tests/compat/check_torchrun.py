#!/usr/bin/env python3
"""Launches `coretech train` through real torchrun on 2 CPU ranks and checks the run against one
process with the same global batch: one data-parallel run (each step logged once), losses within
1e-5 relative. Two launches: `--standalone` (the agent holds the c10d store on a port it picks)
and `--master-port` with the static rendezvous (the agent listens on MASTER_PORT), both with a
config that has no `distributed` section (auto: ddp under a launcher).

Usage: check_torchrun.py CORETECH_BIN
Needs torch (torchrun); run by `cargo test --test train_dist real_torchrun_when_installed`,
which says SKIPPED without it.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

REL_TOL = 1e-5

CONFIG = """stages = ["train:t"]
[train.t]
output = "{out}"
batch_size = {batch}
seq_len = 32
seed = 5
[train.t.model]
preset = "test"
[train.t.optimizer]
lr = 0.01
[train.t.checkpoint]
every = 0
dtype = "f32"
[train.t.metrics]
progress = false
[train.t.data.synthetic]
rows = 24
"""


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def losses(run):
    out = []
    for line in open(os.path.join(run, "metrics.jsonl")):
        rec = json.loads(line)
        if "val_loss" not in rec:
            out.append(rec["loss"])
    return out


def train(bin_, tmp, name, batch, launcher):
    run = os.path.join(tmp, name)
    cfg = os.path.join(tmp, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(out=run, batch=batch))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", "SLURM_PROCID")}
    p = subprocess.run(launcher + [bin_, "train", cfg], env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        fail(f"{name}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return losses(run)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if len(sys.argv) != 2:
        fail("usage: check_torchrun.py CORETECH_BIN")
    bin_ = os.path.abspath(sys.argv[1])
    import torch  # noqa: F401  (the launcher below is torch's)

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--no-python"]
    with tempfile.TemporaryDirectory() as tmp:
        ref = train(bin_, tmp, "one", 4, [])
        if len(ref) != 6:
            fail(f"reference run logged {len(ref)} steps, expected 6")
        for name, extra in [
            ("standalone", ["--standalone"]),
            ("master-port", ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]),
        ]:
            got = train(bin_, tmp, name, 2, torchrun + extra)
            if len(got) != len(ref):
                fail(f"{name}: {len(got)} steps logged, the 1-process run {len(ref)} (N copies of one run?)")
            d = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(got, ref))
            print(f"torchrun {name}, 2 CPU ranks vs 1 process: {len(got)} steps, max rel loss diff {d:.2e}")
            if d >= REL_TOL:
                fail(f"{name}: losses {got} vs {ref}")
    print("torchrun: OK (torch " + __import__("torch").__version__ + ")")


if __name__ == "__main__":
    main()
