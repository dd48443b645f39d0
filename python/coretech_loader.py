"""Read coretech token and SFT shard directories from Python, in the training loader's order.

A pure-Python port of the Rust loader (`src/shard/reader.rs`) on pyarrow (torch optional), so a
PyTorch user (an HF Trainer, torchtitan, a plain loop) trains on exactly the rows, order and
resumable cursor that `coretech train` uses:

    import sys; sys.path.insert(0, "python")
    from coretech_loader import ShardLoader
    loader = ShardLoader(["out/demo/tokens"], batch_size=8, seed=0)
    for batch in loader:                       # dicts of lists; ShardLoader(..., torch=True) gives tensors
        batch["input_ids"], batch["position_ids"], batch["labels"], batch["cu_seqlens"]
    state = loader.state_dict()                # JSON-able; ShardLoader(..., state=state) continues

Batch fields (B rows of S tokens, row-major; S = the shards' seq_len):
  input_ids     B x S token ids
  position_ids  B x S, restarting at 0 at every segment (document / example) start
  segment_ids   B x S, the segment index within the row (padding is a segment of its own)
  loss_mask     B x S, 1 where the token is a target (CPT: real tokens; SFT: answers)
  labels        B x S, input_ids where the prediction of that token counts, else -100: the
                token is a target and the previous token is in the same segment (HF convention:
                the model shifts labels by one, so no prediction crosses a document boundary)
  cu_seqlens    boundaries of every segment in the flattened batch: [0, ..., B*S]
  stage         per-row curriculum stage (shards with a `stage` column), else None

Order (the Rust loader's, see its module docs): per (stage, epoch) the row groups are visited
in a seeded order and the rows of each row group in a seeded order (keyed Feistel permutations);
later stages give a `replay` share of positions to earlier stages' rows; global step s covers
positions [s*W*B, (s+1)*W*B) and rank r takes B of them. `state_dict()` equals the Rust
loader's `state()` (and a checkpoint's `trainer_state.json` -> loader -> loader), so either side
can resume from the other's cursor.
"""

import hashlib
import json
import math
import os
from collections import OrderedDict

import pyarrow.parquet as pq

__all__ = ["ShardLoader", "Permutation", "hash_words", "mix64"]

MASK64 = (1 << 64) - 1
# A shard folder's manifest (src/shard/manifest.rs MANIFEST_FILE; dot-prefixed so that
# datasets/pyarrow/polars globs see only the shards). tests/loader_compat.rs checks they agree.
MANIFEST_FILE = ".manifest.json"
GOLDEN = 0x9E3779B97F4A7C15
PPM = 1_000_000
STATE_VERSION = 1
BLOCK_CACHE = 4
FEISTEL_ROUNDS = 6


