"""Compare pyllmcodec.core against constriction 0.5 in one run.

    python bench/compare_constriction.py [--repeats 7] [--quick]

Cases (one "step" = one symbol per row, each row its own distribution):
  * [1024, 256]   step: 1024 streams (ours) / 1024 symbols into one stream
                  (constriction's fastest path: one call, rank-2 probabilities)
  * [64, 50257]   step: likewise with a GPT-2 sized vocabulary.
Speed: the same cached float32 step is coded again and again, quantization
included in every call (ours: encode_probs / decode_probs; constriction: a
Categorical(perfect=False) model family).  Each repeat times ~0.1 s of every
contender, alternating, so both see the same machine load; we report the
median over the repeats of symbols/s.

Overhead: bits written minus the ideal sum of -log2(p[s] / sum(p)) over the
coded symbols (float64, from the float32 probabilities), in % of the ideal,
for 2^20 symbols at V=256 and 20,000 symbols at V=50257, symbols drawn from
the distributions (softmax of Gaussian logits with std --sigma; 2 gives
~5.4 / 12.7 bits per symbol, 6 gives ~1.5 / 3.3).  Ours codes 16 (resp. 1)
streams, constriction one stream.  "ours %" is everything written, flush
included; "no flush" is the cost of our frequency tables alone
(sum of log2(2^P / freq)); "flush b/str" is the difference per stream
(flush plus the coder's truncation loss).  Constriction's figure includes
its flush (it writes 32-bit words).  Short-stream flush is also reported.

Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from pyllmcodec import core

try:
    import constriction
except ImportError:  # pragma: no cover - bench-only dependency
    constriction = None


def make_probs(rng: np.random.Generator, rows: int, V: int, sigma: float) -> np.ndarray:
    """LLM-like rows: softmax of Gaussian logits (float32, sums only ~1)."""
    logits = rng.standard_normal((rows, V)) * sigma
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32)


def sample(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    c = np.cumsum(probs.astype(np.float64), axis=1)
    u = rng.random(len(probs)) * c[:, -1]
    s = (c < u[:, None]).sum(axis=1)
    return np.minimum(s, probs.shape[1] - 1).astype(np.int32)


def ideal_bits(probs: np.ndarray, symbols: np.ndarray) -> float:
    p = probs.astype(np.float64)
    return float(-np.log2(p[np.arange(len(symbols)), symbols] / p.sum(axis=1)).sum())


def _once(fn) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    return max(time.perf_counter() - t0, 1e-7)


def _rate(fn, iters: int, n_symbols: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return n_symbols * iters / (time.perf_counter() - t0)


def speed_case(
    rows: int, V: int, repeats: int, sigma: float, slot: float = 0.1
) -> dict[str, float]:
    rng = np.random.default_rng(1)
    probs = make_probs(rng, rows, V, sigma)
    symbols = sample(rng, probs)
    fns = {}
    iters = {}

    enc = core.BatchEncoder(rows)
    out = np.empty((rows, V + 1), np.uint32)
    fns["ours_quantize"] = lambda: core.quantize(probs)
    fns["ours_quantize_out"] = lambda: core.quantize(probs, out=out)
    fns["ours_encode"] = lambda: enc.encode_probs(probs, symbols)
    # decoders need a coded step for every timed call
    iters["ours_decode"] = max(1, int(slot / _once(fns["ours_encode"])))
    denc = core.BatchEncoder(rows)
    for _ in range((repeats + 1) * iters["ours_decode"] + 2):
        denc.encode_probs(probs, symbols)
    dec = core.BatchDecoder(denc.finish())
    assert np.array_equal(dec.decode_probs(probs), symbols), "decode mismatch"
    fns["ours_decode"] = lambda: dec.decode_probs(probs)

    if constriction is not None:
        family = constriction.stream.model.Categorical(perfect=False)
        cenc = constriction.stream.queue.RangeEncoder()
        fns["cons_encode"] = lambda: cenc.encode(symbols, family, probs)
        iters["cons_decode"] = max(1, int(slot / _once(fns["cons_encode"])))
        cdenc = constriction.stream.queue.RangeEncoder()
        for _ in range((repeats + 1) * iters["cons_decode"] + 2):
            cdenc.encode(symbols, family, probs)
        cdec = constriction.stream.queue.RangeDecoder(cdenc.get_compressed())
        assert np.array_equal(cdec.decode(family, probs), symbols)
        fns["cons_decode"] = lambda: cdec.decode(family, probs)

    for k, f in fns.items():
        if k not in iters:
            iters[k] = max(1, int(slot / _once(f)))
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # alternate the contenders within each repeat
        for k, f in fns.items():
            rates[k].append(_rate(f, iters[k], rows))
    return {k: float(np.median(v)) for k, v in rates.items()}


def overhead_case(
    V: int, n_symbols: int, n_streams: int, sigma: float, pool: int
) -> dict[str, float]:
    rng = np.random.default_rng(2)
    steps = n_symbols // n_streams
    pool_probs = [make_probs(rng, n_streams, V, sigma) for _ in range(pool)]
    enc = core.BatchEncoder(n_streams)
    cenc = constriction.stream.queue.RangeEncoder() if constriction else None
    family = (
        constriction.stream.model.Categorical(perfect=False) if constriction else None
    )
    ideal = 0.0
    table_bits = 0.0  # sum of log2(2^P / freq): our cost before the coder and the flush
    P = core.DEFAULT_PRECISION
    record = []
    k = np.arange(n_streams)
    for t in range(steps):
        probs = pool_probs[t % pool]
        symbols = sample(rng, probs)
        ideal += ideal_bits(probs, symbols)
        cdf = core.quantize(probs)
        table_bits += float(
            np.sum(
                P - np.log2(cdf[k, symbols + 1].astype(np.float64) - cdf[k, symbols])
            )
        )
        enc.encode_probs(probs, symbols)
        if cenc is not None:
            cenc.encode(symbols, family, probs)
        if t < 64:
            record.append(symbols)
    streams = enc.finish()
    dec = core.BatchDecoder(streams)
    for t, symbols in enumerate(record):  # spot-check the round trip
        assert np.array_equal(dec.decode_probs(pool_probs[t % pool]), symbols)
    ours_bits = 8 * sum(len(s) for s in streams)
    res = {
        "ours_pct": 100 * (ours_bits - ideal) / ideal,
        "table_pct": 100 * (table_bits - ideal) / ideal,
        "flush_bits": (ours_bits - table_bits) / n_streams,
        "entropy": ideal / (steps * n_streams),
        "n": steps * n_streams,
    }
    if cenc is not None:
        cons_bits = 32 * len(cenc.get_compressed())  # uint32 words
        res["cons_pct"] = 100 * (cons_bits - ideal) / ideal
    return res


def flush_case(V: int, n_streams: int, steps: int, sigma: float) -> float:
    """Average bits per stream beyond the ideal on short streams (~ the flush)."""
    rng = np.random.default_rng(3)
    enc = core.BatchEncoder(n_streams)
    ideal = 0.0
    for _ in range(steps):
        probs = make_probs(rng, n_streams, V, sigma)
        symbols = sample(rng, probs)
        ideal += ideal_bits(probs, symbols)
        enc.encode_probs(probs, symbols)
    bits = 8 * sum(len(s) for s in enc.finish())
    return (bits - ideal) / n_streams


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller overhead runs")
    ap.add_argument(
        "--sigma", type=float, default=2.0, help="std of the Gaussian logits"
    )
    args = ap.parse_args()

    version = (
        getattr(constriction, "__version__", "0.5") if constriction else "(missing)"
    )
    print(f"# pyllmcodec.core vs constriction {version}")
    print(
        f"# {platform.machine()}, python {platform.python_version()}, numpy {np.__version__}, "
        f"precision {core.DEFAULT_PRECISION}, kernels {core.kernels()}, median of {args.repeats}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print()
    print(
        f"{'case':<14} {'op':<9} {'ours sym/s':>12} {'constr. sym/s':>14} {'ratio':>7}"
    )
    for rows, V in [(1024, 256), (64, 50257)]:
        r = speed_case(rows, V, args.repeats, args.sigma)
        case = f"[{rows},{V}]"
        for key, label in (
            ("ours_quantize", "quantize"),
            ("ours_quantize_out", "q(out=)"),
        ):
            print(
                f"{case:<14} {label:<9} {r[key]:>12.4g} {'':>14} {'':>7}"
                f"   ({1e9 / (r[key] * V):.3f} ns/element)"
            )
        for op in ("encode", "decode"):
            ours = r[f"ours_{op}"]
            cons = r.get(f"cons_{op}", math.nan)
            print(
                f"{case:<14} {op:<9} {ours:>12.4g} {cons:>14.4g} {ours / cons:>6.2f}x"
            )
    print()
    print(
        f"{'overhead over the ideal':<30} {'ours %':>9} {'no flush':>9} {'flush b/str':>11} "
        f"{'constr. %':>10} {'bits/sym':>9}"
    )
    cases = [(256, 1 << 20, 16, 64), (50257, 20_000, 1, 16)]
    if args.quick:
        cases = [(256, 1 << 16, 16, 16), (50257, 4_000, 1, 4)]
    for V, n, streams, pool in cases:
        o = overhead_case(V, n, streams, args.sigma, pool)
        label = f"V={V}, {o['n']} sym, {streams} str"
        print(
            f"{label:<30} {o['ours_pct']:>9.5f} {o['table_pct']:>9.5f} {o['flush_bits']:>11.2f} "
            f"{o.get('cons_pct', math.nan):>10.5f} {o['entropy']:>9.3f}"
        )
    print()
    for V in (256, 50257):
        flush = flush_case(V, 512 if V == 256 else 64, 8, args.sigma)
        print(f"flush, V={V}: {flush:.2f} bits/stream above the ideal (short streams)")


if __name__ == "__main__":
    main()
