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
* ``gated`` (:func:`replay_gated`): the shipped wave match (FORMAT.md section
  4g) in floats -- the match's guess gets the share an adaptive map over the
  model's own probability of it has learned; that probability comes from the
  recorded top-8 (a guess outside them, on a miss only, is taken at half the
  8th probability: its share of the cost is ``-log2(1 - q)``, ~0).

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

TOPK = 8  # the likeliest tokens kept per step (the gated match needs the model's p of its guess)

FILES = {
    "alice29": ("canterbury/alice29.txt", 0),
    "asyoulik": ("canterbury/asyoulik.txt", 0),
    "linux-doc-1MiB": ("linux-doc/linux-doc-6.1-10MiB.txt", 1 << 20),
}


class _Recorder:
    """A ``BatchEncoder`` stand-in that keeps every row's (token, p) in step order."""

    def __init__(self, enc: Any, batch: int, sink: list[Any]) -> None:
        self._enc = enc
        # (rows, tokens, p, ids and p of each row's TOPK likeliest tokens)
        self.steps: list[tuple[np.ndarray, ...]] = []
        sink.append(self.steps)

    def encode_weights(self, weights: Any, symbols: Any, rows: Any = None, **kw: Any) -> None:
        w = np.maximum(np.asarray(weights, dtype=np.float64), 0.5)
        s = np.asarray(symbols, dtype=np.int64)
        p = w[np.arange(len(s)), s] / w.sum(axis=1)
        r = np.arange(len(s)) if rows is None else np.asarray(rows, dtype=np.int64)
        ids = np.argpartition(w, -TOPK, axis=1)[:, -TOPK:]
        pt = np.take_along_axis(w, ids, axis=1) / w.sum(axis=1, keepdims=True)
        order = np.argsort(-pt, axis=1, kind="stable")
        self.steps.append((r.copy(), s.copy(), p, np.take_along_axis(ids, order, axis=1).astype(np.int32),
                           np.take_along_axis(pt, order, axis=1)))
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
    f = d / f"{name}-{lim}-top{TOPK}.npz"
    if f.exists():
        z = np.load(f)
        out: list[Any] = []
        for w in range(int(z["n_waves"])):
            r, s, p, st, ti, tp = (z[f"{k}{w}"] for k in "rspoti")
            out.append([(r[a:b], s[a:b], p[a:b], ti[a:b], tp[a:b]) for a, b in itertools.pairwise(st)])
        return out
    corpora = Path(os.environ.get("PYLLMCODEC_CORPUS_DIR", Path.home() / ".cache/pyllmcodec/corpora"))
    data = (corpora / path).read_bytes()
    data = data[:lim] if lim else data
    t0 = time.time()
    waves = record(data)
    print(f"recorded {name}: {len(data)} bytes, {sum(len(st[1]) for w in waves for st in w)} tokens "
          f"in {time.time() - t0:.0f} s", flush=True)
    arrs: dict[str, Any] = {"n_waves": len(waves), "n_bytes": len(data)}
    for w, steps in enumerate(waves):
        for i, k in enumerate("rspti"):
            arrs[f"{k}{w}"] = np.concatenate([st[i] for st in steps])
        arrs[f"o{w}"] = np.cumsum([0] + [len(st[1]) for st in steps])
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
        for rows, toks, ps, *_ in steps:
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


def _stretch(p: float) -> float:
    return math.log(p / (1.0 - p))


def _lbucket(n: int) -> int:
    return n if n <= 4 else 5 if n < 8 else 6 if n < 16 else 7


