"""pytest-benchmark suite for pyllmcodec.core (not timed tests).

    pytest bench/bench_core.py                       # measure
    pytest bench/bench_core.py --benchmark-disable   # CI: run once, check results

Each case is one "step": one symbol per row, every row its own distribution,
for [1024, 256] (byte-level model, many streams) and [64, 50257] (GPT-2
vocabulary).  Every benchmark also checks its result, so a fast wrong answer
fails.  The head-to-head against constriction is bench/compare_constriction.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyllmcodec import core

CASES = [(1024, 256), (64, 50257)]
IDS = [f"{b}x{v}" for b, v in CASES]


def make_step(B: int, V: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, V)) * 2.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True)).astype(np.float32)
    c = np.cumsum(p.astype(np.float64), axis=1)
    s = np.minimum((c < (rng.random(B) * c[:, -1])[:, None]).sum(axis=1), V - 1)
    return p, s


@pytest.mark.parametrize("B, V", CASES, ids=IDS)
def test_quantize(benchmark, B, V):
    p, _ = make_step(B, V)
    cdf = benchmark(core.quantize, p)
    assert cdf.shape == (B, V + 1)
    assert (cdf[:, -1] == 1 << core.DEFAULT_PRECISION).all()
    assert (np.diff(cdf.astype(np.int64), axis=1) >= 1).all()


@pytest.mark.parametrize("B, V", CASES, ids=IDS)
def test_encode_probs(benchmark, B, V):
    p, s = make_step(B, V)
    enc = core.BatchEncoder(B)
    benchmark(enc.encode_probs, p, s)
    dec = core.BatchDecoder(enc.finish())
    np.testing.assert_array_equal(dec.decode_probs(p), s)


@pytest.mark.parametrize("B, V", CASES, ids=IDS)
def test_encode_two_step(benchmark, B, V):
    p, s = make_step(B, V)
    enc = core.BatchEncoder(B)
    benchmark(lambda: enc.encode(core.quantize(p), s))
    dec = core.BatchDecoder(enc.finish())
    np.testing.assert_array_equal(dec.decode_probs(p), s)


@pytest.mark.parametrize("B, V", CASES, ids=IDS)
def test_decode_probs(benchmark, B, V):
    p, s = make_step(B, V)
    enc = core.BatchEncoder(B)
    enc.encode_probs(p, s)
    streams = enc.finish()
    results = []

    def setup():
        return (core.BatchDecoder(streams),), {}

    def run(dec):
        results.append(dec.decode_probs(p))

    benchmark.pedantic(run, setup=setup, rounds=60 if V < 1000 else 15, iterations=1)
    for got in results:
        np.testing.assert_array_equal(got, s)
