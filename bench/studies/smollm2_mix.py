"""What token-level mixing would add to the SmolLM2 tier (issue 16's token-level bullet).

    python -m bench.studies.smollm2_mix [--files alice29,linux-doc-1MiB] [--limit N] [--alpha 1,2,4,8]

Runs a real ``compress`` with the exact SmolLM2 tier (``smollm2-135m-exact``,
the codec's own geometry: chunks, rows, waves) and records, for every coded
token, its id and the probability the model's integer table gave it
(``w[s] / sum(w)``, a zero weight counted as half a count, as
``bench.smollm2_eval`` does), cached under ``$TMPDIR/pyllmcodec-tokmix``.
Then it replays the tokens through adaptive token-level models that learn
from the archive's own tokens, as a decoder could (each prediction uses only
tokens coded before it, in the codec's order: step t codes every row's token
t, rows in order), and sums the ideal code length:

* ``cache``: an n-gram cache over the model (a hierarchical Dirichlet /
  PPM-style blend): ``p_k(x) = (c_k(ctx_k, x) + a * p_{k-1}(x)) / (c_k(ctx_k)
  + a)`` for orders k = 1, 2 (the previous one and two tokens), with ``p_0``
  the model's; counts shared by the rows of a wave (``a`` = 0: no cache).  Only the model's
  probability of the coded token is needed, so the replay is exact.
* ``match``: an LZP-style match over the wave's tokens (the last 4 tokens
  hashed to the place after their last occurrence): the predicted token gets
  ``p = (1 - l) p_cache(x) + l [x = pred]``, with ``l`` the hit rate seen so far
  for the match's length (counts with a prior of 1 hit in 4).
* ``carried``: the same with the counts carried from wave to wave (as the
  byte stage's long mode).

The model's column is the tier as it codes today (its ideal, before the
coder's overhead of ~0.01%).  A study: nothing here is a codec path.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FILES = {
    "alice29": ("canterbury/alice29.txt", 0),
    "asyoulik": ("canterbury/asyoulik.txt", 0),
    "linux-doc-1MiB": ("linux-doc/linux-doc-6.1-10MiB.txt", 1 << 20),
}


class _Recorder:
    """A ``BatchEncoder`` stand-in that keeps every row's (token, p) in step order."""

    def __init__(self, enc: Any, batch: int, sink: list[Any]) -> None:
        self._enc = enc
        self.steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, tokens, p)
        sink.append(self.steps)

    def encode_weights(self, weights: Any, symbols: Any, rows: Any = None, **kw: Any) -> None:
        w = np.maximum(np.asarray(weights, dtype=np.float64), 0.5)
        s = np.asarray(symbols, dtype=np.int64)
        p = w[np.arange(len(s)), s] / w.sum(axis=1)
        r = np.arange(len(s)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.steps.append((r.copy(), s.copy(), p))
        self._enc.encode_weights(weights, symbols, rows=rows, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._enc, name)


def record(data: bytes) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per wave, per step: (rows, tokens, p) of the exact SmolLM2 tier's compress of ``data``."""
    import pyllmcodec
    from pyllmcodec import scheduler
    from pyllmcodec.models import smollm2

    waves: list[Any] = []
    real = scheduler.core

    class _Core:
        def BatchEncoder(self, batch: int, **kw: Any) -> _Recorder:  # mirrors the core's name
            return _Recorder(real.BatchEncoder(batch, **kw), batch, waves)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    scheduler.core = _Core()  # type: ignore[assignment]
    try:
        pyllmcodec.compress(data, model=smollm2.EXACT_NAME, threads=2)
    finally:
        scheduler.core = real
    return waves


def cached(name: str, limit: int | None) -> list[Any]:
    path, lim = FILES.get(name, (name, 0))
    lim = lim if limit is None else limit
    d = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "pyllmcodec-tokmix"
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}-{lim}.npz"
    if f.exists():
        z = np.load(f)
        out: list[Any] = []
        for w in range(int(z["n_waves"])):
            r, s, p, st = z[f"r{w}"], z[f"s{w}"], z[f"p{w}"], z[f"o{w}"]
            out.append([(r[a:b], s[a:b], p[a:b]) for a, b in itertools.pairwise(st)])
        return out
    corpora = Path(os.environ.get("PYLLMCODEC_CORPUS_DIR", Path.home() / ".cache/pyllmcodec/corpora"))
    data = (corpora / path).read_bytes()
    data = data[:lim] if lim else data
    t0 = time.time()
    waves = record(data)
    print(f"recorded {name}: {len(data)} bytes, {sum(len(s) for w in waves for _, s, _ in w)} tokens "
          f"in {time.time() - t0:.0f} s", flush=True)
    arrs: dict[str, Any] = {"n_waves": len(waves), "n_bytes": len(data)}
    for w, steps in enumerate(waves):
        arrs[f"r{w}"] = np.concatenate([r for r, _, _ in steps]) if steps else np.zeros(0, np.int64)
        arrs[f"s{w}"] = np.concatenate([s for _, s, _ in steps]) if steps else np.zeros(0, np.int64)
        arrs[f"p{w}"] = np.concatenate([p for _, _, p in steps]) if steps else np.zeros(0)
        arrs[f"o{w}"] = np.cumsum([0] + [len(s) for _, s, _ in steps])
    np.savez(f, **arrs)
    return waves


