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
               batch: int = 8, eol: bool = False, prime: int = 0) -> float:
    """Sum of -log2 p(byte) over ``data`` cut into ``chunk_size`` chunks.

    ``eol``: score each chunk as the codec's encoder codes it by default, with
    CR (or space CR) removed before every LF where every line has it
    (:mod:`pyllmcodec.eol`).  A chunk longer than the context is scored in
    the codec's segments (:func:`pyllmcodec.scheduler.segment_plan`), each
    after its ``prime`` symbols of context."""
    import onnxruntime as ort

    from .. import eol as _eol
    from ..scheduler import segment_windows

    bos = int(bundle.manifest["vocab"]["bos"])
    ctx = int(bundle.manifest["context_length"])
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(bundle.graph_path("forward")), so, providers=["CPUExecutionProvider"])
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    if eol:
        chunks = [_eol.encoded(c)[1] for c in chunks]
    # (window, first scored position): a chunk's segments, each scored from BOS
    windows = [w for c in chunks for w in segment_windows(c, ctx, prime)]
    total = 0.0
    for i in range(0, len(windows), batch):
        group = windows[i : i + batch]
        n = max(len(c) for c, _ in group)
        # rows shorter than the longest are padded at the end and masked: a
        # causal model's outputs at earlier positions do not see the padding
        ys = np.zeros((len(group), n), dtype=np.int64)
        live = np.zeros((len(group), n), dtype=bool)
        for r, (c, k) in enumerate(group):
            ys[r, : len(c)] = np.frombuffer(c, np.uint8)
            live[r, k : len(c)] = True  # the prime is context, not scored
        xs = np.concatenate([np.full((len(ys), 1), bos), ys[:, :-1]], 1)
        lg = sess.run(None, {"tokens": xs})[0].astype(np.float64)
        m = lg.max(-1, keepdims=True)
        lse = np.log(np.exp(lg - m).sum(-1)) + m[..., 0]
        picked = np.take_along_axis(lg, ys[..., None], -1)[..., 0]
        total += float((lse - picked)[live].sum())
    return total / math.log(2)
