"""What the context-mixing stage (csrc/cm.hpp) saves, per file, per setting
(issue 16: tuning and ablation before and beside the codec's own runs).

    python -m bench.studies.cm_stage [--files alice29,linux-doc-1MiB] [--sweep lr=4,6,8]
    python -m bench.studies.cm_stage --archives --files alice29,asyoulik,lcet10,plrabn12

Runs a real ``compress`` with the default (exact) model once per file and
records, for every model-coded byte, the model's P(bit = 1) for each of its
eight bits exactly as the stage sees them (the integer quantizer's table,
with the match model's override, read along the coded byte's path:
``cm.hpp``'s ``lm_bit``), cached under ``$TMPDIR/pyllmcodec-cm``.  Then each
chunk runs through one fresh row of the stage (``core.cm_trace``), and the
ideal code length is summed: ``model`` (the bits alone: today's codec, up to
the coder's 16-bit clamp) against ``stage`` (what the stage's probabilities
cost).  Chunks stay independent, as in the codec.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FILES = {
    "alice29": "canterbury/alice29.txt",
    "asyoulik": "canterbury/asyoulik.txt",
    "lcet10": "canterbury/lcet10.txt",
    "plrabn12": "canterbury/plrabn12.txt",
    "linux-doc-1MiB": "linux-doc/linux-doc-6.1-10MiB.txt",
    "linux-doc-10MiB": "linux-doc/linux-doc-6.1-10MiB.txt",
}


def lm_bits(cdf: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """[m, 8] uint16: the model's P(bit = 1) along each row's byte (cm.hpp's lm_bit)."""
    m = len(sym)
    lo = np.zeros(m, dtype=np.int64)
    hi = np.full(m, 256, dtype=np.int64)
    out = np.empty((m, 8), dtype=np.uint16)
    r = np.arange(m)
    c = cdf.astype(np.int64)
    for j in range(8):
        mid = (lo + hi) >> 1
        n = c[r, hi] - c[r, lo]
        n1 = c[r, hi] - c[r, mid]
        out[:, j] = np.clip((n1 << 16) // n, 1, 65535)
        b = (sym >> (7 - j)) & 1
        lo = np.where(b == 1, mid, lo)
        hi = np.where(b == 1, hi, mid)
    return out


class _Recorder:
    """A ``BatchEncoder`` stand-in that keeps every row's bit probabilities."""

    def __init__(self, enc: Any, batch: int, core: Any, sink: list[Any]) -> None:
        self._enc, self._core = enc, core
        self.rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(batch)]
        sink.append(self.rows)

    def encode_weights(self, w: Any, symbols: Any, rows: Any = None, match: Any = None, q: Any = None) -> None:
        cdf = self._core.quantize_int(np.ascontiguousarray(w), self._enc.precision, match=match, q=q)
        sym = np.asarray(symbols, dtype=np.int64)
        bits = lm_bits(cdf, sym)
        idx = range(len(sym)) if rows is None else [int(r) for r in rows]
        for k, r in enumerate(idx):
            self.rows[r].append((bits[k], sym[k]))
        self._enc.encode_weights(w, symbols, rows=rows, match=match, q=q)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._enc, name)


