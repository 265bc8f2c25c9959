"""The ideal code length of data under a byte-level bundle, fast.

Uses the bundle's teacher-forced ``forward`` graph on the codec's chunking
(each chunk scored from BOS on).  It agrees with the step graph the codec runs
to ~1e-8 in probability -- far below a printed digit of bits/byte -- and runs
several times faster, so benchmarks and the evaluation script use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ideal_bits"]


def ideal_bits(bundle: Any, data: bytes, chunk_size: int, *, threads: int | None = None,
               batch: int = 8) -> float:
    """Sum of -log2 p(byte) over ``data`` cut into ``chunk_size`` chunks."""
    import onnxruntime as ort

    bos = int(bundle.manifest["vocab"]["bos"])
    if chunk_size > int(bundle.manifest["context_length"]):
        raise ValueError("chunk_size exceeds the model's context")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(bundle.graph_path("forward")), so, providers=["CPUExecutionProvider"])
    arr = np.frombuffer(data, np.uint8)
    starts = list(range(0, len(arr), chunk_size))
    full = [s for s in starts if s + chunk_size <= len(arr)]
    tail = [s for s in starts if s + chunk_size > len(arr)]
    total = 0.0
    for group, n in ((full, chunk_size), *(([s], len(arr) - s) for s in tail)):
        for i in range(0, len(group), batch):
            ys = np.stack([arr[s:s + n] for s in group[i:i + batch]]).astype(np.int64)
            xs = np.concatenate([np.full((len(ys), 1), bos), ys[:, :-1]], 1)
            lg = sess.run(None, {"tokens": xs})[0].astype(np.float64)
            m = lg.max(-1, keepdims=True)
            lse = np.log(np.exp(lg - m).sum(-1)) + m[..., 0]
            picked = np.take_along_axis(lg, ys[..., None], -1)[..., 0]
            total += float((lse - picked).sum())
    return total / math.log(2)
