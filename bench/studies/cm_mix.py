"""How much could adaptive context models mixed with the default model save?
(issue 16: a first measurement before the C++ mixing stage)

    python -m bench.studies.cm_mix [--limit 262144] [--files alice29,linux-doc] [--lr 0.002]

Runs a real ``Compressor.compress`` with the default (exact) model and records,
for every coded byte, the distribution the coder used (the model's integer
weights through the match model's override and the integer quantizer, as
``core.quantize_int`` gives it) and the byte.  Then, per chunk, it mixes that
distribution with adaptive order-k byte models (k = 1, 2, 3, 4, 6; counts of
the chunk's own bytes so far, hashed contexts, additive prior 0.4 per
symbol) by *geometric* mixing, ``p ~ prod_i p_i^w_i``, the weights learned
online by gradient descent on the coded byte's code length (``w_i += lr *
(log p_i(s) - E_p[log p_i])``), starting from the model alone (``w = 1`` for
the model, 0 for the others).  It reports the ideal code length of:

* ``today``: the codec's own distributions (the baseline; its archive's
  payload is within 0.1% of it);
* ``+orders``: mixed with the order-k models, chunks independent (the
  codec's random access), weights restarting at every chunk;
* ``+orders, waves``: a "long" mode as the codec could run it: the chunks
  of a wave (``--wave``, the codec's batch) are coded side by side, each
  from the counts of every earlier wave's chunks plus its own, and the
  weights the previous wave ended with (their mean);
* ``+orders long``: the counts and weights kept across the file's chunks in
  order, one after the other (an upper bound for any long mode).

Floats are fine here: this measures what is worth building, it codes
nothing.  Measured 2026-12-04 on this machine (``--limit 1048576``, ~5 min):
linux-doc's first MiB 1.5894 today -> 1.5467 with the order-k models ->
1.5098 sequential; alice29 2.3184 -> 2.2199 -> 2.0300 (docs/MODEL.md,
"Context mixing: what adaptive models could add").  Inputs of one wave (up
to ~2 MiB at batch 32, the codec grows chunks to fill it) give the wave
mode the independent result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

ORDERS = (1, 2, 3, 4, 6)


class _Recorder:
    """A ``BatchEncoder`` stand-in that keeps every row's coded distributions."""

    def __init__(self, enc: Any, batch: int, core: Any, sink: list[list[tuple[np.ndarray, int]]]) -> None:
        self._enc, self._core = enc, core
        self.rows: list[list[tuple[np.ndarray, int]]] = [[] for _ in range(batch)]
        sink.append(self.rows)  # type: ignore[arg-type]

    def encode_weights(self, w: Any, symbols: Any, rows: Any = None, match: Any = None, q: Any = None) -> None:
        cdf = self._core.quantize_int(np.ascontiguousarray(w), 30, match=match, q=q)
        p = np.diff(cdf.astype(np.int64), axis=1) / float(1 << 30)
        idx = range(len(symbols)) if rows is None else [int(r) for r in rows]
        for k, r in enumerate(idx):
            self.rows[r].append((p[k].astype(np.float32), int(symbols[k])))
        self._enc.encode_weights(w, symbols, rows=rows, match=match, q=q)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._enc, name)


def coded_rows(data: bytes) -> list[list[tuple[np.ndarray, int]]]:
    """Every model-coded chunk's (distribution, byte) sequence, in file order
    (the core's BatchEncoder is swapped for a recorder during one compress)."""
    import pyllmcodec
    from pyllmcodec import core

    waves: list[Any] = []
    real = core.BatchEncoder
    core.BatchEncoder = lambda batch, **kw: _Recorder(real(batch, **kw), batch, core, waves)  # type: ignore[misc]
    try:
        pyllmcodec.compress(data)
    finally:
        core.BatchEncoder = real  # type: ignore[misc]
    return [r for wave in waves for r in wave if r]


