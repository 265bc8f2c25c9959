"""The integer CDF entry (csrc/quantizer_int.hpp): quantize_int against the
pure-Python reference, the fused encode_weights / decode_weights against
quantize_int + encode / decode, the match model's integer twin (mix_int)
against its reference, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyllmcodec import _reference as ref
from pyllmcodec import core
from pyllmcodec._reference import MatchMixerRow
from pyllmcodec.errors import CodecError


@st.composite
def int_rows(draw):
    P = draw(st.sampled_from([9, 12, 16, 24, 30, 31]))
    V = draw(st.sampled_from([2, 3, 17, 256, 300]).filter(lambda v: v <= 1 << (P - 1)))
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["table", "wide", "sparse", "one"]))
    rng = np.random.default_rng(seed)
    if kind == "table":  # an exact model's rows: exp-table values <= 2**24
        w = rng.integers(0, 2**24 + 1, size=(n, V), dtype=np.uint64)
    elif kind == "wide":  # the whole uint32 range
        w = rng.integers(0, 2**32, size=(n, V), dtype=np.uint64)
    elif kind == "sparse":
        w = rng.integers(0, 5, size=(n, V), dtype=np.uint64) * (rng.random((n, V)) < 0.05)
    else:  # all the mass on one symbol
        w = np.zeros((n, V), dtype=np.uint64)
        w[np.arange(n), rng.integers(0, V, size=n)] = rng.integers(1, 2**32, size=n)
    w = w.astype(np.uint32)
    w[:, int(rng.integers(V))] |= 1  # no zero row
    match = np.where(rng.random(n) < 0.5, rng.integers(0, V, size=n), -1).astype(np.int64)
    q = rng.integers(1, 65536, size=n).astype(np.uint32)
    q[match < 0] = 0
    return P, w, match, q


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(int_rows())
def test_quantize_int_matches_reference_and_codes(case):
    P, w, match, q = case
    n, V = w.shape
    for m, qq in ((None, None), (match, q)):
        cdf = core.quantize_int(w, P, match=m, q=qq)
        assert np.array_equal(cdf, ref.quantize_int(w, P, m, qq))
        f = np.diff(cdf.astype(np.int64), axis=1)
        assert (f >= 1).all() and (cdf[:, -1] == 1 << P).all()
        if m is not None:  # the override's share, up to the floor
            for k in np.flatnonzero(m >= 0):
                if m[k] < V - 1:
                    assert f[k, m[k]] == 1 + (((1 << P) - V) * int(qq[k]) >> 16)
        # fused coding: the same bytes as the table, and decoding gives the symbols back
        rng = np.random.default_rng(int(w.sum()) % 2**32)
        syms = rng.integers(0, V, size=(5, n))
        e1, e2 = core.BatchEncoder(n, P), core.BatchEncoder(n, P)
        for s in syms:
            e1.encode(cdf, s)
            e2.encode_weights(w, s, match=m, q=qq)
        streams = e1.finish()
        assert streams == e2.finish()
        dec = core.BatchDecoder(streams, P)
        for s in syms:
            assert np.array_equal(dec.decode_weights(w, match=m, q=qq), s)


def test_a_row_subset_codes_its_streams_only():
    rng = np.random.default_rng(1)
    w = rng.integers(0, 2**24, size=(4, 256)).astype(np.uint32)
    enc = core.BatchEncoder(4, 30)
    rows = np.array([3, 1])
    enc.encode_weights(w[rows], [10, 20], rows=rows)
    enc.encode_weights(w, [1, 2, 3, 4])
    streams = enc.finish()
    dec = core.BatchDecoder(streams, 30)
    assert list(dec.decode_weights(w[rows], rows=rows)) == [10, 20]
    assert list(dec.decode_weights(w)) == [1, 2, 3, 4]


def test_no_float_in_the_table():
    """Weights scaled by a power of two give the same table (integer
    proportions), and a huge weight beside tiny ones leaves them >= 1."""
    w = np.array([[1, 2, 3, 4, 0, 7]], dtype=np.uint32)
    assert np.array_equal(core.quantize_int(w, 20), core.quantize_int(w << 20, 20))
    big = np.array([[2**32 - 1, 1, 1, 0]], dtype=np.uint32)
    f = np.diff(core.quantize_int(big, 16).astype(np.int64))
    assert f.min() >= 1 and f[0, 0] > 2**16 - 8


def test_refusals_name_the_problem():
    w = np.ones((2, 8), dtype=np.uint32)
    with pytest.raises(ValueError, match="row 1 sums to zero"):
        core.quantize_int(np.array([[1] * 8, [0] * 8], dtype=np.uint32))
    with pytest.raises(TypeError, match="uint32"):
        core.quantize_int(w.astype(np.float32))
    with pytest.raises(ValueError, match="both match and q"):
        core.quantize_int(w, match=np.array([-1, -1]))
    with pytest.raises(ValueError, match=r"match\[1\] = 8"):
        core.quantize_int(w, match=np.array([0, 8]), q=np.array([5, 5], dtype=np.uint32))
    with pytest.raises(ValueError, match=r"q\[0\] = 0"):
        core.quantize_int(w, match=np.array([0, -1]), q=np.array([0, 0], dtype=np.uint32))
    with pytest.raises(ValueError, match="q has 1 entries"):
        core.quantize_int(w, match=np.array([0, -1]), q=np.array([5], dtype=np.uint32))
    with pytest.raises(ValueError, match="too many"):
        core.quantize_int(np.ones((1, 600), dtype=np.uint32), 9)
    # all-or-nothing: a bad row leaves every stream as it was
    enc = core.BatchEncoder(2, 30)
    with pytest.raises(ValueError, match="row 1 sums to zero"):
        enc.encode_weights(np.array([[1] * 8, [0] * 8], dtype=np.uint32), [0, 0])
    enc.encode_weights(w, [3, 4])
    dec = core.BatchDecoder(enc.finish(), 30)
    assert list(dec.decode_weights(w)) == [3, 4]


def test_a_foreign_table_is_a_codec_error_or_other_symbols():
    rng = np.random.default_rng(2)
    w = rng.integers(1, 2**24, size=(1, 256)).astype(np.uint32)
    enc = core.BatchEncoder(1, 30)
    syms = rng.integers(0, 256, size=200)
    for s in syms:
        enc.encode_weights(w, [s])
    dec = core.BatchDecoder(enc.finish(), 30)
    other = w.copy()
    other[0, ::2] //= 3
    got = []
    try:
        for _ in syms:
            got.append(int(dec.decode_weights(other)[0]))
    except CodecError:
        return
    assert got != list(syms)


@st.composite
def mix_case(draw):
    V = draw(st.sampled_from([3, 7, 256]))
    alpha = draw(st.integers(2, min(V, 5)))
    n = draw(st.integers(1, 3))
    T = draw(st.integers(1, 100))
    seqs = [draw(st.lists(st.integers(0, alpha - 1), min_size=T, max_size=T)) for _ in range(n)]
    prior = draw(st.lists(st.integers(1, 65535), min_size=256, max_size=256))
    return V, seqs, prior, draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mix_case())
def test_mix_int_matches_reference_and_round_trips(case):
    V, seqs, prior, seed, min_len = case
    rng = np.random.default_rng(seed)
    n, T = len(seqs), len(seqs[0])
    P = 24
    mx = core.MatchMixer(n, T, np.array(prior), min_len=min_len, hash_bits=8)
    refs = [MatchMixerRow(prior, min_len=min_len, hash_bits=8) for _ in range(n)]
    enc = core.BatchEncoder(n, P)
    rows_w = []
    for t in range(T):
        w = rng.integers(0, 2**24, size=(n, V)).astype(np.uint32)
        w[rng.random(w.shape) < 0.2] = 0
        w[:, 0] |= 1
        if rng.random() < 0.1:  # now and then all the mass on one symbol: R = 0 for a match there
            w[:] = 0
            w[:, int(rng.integers(V))] = 5
        rows_w.append(w)
        m, q = mx.mix_int(w)
        want = [refs[r].mix_int(w[r]) for r in range(n)]
        assert [(int(a), int(b)) for a, b in zip(m, q)] == want
        cells, _ = mx.last_cells()
        assert list(cells) == [r.cell for r in refs]
        s = np.array([seqs[r][t] for r in range(n)])
        enc.encode_weights(w, s, match=m, q=q)
        mx.push(s)
        for r in range(n):
            refs[r].push(int(s[r]))
    dec = core.BatchDecoder(enc.finish(), P)
    mx2 = core.MatchMixer(n, T, np.array(prior), min_len=min_len, hash_bits=8)
    for t in range(T):
        m, q = mx2.mix_int(rows_w[t])
        s = dec.decode_weights(rows_w[t], match=m, q=q)
        assert list(s) == [seqs[r][t] for r in range(n)]
        mx2.push(s)


def test_mix_int_misuse():
    mx = core.MatchMixer(2, 10, np.full(256, 100))
    w = np.ones((2, 4), dtype=np.uint32)
    mx.mix_int(w)
    with pytest.raises(ValueError, match="mixed twice"):
        mx.mix_int(w)
    with pytest.raises(TypeError, match="uint32"):
        core.MatchMixer(2, 10, np.full(256, 100)).mix_int(w.astype(np.float32))