def record(data: bytes, model: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every model-coded chunk's (p_lm [n, 8] uint16, bytes [n]) in file order
    (``model``: a name or bundle directory; None: the default)."""
    import pyllmcodec
    from pyllmcodec import core

    waves: list[Any] = []
    real = core.BatchEncoder
    core.BatchEncoder = lambda batch, **kw: _Recorder(real(batch, **kw), batch, core, waves)  # type: ignore[misc]
    try:  # the stage's own chunking, coded without it (the recorder stands in for its coder)
        kw = {} if model is None else {"model": model}
        pyllmcodec.compress(data, cm=False, chunk_size=pyllmcodec.Compressor(**kw).chunk_size_for(len(data)), **kw)
    finally:
        core.BatchEncoder = real  # type: ignore[misc]
    out = []
    for wave in waves:
        for row in wave:
            if row:
                out.append((np.stack([b for b, _ in row]), np.array([s for _, s in row], dtype=np.uint8)))
    return out


def cached(name: str, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    d = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "pyllmcodec-cm"
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}-{limit}.npz"
    if f.exists():
        z = np.load(f)
        offs, p, s = z["offsets"], z["p"], z["s"]  # each z[...] reads the file again: once
        return [(p[a:b], s[a:b]) for a, b in zip(offs[:-1], offs[1:])]
    corpora = Path(os.environ.get("PYLLMCODEC_CORPUS_DIR", Path.home() / ".cache/pyllmcodec/corpora"))
    data = (corpora / FILES.get(name, name)).read_bytes()
    data = data[:limit] if limit else data
    chunks = record(data)
    offs = np.cumsum([0] + [len(s) for _, s in chunks])
    np.savez(f, p=np.concatenate([p for p, _ in chunks]), s=np.concatenate([s for _, s in chunks]), offsets=offs)
    return chunks


def cost(p1: np.ndarray, sym: np.ndarray) -> float:
    """Ideal bits of coding ``sym``'s bits with P(bit = 1) = p1 / 2^16."""
    y = (sym[:, None].astype(np.int64) >> (7 - np.arange(8))) & 1
    p = np.where(y == 1, p1.astype(np.float64), 65536.0 - p1) / 65536.0
    return float(-np.log2(p).sum())


def run(chunks: list[tuple[np.ndarray, np.ndarray]], mode: str, **kw: int) -> tuple[float, float, int]:
    """(model bits, stage bits, bytes); ``mode``: ``independent`` (a state
    per chunk), ``shared`` (one state for all chunks, which take turns
    byte by byte), ``waves`` (the codec: a fresh shared state per wave of 32
    chunks), ``long`` (one shared state carried from wave to wave) or
    ``sequential`` (one state, chunk after chunk)."""
    from pyllmcodec import _core as core

    n = sum(len(s) for _, s in chunks)
    model = sum(cost(p, s) for p, s in chunks)
    P = np.concatenate([p for p, _ in chunks])
    S = np.concatenate([s for _, s in chunks])
    offs = np.cumsum([0] + [len(s) for _, s in chunks])
    if mode == "sequential":
        offs = np.array([0, n])
    if mode in ("waves", "long"):
        kw = {"wave": 32, "keep": mode == "long", **kw}
    stage = cost(core.cm_trace(P, S, offs, shared=mode in ("shared", "waves", "long"), **kw), S)
    return model, stage, n


def archives(names: list[str], limit: int) -> None:
    """Whole archives per file: zpaq -m5 (the bench's CLI) against the
    default model without and with the stage (round trips checked)."""
    import pyllmcodec
    from bench.baselines import get_baselines

    zpaq = get_baselines(["zpaq"])[0]
    print("| file | bytes | zpaq -m5 | default, cm=False | default (cm) | change |\n|---|---:|---:|---:|---:|---:|")
    tot = {"n": 0, "z": 0, "a": 0, "b": 0}
    for name in names:
        corpora = Path(os.environ.get("PYLLMCODEC_CORPUS_DIR", Path.home() / ".cache/pyllmcodec/corpora"))
        data = (corpora / FILES.get(name, name)).read_bytes()
        data = data[:limit] if limit else data
        z = len(zpaq.compress(data))
        a, b = pyllmcodec.compress(data, cm=False), pyllmcodec.compress(data)
        assert pyllmcodec.decompress(b) == data and pyllmcodec.decompress(a) == data
        n = len(data)
        for k, v in (("n", n), ("z", z), ("a", len(a)), ("b", len(b))):
            tot[k] += v
        print(f"| {name} | {n} | {8 * z / n:.4f} | {8 * len(a) / n:.4f} | **{8 * len(b) / n:.4f}** | "
              f"{8 * (len(b) - len(a)) / n:+.4f} |", flush=True)
    n = tot["n"]
    print(f"| total | {n} | {8 * tot['z'] / n:.4f} | {8 * tot['a'] / n:.4f} | **{8 * tot['b'] / n:.4f}** | "
          f"{8 * (tot['b'] - tot['a']) / n:+.4f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.studies.cm_stage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="alice29,linux-doc-1MiB")
    ap.add_argument("--limit", type=int, default=1048576, help="the first N bytes of each file (0: all)")
    ap.add_argument("--mode", default="independent", help="independent, shared, waves, long or sequential (comma-separated)")
    ap.add_argument("--sweep", default="", help="NAME=v1,v2,... : one row per value of a cm_trace parameter")
    ap.add_argument("--set", default="table_bits=22",
                    help="NAME=v,NAME=v,... : cm_trace parameters every row uses (default: table_bits=22, the codec's)")
    ap.add_argument("--archives", action="store_true",
                    help="whole archives per file instead: zpaq -m5, the default model without and with the stage")
    a = ap.parse_args(argv)
    if a.archives:
        archives(a.files.split(","), a.limit)
        return 0
    fixed = {k: int(v) for k, v in (kv.split("=") for kv in a.set.split(",") if kv)}
    runs: list[dict[str, int]] = [dict(fixed)]
    if a.sweep:
        name, vals = a.sweep.split("=")
        runs = [{**fixed, name: int(v)} for v in vals.split(",")]
    print("| file | bytes | setting | model | stage | change |\n|---|---:|---|---:|---:|---:|")
    for name in a.files.split(","):
        chunks = cached(name, a.limit)
        for mode in a.mode.split(","):
          for kw in runs:
            t0 = time.perf_counter()
            model, stage, n = run(chunks, mode, **kw)
            print(f"| {name} | {n} | {mode} {kw or ''} | {model / n:.4f} | {stage / n:.4f} | "
                  f"{(stage - model) / n:+.4f} |  <!-- {time.perf_counter() - t0:.1f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