class OrderModels:
    """Hashed order-k byte counts (k in ORDERS) of the bytes seen so far."""

    def __init__(self, base: OrderModels | None = None) -> None:
        self.tables: list[dict[bytes, np.ndarray]] = [{} for _ in ORDERS]
        self.hist = bytearray()
        #: frozen counts of earlier waves, added to this chunk's own (wave mode)
        self.base = base

    def predict(self) -> np.ndarray:
        """[len(ORDERS), 256] distributions (prior 0.4 per symbol)."""
        out = np.empty((len(ORDERS), 256), dtype=np.float64)
        for i, k in enumerate(ORDERS):
            cnt = np.zeros(256)
            if len(self.hist) >= k:
                key = bytes(self.hist[-k:])
                for t in (self.tables[i], None if self.base is None else self.base.tables[i]):
                    c = None if t is None else t.get(key)
                    if c is not None:
                        cnt = cnt + c
            out[i] = (cnt + 0.4) / (cnt.sum() + 0.4 * 256)
        return out

    def absorb(self, other: OrderModels) -> None:
        """Add ``other``'s counts to these (a finished wave's chunk)."""
        for mine, theirs in zip(self.tables, other.tables):
            for key, c in theirs.items():
                m = mine.get(key)
                mine[key] = c.copy() if m is None else m + c

    def update(self, s: int) -> None:
        for i, k in enumerate(ORDERS):
            if len(self.hist) >= k:
                key = bytes(self.hist[-k:])
                c = self.tables[i].get(key)
                if c is None:
                    c = self.tables[i][key] = np.zeros(256)
                c[s] += 1
        self.hist.append(s)


def _code(ch: list[tuple[np.ndarray, int]], w: np.ndarray, om: OrderModels, lr: float) -> float:
    bits = 0.0
    for p, s in ch:
        logs = np.log(np.vstack([np.maximum(p.astype(np.float64), 1e-12), om.predict()]))
        z = w @ logs
        z -= z.max()
        q = np.exp(z)
        q /= q.sum()
        bits -= np.log2(q[s])
        w += lr * (logs[:, s] - logs @ q)
        om.update(s)
    return bits


def wave_bits(chunks: list[list[tuple[np.ndarray, int]]], lr: float, wave: int) -> float:
    """Long mode by waves: every chunk of a wave starts from the counts of all
    earlier waves' chunks (and the weights the previous wave ended with)."""
    n = 1 + len(ORDERS)
    w_start = np.zeros(n)
    w_start[0] = 1.0
    seen = OrderModels()
    bits = 0.0
    for i in range(0, len(chunks), wave):
        done, ws = [], []
        for ch in chunks[i : i + wave]:
            om, w = OrderModels(base=seen), w_start.copy()
            bits += _code(ch, w, om, lr)
            done.append(om)
            ws.append(w)
        for om in done:
            seen.absorb(om)
        w_start = np.mean(ws, axis=0)
    return bits


def mixed_bits(chunks: list[list[tuple[np.ndarray, int]]], lr: float, long: bool) -> float:
    """Chunks independent (weights and counts restart), or ``long``: kept
    across the file's chunks in order."""
    w0 = np.zeros(1 + len(ORDERS))
    w0[0] = 1.0
    w, om = w0.copy(), OrderModels()
    bits = 0.0
    for ch in chunks:
        if not long:
            w, om = w0.copy(), OrderModels()
        bits += _code(ch, w, om, lr)
    return bits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.cm_mix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=262144, help="the first N bytes of each file")
    ap.add_argument("--files", default="alice29,linux-doc")
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--wave", type=int, default=32, help="chunks per wave (the codec's batch)")
    a = ap.parse_args(argv)
    corpora = Path.home() / ".cache/pyllmcodec/corpora"
    paths = {"alice29": corpora / "canterbury/alice29.txt", "linux-doc": corpora / "linux-doc/linux-doc-6.1-10MiB.txt"}
    ap_wave = a.wave
    print(f"| file | bytes | today | +orders | +orders, waves of {ap_wave} chunks | +orders long |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name in a.files.split(","):
        data = paths.get(name, Path(name)).read_bytes()[: a.limit]
        t0 = time.perf_counter()
        chunks = coded_rows(data)
        n = sum(len(c) for c in chunks)
        today = -sum(float(np.log2(p[s])) for c in chunks for p, s in c)
        ind = mixed_bits(chunks, a.lr, long=False)
        lng = mixed_bits(chunks, a.lr, long=True)
        wav = wave_bits(chunks, a.lr, a.wave)
        print(f"| {name} | {n} | {today / n:.4f} | {ind / n:.4f} | {wav / n:.4f} | {lng / n:.4f} |"
              f"  <!-- lr {a.lr}, {time.perf_counter() - t0:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
