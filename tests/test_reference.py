"""The pure-Python reference (pyllmcodec._reference) is bit-identical to the core."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmcodec import CodecError, core
from pyllmcodec import _reference as ref


@settings(max_examples=40, deadline=None)
@given(
    V=st.integers(2, 80),
    T=st.integers(0, 60),
    precision=st.sampled_from([8, 12, 16, 24, 30, 31]),
    power=st.sampled_from([1, 4, 12]),
    seed=st.integers(0, 2**32 - 1),
)
def test_encode_decode_match_reference(V, T, precision, power, seed):
    V = min(V, 1 << (precision - 1))
    rng = np.random.default_rng(seed)
    probs = (rng.random((max(T, 1), V)) ** power).astype(np.float32)[:T]
    symbols = rng.integers(0, V, T)
    cdfs = ref.quantize(probs, precision) if T else np.zeros((0, V + 1), np.uint32)
    if T:
        np.testing.assert_array_equal(cdfs, core.quantize(probs, precision))
    want = ref.encode(cdfs, symbols, precision)
    enc = core.BatchEncoder(1, precision)
    for p, s in zip(probs, symbols):
        enc.encode_probs(p[None], [s])
    assert enc.finish() == [want]
    assert ref.decode(want, cdfs, precision) == list(symbols)


def test_long_stream_with_carries_matches_reference():
    # Near-certain symbols make long runs of 0xFF bytes and carries through them.
    T, precision = 3000, 31
    rng = np.random.default_rng(1)
    probs = np.array([[1e-3, 1.0, 1.0, 1e-3]], np.float32)
    cdf = ref.quantize(probs, precision)
    symbols = rng.choice([1, 2], T)
    symbols[::97] = 3
    cdfs = [cdf[0]] * T
    want = ref.encode(cdfs, symbols, precision)
    enc = core.BatchEncoder(1, precision)
    for s in symbols:
        enc.encode(cdf, [s])
    assert enc.finish() == [want]
    assert ref.decode(want, cdfs, precision) == list(symbols)


def test_reference_errors_match():
    p = np.array([[1.0, np.nan]], np.float32)
    with pytest.raises(ValueError, match="row 0 has a NaN"):
        ref.quantize(p)
    with pytest.raises(ValueError, match="row 0 has a NaN"):
        core.quantize(p)
    with pytest.raises(CodecError):
        dec = ref.Decoder(b"\x00" * 7, 8)
        dec.advance(5, 1)


def test_golden_stream_matches_reference():
    from tests.test_core_coder import golden_probs

    V, T, precision = 4, 12, 30
    cdfs = [ref.quantize(golden_probs(t, 1, V), precision)[0] for t in range(T)]
    symbols = [(t * 17) % V for t in range(T)]
    assert ref.encode(cdfs, symbols, precision).hex() == "0000046b185ad0"