def replay_gated(waves: list[Any], *, carried: bool, top1: bool, rate: float = 1 / 32,
                 min_len: int | tuple[int, ...] = (4, 2), both: bool = False,
                 agree: bool = False) -> tuple[float, int, int]:
    """Ideal bits through the gated match: the match's guess g gets the share h.

    ``h = P(x = g)`` comes from an adaptive map (an APM over the stretched
    model probability ``q`` of ``g``: 33 knots from -12 to 12, one set per
    match length bucket), starting at the identity (``h = q``: the model
    alone), and the other tokens keep their proportions (``p / (1 - q)``
    scaled by ``1 - h``) -- the shipped wave match (csrc/wavematch.hpp) in
    floats, a match found by the last ``min_len`` tokens, the map's knots
    learning at ``rate`` (the nearer one; ``both``: both, by their
    interpolation weights).  A tuple of lengths keeps one match per length,
    the first active one guessing (its own maps).  With ``top1``, steps
    without a match guess the model's likeliest token (bucket 0).
    ``agree``: separate maps for guesses that are the model's likeliest
    token.  Returns (bits, guesses, guesses whose ``q`` was outside the
    recorded top-k, taken as half the k-th probability).
    """
    lens = (min_len,) if isinstance(min_len, int) else tuple(min_len)
    bits = 0.0
    n_guess = n_out = 0

    def fresh() -> list[list[float]]:
        return [[1.0 / (1.0 + math.exp(-(192 * j - 3072) / 256)) for j in range(33)] for _ in range(16 * len(lens))]

    apm = fresh()
    seqs: dict[tuple[int, int], list[int]] = {}
    tables: list[dict[tuple[int, ...], tuple[tuple[int, int], int]]] = [{} for _ in lens]
    for wi, steps in enumerate(waves):
        if not carried:
            seqs, tables, apm = {}, [{} for _ in lens], fresh()
        ptr: list[dict[int, tuple[tuple[int, int], int]]] = [{} for _ in lens]
        mlen: list[dict[int, int]] = [{} for _ in lens]
        for rows, toks, ps, tids, tps in steps:
            for j, (r, x, p0) in enumerate(zip(rows.tolist(), toks.tolist(), ps.tolist())):
                h = seqs.setdefault((wi, r), [])
                pred, ln, src = -1, 0, 0
                for c in range(len(lens)):
                    if mlen[c].get(r, 0) > 0:
                        sid, i = ptr[c][r]
                        if i >= len(seqs[sid]):  # the place after the match is not coded yet
                            mlen[c][r] = 0
                        elif pred < 0:
                            pred, ln, src = seqs[sid][i], min(mlen[c][r], 32), c
                ti = tids[j].tolist()
                if pred < 0 and top1:
                    pred = ti[0]
                if pred >= 0:
                    n_guess += 1
                    if pred == x:
                        q = p0
                    elif pred in ti:
                        q = float(tps[j][ti.index(pred)])
                    else:
                        q, n_out = float(tps[j][-1]) / 2, n_out + 1
                    qc = min(max(q, 1e-6), 1 - 1e-6)
                    u = min(max(256 * _stretch(qc), -3071.0), 3071.0) + 3072
                    k = int(u // 192)
                    f = (u - 192 * k) / 192
                    row = apm[16 * src + _lbucket(ln) + (8 if agree and ti[0] == pred else 0)]
                    hp = min(max(row[k] * (1 - f) + row[k + 1] * f, 32 / 65536), 65504 / 65536)
                    y = 1.0 if x == pred else 0.0
                    bits -= math.log2(hp) if y else math.log2(1 - hp) + math.log2(p0 / (1 - qc))
                    if both:
                        row[k] += rate * (1 - f) * (y - row[k])
                        row[k + 1] += rate * f * (y - row[k + 1])
                    else:
                        kk = k + (f >= 0.5)
                        row[kk] += rate * (y - row[kk])
                else:
                    bits -= math.log2(p0)
                h.append(x)
                for c, L in enumerate(lens):
                    if mlen[c].get(r, 0) > 0:  # a match goes on while its guesses come
                        sid, i = ptr[c][r]
                        if seqs[sid][i] == x:
                            ptr[c][r] = (sid, i + 1)
                            mlen[c][r] += 1
                        else:
                            mlen[c][r] = 0
                    if len(h) >= L:
                        key = tuple(h[-L:])
                        if mlen[c].get(r, 0) == 0 and key in tables[c]:
                            ptr[c][r], mlen[c][r] = tables[c][key], L
                        tables[c][key] = ((wi, r), len(h))
    return bits, n_guess, n_out


def _n_bytes(name: str, limit: int | None) -> int:
    path, lim = FILES.get(name, (name, 0))
    n = lim if limit is None else limit
    if not n:
        corpora = Path(os.environ.get("PYLLMCODEC_CORPUS_DIR", Path.home() / ".cache/pyllmcodec/corpora"))
        n = (corpora / path).stat().st_size
    return int(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.smollm2_mix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="alice29,linux-doc-1MiB")
    ap.add_argument("--limit", type=int, default=None, help="the first N bytes of each file (default: the file's)")
    ap.add_argument("--alpha", default="0,16,64,256", help="the cache's concentrations (0: no cache, the match alone)")
    ap.add_argument("--sweep", action="store_true", help="the gated match's min_len and rate instead")
    a = ap.parse_args(argv)
    if a.sweep:
        print("| file | min_len (a tuple: one match each, the first active guessing) | rate | agree | gated |\n"
              "|---|---:|---:|---|---:|")
        for name in a.files.split(","):
            waves = cached(name, a.limit)
            n_bytes = _n_bytes(name, a.limit)
            for ml, sh, ag in ((4, 6, False), (6, 6, False), (3, 6, False), (1, 5, False), (2, 6, False),
                               (3, 5, False), (2, 5, False), (2, 4, False), (3, 4, False), (4, 5, False),
                               (4, 7, False), (2, 5, True), ((4, 2), 5, False), ((5, 2), 5, False),
                               ((8, 2), 5, False)):
                b, _, _ = replay_gated(waves, carried=False, top1=False, rate=2.0**-sh, min_len=ml, agree=ag)
                print(f"| {name} | {ml} | 2^-{sh} | {ag} | {b / n_bytes:.4f} |", flush=True)
        return 0
    rows: list[str] = []
    print("| file | bytes | tokens | model | cache a | cache | + match | carried |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.files.split(","):
        waves = cached(name, a.limit)
        n_bytes = _n_bytes(name, a.limit)
        n_tok = sum(len(st[1]) for w in waves for st in w)
        model = -sum(float(np.log2(st[2]).sum()) for w in waves for st in w)
        for al in (float(v) for v in a.alpha.split(",")):
            cache = replay(waves, al, match=False, carried=False)
            both = replay(waves, al, match=True, carried=False)
            carried = replay(waves, al, match=True, carried=True)
            print(f"| {name} | {n_bytes} | {n_tok} | {model / n_bytes:.4f} | {al:g} | {cache / n_bytes:.4f} | "
                  f"{both / n_bytes:.4f} | {carried / n_bytes:.4f} |", flush=True)
        g = [replay_gated(waves, carried=c, top1=t) for c in (False, True) for t in (False, True)]
        rows.append(f"| {name} | {model / n_bytes:.4f} | " + " | ".join(f"{b / n_bytes:.4f}" for b, _, _ in g)
                    + f" | {g[0][1]} | {g[0][2]} |")
    print("\nThe gated match (the shipped wave match, csrc/wavematch.hpp, in floats):\n\n"
          "| file | model | gated | + top-1 guesses | carried | carried + top-1 | guesses | q outside the top-k |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
