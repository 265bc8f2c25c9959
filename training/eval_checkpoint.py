"""Ideal bits/byte of a training checkpoint (not yet a bundle) on a file.

    python training/eval_checkpoint.py RUN/final.pt FILE [--limit N] [--geometry 1024:0 8192:128 ...]

Each geometry ``CHUNK:PRIME`` cuts the file into chunks of CHUNK bytes and
scores them as the codec codes them: one context (1024) at a time from BOS,
and a chunk longer than that in segments that each start from PRIME bytes of
context (docs/FORMAT.md section 4b; ``pyllmcodec.scheduler.segment_plan``).
Teacher-forced PyTorch forward, 1 thread; no line-ending transform (so CR LF
text scores worse than the codec codes it).  Used to compare checkpoints
before shipping one (docs/MODEL.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pyllmcodec.nets.bytelm import BOS, ByteLM, ByteLMConfig
from pyllmcodec.scheduler import segment_windows


def score(model: ByteLM, data: np.ndarray, chunk: int, prime: int, batch: int = 32) -> tuple[float, float]:
    """(bits/byte, model steps/byte) of ``data`` under one geometry."""
    ctx = model.c.ctx
    windows = [w for c0 in range(0, len(data), chunk) for w in segment_windows(data[c0 : c0 + chunk], ctx, prime)]
    bits = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            grp = windows[i : i + batch]
            n = max(len(w) for w, _ in grp)
            y = torch.zeros(len(grp), n, dtype=torch.long)
            live = torch.zeros(len(grp), n)
            for j, (w, k) in enumerate(grp):
                y[j, : len(w)] = torch.from_numpy(w.astype(np.int64))
                live[j, k : len(w)] = 1
            x = torch.cat([torch.full((len(grp), 1), BOS), y[:, :-1]], 1)
            nll = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1), reduction="none").reshape(len(grp), n)
            bits += float((nll * live).sum()) / math.log(2)
    return bits / len(data), sum(len(w) for w, _ in windows) / len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("file", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="score only the first N bytes")
    ap.add_argument("--geometry", nargs="+", default=["1024:0", "8192:128"], metavar="CHUNK:PRIME")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ck = torch.load(a.checkpoint, weights_only=False, map_location="cpu")
    model = ByteLM(ByteLMConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    data = np.fromfile(a.file, dtype=np.uint8)
    if a.limit:
        data = data[: a.limit]
    for g in a.geometry:
        chunk, prime = (int(v) for v in g.split(":"))
        t0 = time.time()
        bpb, spb = score(model, data, chunk, prime)
        print(f"{a.file.name} chunk {chunk} prime {prime}: {bpb:.4f} bits/byte, {spb:.3f} steps/byte "
              f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
