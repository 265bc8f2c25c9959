"""Heavier fuzzing of the decoder; run with PYLLMCODEC_FUZZ=1 (skipped otherwise)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyllmcodec import CodecError, core

pytestmark = pytest.mark.skipif(
    not os.environ.get("PYLLMCODEC_FUZZ"), reason="set PYLLMCODEC_FUZZ=1 to fuzz"
)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.lists(st.binary(max_size=200), min_size=1, max_size=8),
    V=st.integers(2, 2000),
    precision=st.integers(13, 31),
    steps=st.integers(1, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoder_garbage(data, V, precision, steps, seed):
    V = min(V, 1 << (precision - 1))
    rng = np.random.default_rng(seed)
    dec = core.BatchDecoder(data, precision)
    B = len(data)
    for _ in range(steps):
        p = (rng.random((B, V)) ** 8).astype(np.float32)
        try:
            mode = rng.integers(3)
            if mode == 0:
                s = dec.decode_probs(p)
            elif mode == 1:
                s = dec.decode(core.quantize(p, precision))
            else:
                cdf = core.quantize(p, precision)
                t = dec.targets()
                s = np.array(
                    [np.searchsorted(cdf[k], t[k], side="right") - 1 for k in range(B)]
                )
                k = np.arange(B)
                dec.advance(s, cdf[k, s], cdf[k, s + 1] - cdf[k, s])
        except CodecError:
            return
        assert ((s >= 0) & (s < V)).all()


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 8))
def test_bit_flips(seed, flips):
    rng = np.random.default_rng(seed)
    V, T = 300, 200
    probs = (rng.random((T, 1, V)) ** 6).astype(np.float32)
    enc = core.BatchEncoder(1)
    for p in probs:
        enc.encode_probs(p, rng.integers(0, V, 1))
    data = bytearray(enc.finish()[0])
    for _ in range(flips):
        if data:
            data[rng.integers(len(data))] ^= 1 << rng.integers(8)
    dec = core.BatchDecoder([bytes(data)])
    try:
        for p in probs:
            assert 0 <= dec.decode_probs(p)[0] < V
    except CodecError:
        pass
