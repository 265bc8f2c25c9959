"""pyllmcodec.core.BatchEncoder / BatchDecoder: round trips, paths, errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmcodec import CodecError, core


def make_probs(
    rng: np.random.Generator, B: int, V: int, kind: str = "peaked"
) -> np.ndarray:
    if kind == "peaked":
        p = np.exp(rng.standard_normal((B, V)) * 3)
    elif kind == "uniform":
        p = np.ones((B, V))
    elif kind == "onehot":
        p = np.zeros((B, V))
        p[np.arange(B), rng.integers(0, V, B)] = 1.0
    elif kind == "tiny":
        p = rng.random((B, V)) * 1e-9
        p[:, 0] = 1.0
    else:
        p = rng.random((B, V))
    return p.astype(np.float32)


def sample(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p.astype(np.float64), axis=1)
    u = rng.random(len(p)) * c[:, -1]
    return np.minimum((c < u[:, None]).sum(axis=1), p.shape[1] - 1)


def roundtrip(steps, B, precision=core.DEFAULT_PRECISION, fused=True):
    """steps: list of (probs, symbols, rows)."""
    enc = core.BatchEncoder(B, precision)
    for p, s, r in steps:
        if fused:
            enc.encode_probs(p, s, rows=r)
        else:
            enc.encode(core.quantize(p, precision), s, rows=r)
    streams = enc.finish()
    dec = core.BatchDecoder(streams, precision)
    for p, s, r in steps:
        got = (
            dec.decode_probs(p, rows=r)
            if fused
            else dec.decode(core.quantize(p, precision), rows=r)
        )
        np.testing.assert_array_equal(got, s)
    return streams


@settings(max_examples=40, deadline=None)
@given(
    V=st.sampled_from([2, 3, 256]),
    B=st.integers(1, 6),
    T=st.integers(0, 40),
    kind=st.sampled_from(["peaked", "uniform", "onehot", "tiny", "random"]),
    adversarial=st.booleans(),
    precision=st.sampled_from([16, 24, 30, 31]),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_random(V, B, T, kind, adversarial, precision, seed):
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(T):
        p = make_probs(rng, B, V, kind)
        # adversarial: arbitrary symbols, including ~zero-probability ones
        s = rng.integers(0, V, B) if adversarial else sample(rng, p)
        steps.append((p, s, None))
    a = roundtrip(steps, B, precision, fused=True)
    b = roundtrip(steps, B, precision, fused=False)
    assert a == b


@pytest.mark.parametrize("V, B, T", [(50257, 4, 6), (262144, 2, 3)])
def test_roundtrip_large_vocab(V, B, T):
    rng = np.random.default_rng(V)
    steps = []
    for t in range(T):
        p = make_probs(rng, B, V, "peaked")
        s = sample(rng, p) if t % 2 else rng.integers(0, V, B)
        s[0] = V - 1 if t == 0 else s[0]  # the implicit last symbol
        steps.append((p, s, None))
    assert roundtrip(steps, B, fused=True) == roundtrip(steps, B, fused=False)


def test_one_hot_uniform_and_near_zero_symbols_are_coded():
    rng = np.random.default_rng(0)
    V = 256
    onehot = np.zeros((3, V), np.float32)
    onehot[:, 7] = 1.0
    uniform = np.ones((3, V), np.float32)
    tiny = np.full((3, V), 1e-30, np.float32)
    tiny[:, 5] = 1.0
    steps = [
        (
            onehot,
            np.array([7, 0, 255]),
            None,
        ),  # the certain symbol and two impossible ones
        (uniform, np.array([0, 128, 255]), None),
        (tiny, np.array([6, 5, 255]), None),
    ] * 20
    roundtrip(steps, 3)
    # certain symbols cost (almost) nothing: 1000 of them fit in a few bytes
    enc = core.BatchEncoder(1)
    for _ in range(1000):
        enc.encode_probs(onehot[:1], [7])
    assert len(enc.finish()[0]) <= 2
    del rng


def test_stream_lengths_0_to_10000_finishing_at_different_steps():
    lengths = np.array([0, 1, 2, 7, 255, 1000, 10000, 3])
    B, V = len(lengths), 3
    rng = np.random.default_rng(1)
    table = make_probs(rng, 64, V, "random")
    enc = core.BatchEncoder(B)
    symbols = [rng.integers(0, V, n) for n in lengths]
    for t in range(lengths.max()):
        rows = np.flatnonzero(lengths > t)
        enc.encode_probs(
            table[rows % 64 + t % 7], [symbols[i][t] for i in rows], rows=rows
        )
    streams = enc.finish()
    assert streams[0] == b""
    dec = core.BatchDecoder(streams)
    got = [[] for _ in range(B)]
    for t in range(lengths.max()):
        rows = np.flatnonzero(lengths > t)
        for i, s in zip(rows, dec.decode_probs(table[rows % 64 + t % 7], rows=rows)):
            got[i].append(s)
    for i in range(B):
        np.testing.assert_array_equal(got[i], symbols[i])


def test_rows_subsets_in_any_order():
    rng = np.random.default_rng(2)
    B, V = 6, 20
    steps = []
    for _ in range(50):
        rows = rng.permutation(B)[: rng.integers(0, B + 1)]
        p = make_probs(rng, len(rows), V)
        steps.append((p, sample(rng, p), rows))
    roundtrip(steps, B)
    roundtrip(steps, B, fused=False)


def test_two_phase_api_equals_one_shot():
    rng = np.random.default_rng(3)
    B, V, T = 5, 300, 30
    steps = [(make_probs(rng, B, V), None) for _ in range(T)]
    steps = [(p, sample(rng, p)) for p, _ in steps]
    one = core.BatchEncoder(B)
    two = core.BatchEncoder(B)
    for p, s in steps:
        one.encode_probs(p, s)
        cdf = core.quantize(p)
        k = np.arange(B)
        two.encode_ranges(cdf[k, s], cdf[k, s + 1] - cdf[k, s])
    streams = one.finish()
    assert two.finish() == streams
    dec = core.BatchDecoder(streams)
    for p, s in steps:
        cdf = core.quantize(p)
        t = dec.targets()
        assert np.array_equal(dec.targets(), t)  # read-only
        sym = np.array(
            [np.searchsorted(cdf[k], t[k], side="right") - 1 for k in range(B)]
        )
        np.testing.assert_array_equal(sym, s)
        k = np.arange(B)
        dec.advance(sym, cdf[k, sym], cdf[k, sym + 1] - cdf[k, sym])


def test_two_phase_with_rows():
    rng = np.random.default_rng(4)
    p = make_probs(rng, 2, 10)
    s = sample(rng, p)
    cdf = core.quantize(p)
    enc = core.BatchEncoder(4)
    enc.encode_ranges(cdf[[0, 1], s], cdf[[0, 1], s + 1] - cdf[[0, 1], s], rows=[3, 1])
    streams = enc.finish()
    assert streams[0] == streams[2] == b""
    dec = core.BatchDecoder(streams)
    t = dec.targets(rows=[3, 1])
    sym = [int(np.searchsorted(cdf[k], t[k], side="right") - 1) for k in range(2)]
    assert sym == list(s)
    dec.advance(
        sym,
        cdf[[0, 1], sym],
        cdf[[0, 1], np.add(sym, 1)] - cdf[[0, 1], sym],
        rows=[3, 1],
    )


def test_advance_mismatch_is_codec_error_and_changes_nothing():
    p = np.ones((1, 4), np.float32)
    enc = core.BatchEncoder(1)
    for s in [3, 2, 1, 0]:
        enc.encode_probs(p, [s])
    dec = core.BatchDecoder(enc.finish())
    cdf = core.quantize(p)
    with pytest.raises(CodecError, match="target"):
        dec.advance([0], cdf[0, :1], np.diff(cdf[0])[:1])  # the target is in symbol 3
    assert dec.decode_probs(p).tolist() == [3]


def test_overhead_and_flush_are_small():
    rng = np.random.default_rng(5)
    B, V, T = 4, 256, 2000
    enc = core.BatchEncoder(B)
    ideal = 0.0
    for _ in range(T):
        p = make_probs(rng, B, V)
        s = sample(rng, p)
        p64 = p.astype(np.float64)
        ideal += -np.log2(p64[np.arange(B), s] / p64.sum(axis=1)).sum()
        enc.encode_probs(p, s)
    bits = 8 * sum(len(x) for x in enc.finish())
    assert ideal <= bits <= ideal * 1.0001 + 8 * B


# ----------------------------------------------------------------------------
# Golden bitstreams: they pin the format (quantizer + coder).  A change here
# breaks every archive ever written.


def golden_probs(t: int, B: int, V: int) -> np.ndarray:
    i = np.arange(V)[None, :]
    k = np.arange(B)[:, None]
    return (((i * 7919 + k * 104729 + t * 15485863) % 1000) + 1).astype(np.float32) ** 2


def golden_stream(V: int, B: int, T: int, precision: int) -> list[bytes]:
    enc = core.BatchEncoder(B, precision)
    for t in range(T):
        rows = np.arange(B)[np.arange(B) <= t % (B + 1)] if B > 1 else None
        n = B if rows is None else len(rows)
        s = (np.arange(n) * 31 + t * 17) % V
        enc.encode_probs(golden_probs(t, n, V), s, rows=rows)
    return enc.finish()


GOLDEN = {
    # (V, B, T, precision): (hex of stream 0, sha256 of all streams joined by b"|")
    (4, 1, 12, 30): (
        "0000046b185ad0",
        "54374b064cabad39c649e8f9865426559269866b817449ca4edd79bcbcc9fe17",
    ),
    (256, 3, 200, 30): (
        "0000000428d89816f6a1b27d55c2dce813f4f60fdc2cfeadd1d6d835021ff3f1",
        "a25e02fe87f114a1001a2395fa96df93b6c96c9ab9a8d7b08424ade8b31a2a5f",
    ),
    (50257, 2, 20, 31): (
        "00000000003479233711eec3762c9ae1953ab28a6ac07a00427707c2a265e913",
        "753a3d9692aeac86c9c5548851a403602b022358e334100f857cbf1a5e5cf00f",
    ),
    (300, 4, 100, 16): (
        "00001126516c6d9d7681aaba1a0cd63449e940c8d92499ada0c1667d6ae7075c",
        "ef2437ed892d726194ab36e0d70107ef1ecc4b25a1435eee64e15457b68e33bb",
    ),
}


@pytest.mark.parametrize("key", list(GOLDEN))
def test_golden_bitstreams(key):
    streams = golden_stream(*key)
    want_hex, want_sha = GOLDEN[key]
    assert streams[0].hex()[:64] == want_hex
    assert hashlib.sha256(b"|".join(streams)).hexdigest() == want_sha
    # the decoder reads them back
    V, B, T, precision = key
    dec = core.BatchDecoder(streams, precision)
    for t in range(T):
        rows = np.arange(B)[np.arange(B) <= t % (B + 1)] if B > 1 else None
        n = B if rows is None else len(rows)
        got = dec.decode_probs(golden_probs(t, n, V), rows=rows)
        np.testing.assert_array_equal(got, (np.arange(n) * 31 + t * 17) % V)


# ----------------------------------------------------------------------------
# Misuse and bad data.


def test_rows_validation():
    enc = core.BatchEncoder(3)
    p = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="appears twice"):
        enc.encode_probs(p, [0, 1], rows=[1, 1])
    with pytest.raises(ValueError, match="not a stream index"):
        enc.encode_probs(p, [0, 1], rows=[0, 3])
    with pytest.raises(ValueError, match="not a stream index"):
        enc.encode_probs(p, [0, 1], rows=[-1, 0])
    with pytest.raises(ValueError, match="rows="):
        enc.encode_probs(p, [0, 1])
    with pytest.raises(ValueError, match="rows has 1 entries"):
        enc.encode_probs(p, [0, 1], rows=[0])
    with pytest.raises(TypeError, match="integer"):
        enc.encode_probs(p, [0, 1], rows=[0.0, 1.0])
    enc.encode_probs(p, np.array([0, 1], np.uint8), rows=np.array([2, 0], np.int32))


def test_symbol_and_table_validation():
    enc = core.BatchEncoder(1)
    p = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match="outside the alphabet"):
        enc.encode_probs(p, [4])
    with pytest.raises(ValueError, match="outside the alphabet"):
        enc.encode_probs(p, [-1])
    with pytest.raises(ValueError, match="symbols has 2 entries"):
        enc.encode_probs(p, [0, 1])
    bad = core.quantize(p)
    bad[0, 2] = bad[0, 1] - 1
    with pytest.raises(ValueError, match="cdf row 0 is not a valid table"):
        enc.encode(bad, [0])
    with pytest.raises(ValueError, match="cdf row 0"):
        enc.encode(core.quantize(p, 16), [0])  # wrong precision
    zero = np.array([[0, 0, 1 << 30]], np.uint32)
    with pytest.raises(ValueError, match="zero frequency"):
        enc.encode(zero, [0])
    with pytest.raises(ValueError, match="freq >= 1"):
        enc.encode_ranges(np.array([0], np.uint32), np.array([0], np.uint32))
    with pytest.raises(ValueError, match="cum_low \\+ freq"):
        enc.encode_ranges(np.array([1 << 30], np.uint32), np.array([1], np.uint32))
    with pytest.raises(TypeError, match="uint32"):
        enc.encode_ranges(np.array([0], np.int64), np.array([1], np.uint32))
    with pytest.raises(TypeError, match="uint32"):
        enc.encode(core.quantize(p).astype(np.int64), [0])
    with pytest.raises(ValueError, match="row 0 has a NaN"):
        enc.encode_probs(np.array([[1, np.nan]], np.float32), [0])


def test_failed_call_changes_nothing():
    rng = np.random.default_rng(6)
    p = make_probs(rng, 3, 16)
    bad = p.copy()
    bad[2, 5] = np.nan
    a, b = core.BatchEncoder(3), core.BatchEncoder(3)
    for _ in range(10):
        a.encode_probs(p, [1, 2, 3])
        with pytest.raises(ValueError, match="row 2"):
            a.encode_probs(bad, [1, 2, 3])
        b.encode_probs(p, [1, 2, 3])
    assert a.finish() == b.finish()


def test_finished_encoder_refuses_more():
    enc = core.BatchEncoder(1)
    assert enc.finish() == [b""]
    with pytest.raises(ValueError, match="finished"):
        enc.encode_probs(np.ones((1, 2), np.float32), [0])
    with pytest.raises(ValueError, match="finished"):
        enc.finish()


def test_constructor_checks():
    with pytest.raises(ValueError, match="precision"):
        core.BatchEncoder(1, 32)
    with pytest.raises(ValueError, match="precision"):
        core.BatchDecoder([b""], 1)
    with pytest.raises(TypeError, match="bytes-like"):
        core.BatchDecoder(["abc"])
    with pytest.raises(TypeError, match="bytes-like"):
        core.BatchDecoder([1])
    dec = core.BatchDecoder(
        [b"", bytearray(b"\x01"), memoryview(b"\x02\x03"), np.zeros(3, np.uint8)]
    )
    assert dec.n_streams == 4 and dec.precision == core.DEFAULT_PRECISION
    assert core.BatchEncoder(0).finish() == []


def test_decoder_precision_mismatch_does_not_crash():
    p = np.ones((1, 50), np.float32)
    enc = core.BatchEncoder(1, 24)
    for s in range(50):
        enc.encode_probs(p, [s])
    dec = core.BatchDecoder(enc.finish(), 30)
    for _ in range(50):
        try:
            dec.decode_probs(p)
        except CodecError:
            break


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
    V=st.sampled_from([2, 3, 256, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoder_fed_random_bytes(data, V, seed):
    """Garbage yields symbols in range or CodecError; never a crash or a hang."""
    rng = np.random.default_rng(seed)
    B = len(data)
    dec = core.BatchDecoder(data)
    for _ in range(100):
        p = make_probs(rng, B, V, "peaked")
        try:
            s = (
                dec.decode_probs(p)
                if rng.random() < 0.5
                else dec.decode(core.quantize(p))
            )
        except CodecError:
            return
        assert ((s >= 0) & (s < V)).all()
    assert (dec.positions() <= np.array([len(d) for d in data]) + 7 + 100 * 7).all()


def test_truncated_stream_decodes_or_raises():
    rng = np.random.default_rng(7)
    p = make_probs(rng, 1, 256)
    enc = core.BatchEncoder(1)
    for s in sample(rng, np.repeat(p, 300, axis=0)):
        enc.encode_probs(p, [s])
    full = enc.finish()[0]
    for cut in range(0, len(full), 17):
        dec = core.BatchDecoder([full[:cut]])
        try:
            for _ in range(300):
                dec.decode_probs(p)
        except CodecError:
            pass


def test_empty_step():
    enc = core.BatchEncoder(2)
    enc.encode_probs(np.ones((0, 5), np.float32), [], rows=[])
    enc.encode(
        np.zeros((0, 6), np.uint32), np.array([], np.int64), rows=np.array([], np.int64)
    )
    enc.encode_ranges(np.array([], np.uint32), np.array([], np.uint32), rows=[])
    assert enc.finish() == [b"", b""]
    dec = core.BatchDecoder([b"", b""])
    assert dec.decode_probs(np.ones((0, 5), np.float32), rows=[]).shape == (0,)
    assert dec.targets(rows=[]).shape == (0,)