def mix64(z):
    """The SplitMix64 output function (src/core/rng.rs)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def hash_words(seed, words):
    """A hash of a seed and a list of numbers (src/core/rng.rs `hash_words`)."""
    h = mix64(seed ^ GOLDEN)
    for w in words:
        h = mix64(h ^ ((w * GOLDEN) & MASK64))
    return h


class Permutation:
    """A keyed bijection of [0, n): a Feistel network with cycle walking (src/core/rng.rs)."""

    def __init__(self, n, key):
        bits = (n - 1).bit_length() if n > 1 else 0
        self.n = n
        self.half = max((bits + 1) // 2, 1)
        self.mask = (1 << self.half) - 1
        self.round_keys = [hash_words(key, [k]) for k in range(FEISTEL_ROUNDS)]

    def _rounds(self, x):
        left, right = x >> self.half, x & self.mask
        for rk in self.round_keys:
            f = mix64(right ^ rk) & self.mask
            left, right = right, left ^ f
        return (left << self.half) | right

    def apply(self, i):
        x = i
        while True:
            x = self._rounds(x)
            if x < self.n:
                return x


def positions_for(rows, ppm):
    """Smallest number of positions holding `rows` stage rows when ppm/1e6 of them are replay slots."""
    if ppm == 0 or rows == 0:
        return rows

    def replay(p):
        return p * ppm // PPM

    p = rows * PPM // (PPM - ppm)
    while p - replay(p) > rows:
        p -= 1
    while p - replay(p) < rows:
        p += 1
    while p > 0 and (p - 1) - replay(p - 1) == rows:
        p -= 1
    return p


def row_layout(seg_lens, seq_len):
    """Position and segment ids of one row: positions restart per segment; padding is a last segment."""
    pos, seg = [], []
    filled = 0
    for k, n in enumerate(seg_lens):
        take = min(n, seq_len - filled)
        pos.extend(range(take))
        seg.extend([k] * take)
        filled += take
    pad = seq_len - filled
    pos.extend(range(pad))
    seg.extend([len(seg_lens)] * pad)
    return pos, seg


class _Stage:
    def __init__(self):
        self.blocks = []  # (file index, row group, rows)
        self.starts = []
        self.rows = 0

    def locate(self, i):
        lo, hi = 0, len(self.starts)
        while lo < hi:  # last start <= i
            mid = (lo + hi) // 2
            if self.starts[mid] <= i:
                lo = mid + 1
            else:
                hi = mid
        b = lo - 1
        return b, i - self.starts[b]


class ShardLoader:
    """Batches from token/SFT shard directories in the Rust loader's order (see the module doc).

    stages: list of stages; each a directory or a list of directories read together.
    """

    def __init__(self, stages, batch_size=8, seed=0, epochs=1, rank=0, world_size=1, replay=0.0, drop_last=False, state=None, torch=False):
        stages = [[s] if isinstance(s, (str, os.PathLike)) else list(s) for s in stages]
        if not stages or any(not s for s in stages):
            raise ValueError("loader: no token shard directories given (stages is empty or has an empty stage)")
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"loader: batch_size {batch_size} and world_size {world_size} must be positive and rank {rank} below world_size")
        if not 0.0 <= replay < 1.0:
            raise ValueError(f"loader: replay {replay} must be in [0, 1)")
        self.stage_dirs = [[os.fspath(d) for d in s] for s in stages]
        self.batch_size, self.seed, self.epochs = batch_size, seed, epochs
        self.rank, self.world_size, self.replay, self.drop_last = rank, world_size, replay, drop_last
        self.torch = torch
        self.files = []  # paths
        self.identity = []
        self.stages = []
        seq_len = None
        for dirs in self.stage_dirs:
            st = _Stage()
            for d in dirs:
                with open(os.path.join(d, MANIFEST_FILE), encoding="utf-8") as f:
                    m = json.load(f)
                if m.get("kind") not in ("tokens", "sft"):
                    raise ValueError(f"{d}: manifest kind {m.get('kind')!r} is not a token shard set")
                sl = m.get("info", {}).get("seq_len")
                if sl is not None:
                    if seq_len is None:
                        seq_len = (sl, d)
                    elif seq_len[0] != sl:
                        raise ValueError(f"{d}: seq_len {sl} differs from {seq_len[0]} in {seq_len[1]}")
                for sh in m["shards"]:
                    self.identity.append([sh["file"], sh["rows"], sh["sha256"]])
                    path = os.path.join(d, sh["file"])
                    meta = pq.ParquetFile(path).metadata
                    total = sum(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
                    if total != sh["rows"]:
                        raise ValueError(f"{path}: {total} rows, the manifest says {sh['rows']}")
                    for g in range(meta.num_row_groups):
                        n = meta.row_group(g).num_rows
                        if n > 0:
                            st.blocks.append((len(self.files), g, n))
                    self.files.append(path)
            for (_, _, n) in st.blocks:
                st.starts.append(st.rows)
                st.rows += n
            self.stages.append(st)
        self._cache = OrderedDict()
        self._plan = None
        if seq_len is not None:
            self.seq_len = seq_len[0]
        else:
            first = next((k for k, s in enumerate(self.stages) if s.blocks), None)
            if first is None:
                raise ValueError(f"loader: no rows and no seq_len in the manifests of {self.stage_dirs}")
            self.seq_len = len(self._block(first, 0)["input_ids"][0])
        self.fingerprint = self._fingerprint()
        self.cursor = {"stage": 0, "epoch": 0, "step": 0}
        if state is not None:
            self.load_state_dict(state)

    # -- order ---------------------------------------------------------------------------------

    def _fingerprint(self):
        replay_ppm = int(math.floor(self.replay * PPM + 0.5))
        key = [self.identity, [len(s) for s in self.stage_dirs], self.batch_size, self.seed, self.epochs, self.world_size, replay_ppm, self.drop_last]
        text = json.dumps(key, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _plan_for(self, stage, epoch):
        p = self._plan
        if p is None or p["stage"] != stage or p["epoch"] != epoch:
            idx = self.stages[stage]
            perm = Permutation(len(idx.blocks), hash_words(self.seed, [1, stage, epoch]))
            order = [perm.apply(i) for i in range(len(idx.blocks))]
            starts, at = [], 0
            for b in order:
                starts.append(at)
                at += idx.blocks[b][2]
            pool = sum(s.rows for s in self.stages[:stage])
            ppm = int(math.floor(self.replay * PPM + 0.5)) if stage > 0 and pool > 0 else 0
            p = {"stage": stage, "epoch": epoch, "order": order, "starts": starts, "len": positions_for(idx.rows, ppm), "ppm": ppm, "pool": pool}
            self._plan = p
        return p

    def _steps(self, stage, epoch):
        per_step = self.world_size * self.batch_size
        n = self._plan_for(stage, epoch)["len"]
        return n // per_step if self.drop_last else -(-n // per_step)

    def _settle(self):
        c = self.cursor
        while True:
            if c["stage"] >= len(self.stages):
                return False
            if c["epoch"] >= self.epochs:
                c.update(stage=c["stage"] + 1, epoch=0, step=0)
                continue
            if c["step"] >= self._steps(c["stage"], c["epoch"]):
                c.update(epoch=c["epoch"] + 1, step=0)
                continue
            return True

    def _row_at(self, p):
        plan = self._plan
        ppm = plan["ppm"]
        if ppm > 0 and (p + 1) * ppm // PPM > p * ppm // PPM:
            j = p * ppm // PPM
            r = Permutation(plan["pool"], hash_words(self.seed, [2, plan["stage"], plan["epoch"]])).apply(j % plan["pool"])
            for s, idx in enumerate(self.stages):
                if r < idx.rows:
                    return s, r
                r -= idx.rows
            raise AssertionError("replay row within the pool")
        q = p - p * ppm // PPM
        starts = plan["starts"]
        lo, hi = 0, len(starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if starts[mid] <= q:
                lo = mid + 1
            else:
                hi = mid
        j = lo - 1
        b = plan["order"][j]
        idx = self.stages[plan["stage"]]
        o = Permutation(idx.blocks[b][2], hash_words(self.seed, [3, plan["stage"], plan["epoch"], b])).apply(q - starts[j])
        return plan["stage"], idx.starts[b] + o

    def _block(self, stage, b):
        fi, g, rows = self.stages[stage].blocks[b]
        key = (fi, g)
        if key in self._cache:
            self._cache.move_to_end(key, last=False)
            return self._cache[key]
        table = pq.ParquetFile(self.files[fi]).read_row_group(g)
        names = table.column_names
        for col in ("input_ids", "seg_lens"):
            if col not in names:
                raise ValueError(f"{self.files[fi]}: not a token shard: column {col!r} missing")
        blk = {c: table.column(c).to_pylist() for c in ("input_ids", "seg_lens", "loss_mask", "stage") if c in names}
        if len(blk["input_ids"]) != rows:
            raise ValueError(f"{self.files[fi]}: row group {g} decoded to {len(blk['input_ids'])} rows, expected {rows}")
        self._cache[key] = blk
        self._cache.move_to_end(key, last=False)
        while len(self._cache) > BLOCK_CACHE:
            self._cache.popitem(last=True)
        return blk

    # -- batches -------------------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self):
        b = self.next_batch()
        if b is None:
            raise StopIteration
        return b

    def next_batch(self):
        """The next batch of this rank, or None after the last stage's last epoch."""
        if not self._settle():
            return None
        c = self.cursor
        n = self._plan_for(c["stage"], c["epoch"])["len"]
        w, bs, r = self.world_size, self.batch_size, self.rank
        base = c["step"] * w * bs
        if base + w * bs <= n:
            start, count = base + r * bs, bs
        else:
            q, extra = divmod(n - base, w)
            start, count = base + r * q + min(r, extra), q + (1 if r < extra else 0)
        S = self.seq_len
        out = {"input_ids": [], "position_ids": [], "segment_ids": [], "loss_mask": [], "labels": []}
        stages = []
        have_stage = None
        cu, flat = [0], 0
        for p in range(start, start + count):
            s, row = self._row_at(p)
            b, off = self.stages[s].locate(row)
            blk = self._block(s, b)
            path = self.files[self.stages[s].blocks[b][0]]
            ids, segs = blk["input_ids"][off], blk["seg_lens"][off]
            if len(ids) != S:
                raise ValueError(f"{path}: row {off}: {len(ids)} input_ids (expected seq_len {S})")
            if sum(segs) > S:
                raise ValueError(f"{path}: row {off}: seg_lens sum to {sum(segs)} > seq_len {S}")
            pos, seg = row_layout(segs, S)
            if "loss_mask" in blk:
                mask = blk["loss_mask"][off]
                if len(mask) != S:
                    raise ValueError(f"{path}: row {off}: {len(mask)} loss_mask entries (expected {S})")
            else:
                real = sum(segs)
                mask = [1] * real + [0] * (S - real)
            labels = [ids[t] if mask[t] == 1 and t > 0 and seg[t] == seg[t - 1] else -100 for t in range(S)]
            for t in range(1, S):
                if seg[t] != seg[t - 1]:
                    cu.append(flat + t)
            flat += S
            cu.append(flat)
            out["input_ids"].append(list(ids))
            out["position_ids"].append(pos)
            out["segment_ids"].append(seg)
            out["loss_mask"].append(list(mask))
            out["labels"].append(labels)
            st = blk.get("stage")
            if have_stage is None:
                have_stage = st is not None
            if st is not None:
                stages.append(st[off])
        if count == 0:
            cu = [0, 0]
        out["cu_seqlens"] = cu
        out["stage"] = stages if have_stage and len(stages) == count else None
        c["step"] += 1
        return self._to_torch(out) if self.torch else out

    def _to_torch(self, out):
        import torch

        t = {k: torch.tensor(v, dtype=torch.long).reshape(-1, self.seq_len) for k, v in out.items() if k not in ("cu_seqlens", "stage")}
        t["cu_seqlens"] = torch.tensor(out["cu_seqlens"], dtype=torch.int32)
        t["stage"] = None if out["stage"] is None else torch.tensor(out["stage"], dtype=torch.long)
        return t

    # -- cursor --------------------------------------------------------------------------------

    def state_dict(self):
        """The cursor of the next batch, as the Rust loader writes it (JSON-able)."""
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint, "cursor": dict(self.cursor)}

    def load_state_dict(self, state):
        """Continues from a cursor of this data and these settings (any rank's: they are equal)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} (this reader reads {STATE_VERSION})")
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("loader state was saved for other data or settings (shards, batch_size, seed, epochs, world_size, replay or drop_last differ)")
        c = state["cursor"]
        self.cursor = {"stage": int(c["stage"]), "epoch": int(c["epoch"]), "step": int(c["step"])}

    def stage_batches(self):
        """Batches one epoch of each stage yields on this rank."""
        return [self._steps(s, 0) for s in range(len(self.stages))]

    def total_batches(self):
        """Batches this rank yields over all stages and epochs, from the start."""
        return sum(self.stage_batches()) * self.epochs
