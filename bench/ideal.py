"""Ideal code lengths (the evaluator of bench/ and training/): data under a
byte-level bundle (:func:`ideal_bits`), token sequences under a Llama net
(:func:`llama_ideal_bits`).

:func:`ideal_bits` is fast.

Uses the bundle's teacher-forced ``forward`` graph on the codec's chunking
(each chunk scored from BOS on).  It agrees with the step graph the codec runs
to ~1e-8 in probability -- far below a printed digit of bits/byte -- and runs
several times faster, so benchmarks and the evaluation script use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ideal_bits", "llama_ideal_bits"]


def ideal_bits(bundle: Any, data: bytes, chunk_size: int, *, threads: int | None = None,
               batch: int = 8, eol: bool = False, prime: int = 0, mixer: Any = None,
               observe: list[Any] | None = None, context: int | None = None) -> float:
    """Sum of -log2 p(byte) over ``data`` cut into ``chunk_size`` chunks.

    ``eol``: score each chunk as the codec's encoder codes it by default, with
    CR (or space CR) removed before every LF where every line has it
    (:mod:`pyllmcodec.eol`).  A chunk longer than the context is scored in
    the codec's segments (:func:`pyllmcodec.scheduler.segment_plan`), each
    after its ``prime`` symbols of context; ``context``: the segments' length
    (default: the model's context).  ``mixer`` (a
    :class:`~pyllmcodec.mixer.MixerSpec`): score the probabilities after the
    match model, as the codec codes them; ``observe`` (a list) then receives
    one ``(cells, hits)`` pair of arrays per group of chunks, the data
    :func:`pyllmcodec.mixer.fit_prior` fits a prior from."""
    import onnxruntime as ort

    from pyllmcodec import eol as _eol

    bos = int(bundle.manifest["vocab"]["bos"])
    ctx = int(context or bundle.manifest["context_length"])
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(bundle.graph_path("forward")), so, providers=["CPUExecutionProvider"])
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    if eol:
        chunks = [_eol.encoded(c)[1] for c in chunks]
    if mixer is not None:
        return _mixed_bits(sess, bos, ctx, chunks, chunk_size, prime, batch, mixer, observe)
    from pyllmcodec.scheduler import segment_windows

    # (window, first scored position): a chunk's segments, each scored from BOS
    windows = [w for c in chunks for w in segment_windows(c, ctx, prime)]
    total = 0.0
    for i in range(0, len(windows), batch):
        group = windows[i : i + batch]
        lg, ys = _forward(sess, bos, [c for c, _ in group])
        lg = lg.astype(np.float64)
        live = np.zeros(ys.shape, dtype=bool)
        for r, (c, k) in enumerate(group):
            live[r, k : len(c)] = True  # the prime is context, not scored
        m = lg.max(-1, keepdims=True)
        lse = np.log(np.exp(lg - m).sum(-1)) + m[..., 0]
        picked = np.take_along_axis(lg, ys[..., None], -1)[..., 0]
        total += float((lse - picked)[live].sum())
    return total / math.log(2)


def _forward(sess: Any, bos: int, windows: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The teacher-forced graph's logits ``[n, T, 256]`` for ``windows``, each
    fed ``bos`` then its bytes but the last, and the bytes ``[n, T]``.  Rows
    shorter than the longest are padded at the end: a causal model's outputs
    at earlier positions do not see the padding (callers mask it)."""
    ys = np.zeros((len(windows), max(len(w) for w in windows)), dtype=np.int64)
    for r, w in enumerate(windows):
        ys[r, : len(w)] = np.frombuffer(w, np.uint8)
    xs = np.concatenate([np.full((len(ys), 1), bos), ys[:, :-1]], 1)
    return sess.run(None, {"tokens": xs})[0], ys


def chunk_probs(sess: Any, bos: int, ctx: int, chunk: bytes, prime: int, batch: int = 8) -> np.ndarray:
    """float32 ``[len(chunk), 256]``: the model's distribution for each byte
    of ``chunk``, from its segments as the codec steps them (softmax of the
    teacher-forced graph's logits)."""
    from pyllmcodec.scheduler import segment_plan, segment_windows

    plan = segment_plan(len(chunk), ctx, prime)
    windows = segment_windows(chunk, ctx, prime)
    out = np.empty((len(chunk), 256), dtype=np.float32)
    for i in range(0, len(plan), batch):
        group = plan[i : i + batch]
        wins = [w for w, _ in windows[i : i + batch]]
        lg, _ = _forward(sess, bos, wins)
        lg = lg - lg.max(-1, keepdims=True)
        p = np.exp(lg)
        p /= p.sum(-1, keepdims=True)
        for r, ((s, k), w) in enumerate(zip(group, wins)):
            out[s : s - k + len(w)] = p[r, k : len(w)]
    return out


def _mixed_bits(sess: Any, bos: int, ctx: int, chunks: list[bytes], chunk_size: int, prime: int, batch: int,
                mixer: Any, observe: list[Any] | None, group: int = 32) -> float:
    """:func:`ideal_bits` through the match model: ``group`` chunks at a
    time, stepped position by position like the codec's rows."""
    total = 0.0
    for g in range(0, len(chunks), group):
        cs = [c for c in chunks[g : g + group] if len(c)]
        if not cs:
            continue
        probs = [chunk_probs(sess, bos, ctx, c, prime, batch) for c in cs]
        lens = np.array([len(c) for c in cs])
        syms = np.zeros((len(cs), lens.max()), dtype=np.int64)
        for r, c in enumerate(cs):
            syms[r, : len(c)] = np.frombuffer(c, np.uint8)
        mx = mixer.new(len(cs), int(lens.max()), chunk_size)
        cells, hits = [], []
        for t in range(int(lens.max())):
            act = np.nonzero(lens > t)[0]
            p = np.stack([probs[r][t] for r in act])
            mx.mix(p, rows=act)
            y = syms[act, t]
            total -= float(np.log2(p[np.arange(len(act)), y].astype(np.float64)
                                   / p.sum(-1, dtype=np.float64)).sum())
            if observe is not None:
                cell, pred = mx.last_cells()
                cells.append(cell[act])
                hits.append(pred[act] == y)
            mx.push(y, rows=act)
        if observe is not None:
            observe.append((np.concatenate(cells), np.concatenate(hits)))
    return total


def llama_ideal_bits(model: Any, tokens: np.ndarray, bos: int, window: int = 1024) -> float:
    """Ideal code length in bits of ``tokens`` coded in windows of ``window``
    tokens, each predicted from ``bos`` + the window's previous tokens (the
    codec's chunking), teacher-forced through the PyTorch
    :class:`pyllmcodec.nets.llama.Llama` ``model``."""
    import torch

    total = 0.0
    for s in range(0, len(tokens), window):
        seq = np.asarray(tokens[s : s + window], dtype=np.int64)
        inp = torch.from_numpy(np.concatenate([[bos], seq[:-1]]))[None]
        logp = torch.log_softmax(model(inp)[0].double(), -1)
        total -= float(logp[torch.arange(len(seq)), torch.from_numpy(seq)].sum()) / np.log(2)
    return total
