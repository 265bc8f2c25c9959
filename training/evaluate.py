"""Bits/byte of a model on files, chunked exactly as the codec chunks.

    python training/evaluate.py FILE [FILE ...] [--bundle DIR | --model default] [--chunk-size 1024]

Each file is cut into chunks of ``--chunk-size`` bytes (the last one shorter);
each chunk is scored from BOS on, as the codec codes it.  The ideal code
length is the sum of -log2 p(byte) from the model's float probabilities; the
teacher-forced ONNX graph is used for speed (it agrees with the step graph the
codec runs to ~1e-6 in probability, far below what changes a printed digit).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np


def bits_per_byte(data: bytes, forward_graph: Path, chunk_size: int, bos: int = 256,
                  threads: int | None = None, batch: int = 8) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(forward_graph), so, providers=["CPUExecutionProvider"])
    arr = np.frombuffer(data, np.uint8)
    total = 0.0
    starts = list(range(0, len(arr), chunk_size))
    full = [s for s in starts if s + chunk_size <= len(arr)]
    tail = [s for s in starts if s + chunk_size > len(arr)]
    for group, n in ((full, chunk_size), *(([s], len(arr) - s) for s in tail)):
        for i in range(0, len(group), batch):
            ys = np.stack([arr[s:s + n] for s in group[i:i + batch]]).astype(np.int64)
            xs = np.concatenate([np.full((len(ys), 1), bos), ys[:, :-1]], 1)
            lg = sess.run(None, {"tokens": xs})[0].astype(np.float64)
            lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
            picked = np.take_along_axis(lg, ys[..., None], -1)[..., 0]
            total += float((lse - picked).sum())
    return total / math.log(2) / max(1, len(arr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=0, help="score only the first N bytes of each file")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    from pyllmcodec.models.bundle import load_bundle, shipped_bundle_dirs

    if a.bundle:
        b = load_bundle(a.bundle)
    else:
        import json

        dirs = [d for d in shipped_bundle_dirs()
                if json.loads((d / "manifest.json").read_text())["name"] == a.model]
        if not dirs:
            sys.exit(f"no shipped bundle named {a.model!r}")
        b = load_bundle(dirs[0])
    tot_bits = tot_bytes = 0.0
    for f in a.files:
        data = f.read_bytes()
        if a.limit:
            data = data[: a.limit]
        t0 = time.time()
        bpb = bits_per_byte(data, b.graph_path("forward"), a.chunk_size, threads=a.threads)
        tot_bits += bpb * len(data)
        tot_bytes += len(data)
        print(f"{f.name:30s} {len(data):10d} B  {bpb:.4f} bits/byte  ({time.time() - t0:.1f} s)")
    if len(a.files) > 1:
        print(f"{'total':30s} {int(tot_bytes):10d} B  {tot_bits / tot_bytes:.4f} bits/byte")


if __name__ == "__main__":
    main()