def replay(waves: list[Any], alpha: float, *, match: bool, carried: bool) -> float:
    """Ideal bits of the recorded tokens through the cache (and match) models."""
    bits = 0.0
    c1: dict[tuple[int, int], int] = {}
    n1: dict[int, int] = {}
    c2: dict[tuple[int, int, int], int] = {}
    n2: dict[tuple[int, int], int] = {}
    seqs: dict[tuple[int, int], list[int]] = {}  # (wave, row) -> its tokens so far
    table: dict[tuple[int, ...], tuple[tuple[int, int], int]] = {}  # 4 tokens -> the place after them
    hits, tries = [1.0] * 33, [4.0] * 33
    for wi, steps in enumerate(waves):
        if not carried:
            c1, n1, c2, n2, seqs, table = {}, {}, {}, {}, {}, {}
            hits, tries = [1.0] * 33, [4.0] * 33
        ptr: dict[int, tuple[tuple[int, int], int]] = {}
        mlen: dict[int, int] = {}
        for rows, toks, ps in steps:
            for r, x, p0 in zip(rows.tolist(), toks.tolist(), ps.tolist()):
                h = seqs.setdefault((wi, r), [])
                a = h[-1] if h else -1
                b = h[-2] if len(h) > 1 else -1
                if alpha:
                    p1 = (c1.get((a, x), 0) + alpha * p0) / (n1.get(a, 0) + alpha)
                    p = (c2.get((b, a, x), 0) + alpha * p1) / (n2.get((b, a), 0) + alpha)
                else:  # no cache: the match over the model alone
                    p = p0
                pred, ln = -1, 0
                if match and mlen.get(r, 0) > 0:
                    sid, i = ptr[r]
                    if i < len(seqs[sid]):  # the predicted token is coded already
                        pred, ln = seqs[sid][i], min(mlen[r], 32)
                        lam = hits[ln] / tries[ln]
                        p = (1 - lam) * p + (lam if x == pred else 0.0)
                    else:
                        mlen[r] = 0
                bits -= math.log2(p)
                c1[(a, x)] = c1.get((a, x), 0) + 1
                n1[a] = n1.get(a, 0) + 1
                c2[(b, a, x)] = c2.get((b, a, x), 0) + 1
                n2[(b, a)] = n2.get((b, a), 0) + 1
                h.append(x)
                if not match:
                    continue
                if pred >= 0:
                    tries[ln] += 1
                    hits[ln] += x == pred
                    if x == pred:
                        ptr[r] = (ptr[r][0], ptr[r][1] + 1)
                        mlen[r] += 1
                    else:
                        mlen[r] = 0
                if len(h) >= 4:
                    key = tuple(h[-4:])
                    if mlen.get(r, 0) == 0 and key in table:
                        ptr[r], mlen[r] = table[key], 1
                    table[key] = ((wi, r), len(h))
    return bits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.smollm2_mix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="alice29,linux-doc-1MiB")
    ap.add_argument("--limit", type=int, default=None, help="the first N bytes of each file (default: the file's)")
    ap.add_argument("--alpha", default="0,16,64,256", help="the cache's concentrations (0: no cache, the match alone)")
    a = ap.parse_args(argv)
    print("| file | bytes | tokens | model | cache a | cache | + match | carried |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.files.split(","):
        waves = cached(name, a.limit)
        path, lim = FILES.get(name, (name, 0))
        n_bytes = lim if a.limit is None else a.limit
        if not n_bytes:
            corpora = Path(os.environ.get("PYLLMCODEC_CORPUS_DIR", Path.home() / ".cache/pyllmcodec/corpora"))
            n_bytes = (corpora / path).stat().st_size
        n_tok = sum(len(s) for w in waves for _, s, _ in w)
        model = -sum(float(np.log2(p).sum()) for w in waves for _, _, p in w)
        for al in (float(v) for v in a.alpha.split(",")):
            cache = replay(waves, al, match=False, carried=False)
            both = replay(waves, al, match=True, carried=False)
            carried = replay(waves, al, match=True, carried=True)
            print(f"| {name} | {n_bytes} | {n_tok} | {model / n_bytes:.4f} | {al:g} | {cache / n_bytes:.4f} | "
                  f"{both / n_bytes:.4f} | {carried / n_bytes:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
