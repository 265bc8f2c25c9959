"""The context-mixing stage (csrc/cm.hpp, docs/FORMAT.md section 4f): its
squash / stretch tables, cm_trace against the pure-Python reference, the
ContextMixer's round trips (and its streams against the reference coder
driven by the reference stage), the cost the coder pays, and the refusals."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyllmcodec import _core
from pyllmcodec import _reference as ref
from pyllmcodec.errors import CodecError

TEXT = (
    b"The quick brown fox jumps over the lazy dog.\n"
    b"A language model assigns a probability to every next byte;\n"
    b"the coder turns those probabilities into a short code.\n"
    b"  Compression is prediction, and prediction is compression.\n"
)
GOLDEN_TEXT = Path(__file__).parent / "data" / "golden-cm.txt"
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _bits(s: int) -> list[int]:
    return [(s >> (7 - j)) & 1 for j in range(8)]


def _lm_bits(cdf, s: int) -> list[int]:
    """The model's P(bit = 1) for byte s's eight bits, MSB first (cm_lm_bit on its path)."""
    lo, hi, out = 0, 256, []
    for y in _bits(s):
        out.append(ref.cm_lm_bit(cdf, lo, hi))
        mid = (lo + hi) >> 1
        lo, hi = (mid, hi) if y else (lo, mid)
    return out


def _cost_bits(probs, symbols) -> float:
    """The ideal code length of the bytes under the stage's P(bit = 1) (units 2**-16)."""
    total = 0.0
    for row, s in zip(probs, symbols):
        for p, y in zip(row, _bits(int(s))):
            total -= math.log2((int(p) if y else 65536 - int(p)) / 65536)
    return total


# ------------------------------------------------------------ squash / stretch


def test_squash_knots_are_the_documented_formula():
    want = [min(65535, max(1, round(65536 / (1 + math.exp(-(i - 48) / 4))))) for i in range(97)]
    assert list(ref.CM_SQUASH_KNOTS) == want


def test_squash_is_monotone_and_in_range():
    sq = [ref.cm_squash(d) for d in range(-3072, 3073)]
    assert all(1 <= p <= 65535 for p in sq)
    assert all(a <= b for a, b in itertools.pairwise(sq))
    assert sq[0] == 1 and ref.cm_squash(0) == 32768 and sq[-1] == 65535
    assert ref.cm_squash(-10**6) == 1 and ref.cm_squash(10**6) == 65535  # clamped
    assert [ref.cm_squash(64 * (i - 48)) for i in range(97)] == list(ref.CM_SQUASH_KNOTS)  # the knots themselves


def test_stretch_is_the_scan_of_squash():
    t = ref.cm_stretch_table()
    assert len(t) == 65536
    assert all(-3071 <= d <= 3071 for d in t)
    assert all(a <= b for a, b in itertools.pairwise(t))
    for d in range(-3071, 3072):
        assert ref.cm_stretch(ref.cm_squash(d)) <= d
    # the smallest d with squash(d) >= p (squash(3071) = 65535, so there always is one)
    for p in range(65536):
        d = t[p]
        assert ref.cm_squash(d) >= p
        assert d == -3071 or ref.cm_squash(d - 1) < p
    assert ref.cm_stretch(32768) == 0 and ref.cm_stretch(1) == -3071


def test_a_fresh_stage_passes_the_model_through_squash_stretch_and_the_apms():
    """A fresh state's first prediction is a function of p_lm alone (weights
    65536 on the model, APM knots squash(192 j - 3072)): the C++ tables
    agree with cm_squash / cm_stretch where the knots and the scan matter."""
    def first(p_lm: int) -> int:
        st_ = ref.cm_stretch(p_lm)
        pos = st_ + 3072
        j, f = pos // 192, pos % 192
        a0, a1 = ref.cm_squash(192 * j - 3072), ref.cm_squash(192 * (j + 1) - 3072)
        pa = (a0 * (192 - f) + a1 * f) // 192
        return max(1, min(65535, (2 * ref.cm_squash(st_) + 6 * pa) >> 3))

    ps = sorted({1, 2, 3, 100, 32767, 32768, 32769, 65000, 65533, 65534, 65535}
                | {ref.CM_SQUASH_KNOTS[i] for i in range(0, 97, 6)} | set(range(1, 65536, 4099)))
    sym = np.zeros(1, dtype=np.int64)
    for p in ps:
        got = _core.cm_trace(np.full((1, 8), p, dtype=np.uint16), sym, table_bits=10)
        assert int(got[0, 0]) == first(p), p


# ------------------------------------------------------------ cm_trace == reference


@st.composite
def trace_cases(draw):
    n_chunks = draw(st.integers(1, 4))
    lens = [draw(st.integers(0, 60)) for _ in range(n_chunks)]
    kind = draw(st.sampled_from(["bytes", "text", "few"]))
    pk = draw(st.sampled_from(["random", "extreme", "right", "model"]))
    seed = draw(st.integers(0, 2**32 - 1))
    spec = dict(shared=draw(st.booleans()), table_bits=draw(st.integers(10, 12)),
                limit=draw(st.sampled_from([1, 2, 255])), lr=draw(st.sampled_from([1, 8, 128])),
                kind=draw(st.sampled_from([1, 2, 3])), wave=draw(st.integers(0, 3)), keep=draw(st.booleans()))
    if spec["kind"] == 3:  # cm3's priors: none, the shipped bundle's, or any in range
        pri = draw(st.sampled_from([None, "shipped", "random"]))
        if pri == "shipped":
            spec["priors"] = _shipped_priors()
        elif pri == "random":
            spec["priors"] = np.random.default_rng(seed).integers(-(1 << 24), (1 << 24) + 1, _core.CM3_PRIOR_WEIGHTS)
    return lens, kind, pk, seed, spec


def _shipped_priors():
    """The default bundle's cm3 priors (its manifest's codec.cm)."""
    import json

    import pyllmcodec.models

    mf = Path(pyllmcodec.models.__file__).parent / "default-exact" / "manifest.json"
    return np.array(json.loads(mf.read_text())["codec"]["cm"]["weights"], dtype=np.int64)


def _trace_inputs(lens, kind, pk, seed):
    rng = np.random.default_rng(seed)
    n = sum(lens)
    if kind == "bytes":
        data = rng.integers(0, 256, size=n)
    elif kind == "text":
        start = int(rng.integers(len(TEXT)))
        data = np.frombuffer((TEXT * 4)[start:start + n], dtype=np.uint8).astype(np.int64)
    else:
        data = rng.choice(np.frombuffer(b"ab \n", dtype=np.uint8), size=n).astype(np.int64)
    bits = np.array([_bits(int(s)) for s in data], dtype=np.int64).reshape(n, 8)
    if pk == "random":
        p = rng.integers(1, 65536, size=(n, 8))
    elif pk == "extreme":
        p = rng.choice(np.array([1, 2, 32768, 65534, 65535]), size=(n, 8))
    elif pk == "right":  # a confident model, right 90% of the time
        right = rng.random((n, 8)) < 0.9
        p = np.where(bits == right, 65535, 1)
    else:  # a model's table, quantized and split into bits
        w = rng.integers(0, 2**24, size=(n, 256)).astype(np.uint32)
        w[np.arange(n), data] += np.uint32(2**26)
        cdf = _core.quantize_int(w, 30)
        p = np.array([_lm_bits(cdf[k], int(data[k])) for k in range(n)]).reshape(n, 8)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return p.astype(np.uint16), data.astype(np.int64), offsets


@SLOW
@given(trace_cases())
def test_trace_matches_reference(case):
    lens, kind, pk, seed, spec = case
    p, data, offsets = _trace_inputs(lens, kind, pk, seed)
    got = _core.cm_trace(p, data, offsets, **spec)
    assert got.dtype == np.uint16 and got.shape == (len(data), 8)
    want = ref.cm_trace_ref(p, data, offsets, **spec)
    assert got.tolist() == want


@pytest.mark.parametrize("spec", [dict(shared=True, table_bits=10), dict(shared=False, table_bits=16, lr=128),
                                  dict(shared=True, table_bits=12, limit=1, lr=1),
                                  dict(shared=True, table_bits=10, kind=2),
                                  dict(shared=True, table_bits=11, kind=2, wave=2, keep=True),
                                  dict(shared=False, table_bits=12, kind=2, wave=1),
                                  dict(shared=True, table_bits=10, kind=3),
                                  dict(shared=True, table_bits=11, kind=3, wave=2, keep=True),
                                  dict(shared=False, table_bits=12, kind=3, wave=1, limit=2, lr=128)])
def test_trace_matches_reference_on_text(spec):
    """Words, repeats, case and line starts (the word and word-pair contexts),
    with the model's extremes 1 and 65535 right and wrong."""
    data = np.frombuffer(TEXT * 3, dtype=np.uint8).astype(np.int64)
    n = len(data)
    rng = np.random.default_rng(7)
    bits = np.array([_bits(int(s)) for s in data])
    u = rng.random((n, 8))
    p = np.where(u < 0.6, np.where(bits == 1, 65535, 1), np.where(u < 0.7, np.where(bits == 1, 1, 65535),
                                                                 rng.integers(1, 65536, size=(n, 8))))
    p = p.astype(np.uint16)
    offsets = np.array([0, n // 3, n // 3, 2 * n // 3 + 5, n])
    got = _core.cm_trace(p, data, offsets, **spec)
    assert got.tolist() == ref.cm_trace_ref(p, data, offsets, **spec)
    # one chunk (offsets=None) is one chunk from 0 to n
    assert np.array_equal(_core.cm_trace(p[:100], data[:100], **spec),
                          _core.cm_trace(p[:100], data[:100], [0, 100], **spec))


@pytest.mark.parametrize("table_bits,kind", [(13, 1), (18, 1), (13, 3), (24, 3)])
def test_trace_matches_reference_with_big_tables(table_bits, kind):
    """Random bytes visit thousands of APM 2 contexts (c0 | last byte << 8,
    hashed to min(12, table_bits - 2) bits) and, in cm3, every map cell;
    table_bits 24 is cm3's long-mode most."""
    rng = np.random.default_rng(table_bits)
    data = rng.integers(0, 256, size=1200)
    p = rng.integers(1, 65536, size=(1200, 8)).astype(np.uint16)
    offsets = [0, 500, 1200]
    got = _core.cm_trace(p, data, offsets, shared=True, table_bits=table_bits, kind=kind)
    assert got.tolist() == ref.cm_trace_ref(p, data, offsets, shared=True, table_bits=table_bits, kind=kind)


def test_cm3_learns_more_than_cm2_on_text():
    """cm3 (checked buckets, counter maps, mixer 3 by contexts found) beside
    cm2 on 4,000 bytes of prose with an uninformed model: 3.481 against
    3.588 bits/byte at table_bits 16 (docs/MODEL.md has the corpora's).  The
    reference agrees on every bit of a cut where buckets are taken and lost."""
    data = np.frombuffer(GOLDEN_TEXT.read_bytes(), dtype=np.uint8).astype(np.int64)
    n = len(data)
    p = np.full((n, 8), 32768, dtype=np.uint16)
    c2 = _cost_bits(_core.cm_trace(p, data, table_bits=16, kind=2), data) / n
    c3 = _cost_bits(_core.cm_trace(p, data, table_bits=16, kind=3), data) / n
    assert c3 < c2 - 0.05, (c2, c3)
    got = _core.cm_trace(p[:1500], data[:1500], table_bits=10, kind=3)
    assert got.tolist() == ref.cm_trace_ref(p[:1500], data[:1500], table_bits=10, kind=3)


def test_cm2_finds_repeats_across_chunks_and_carried_waves():
    """cm2's match model over the group's ring: a text repeated in a later
    chunk (or, carried, a later wave) costs less than under cm1, which sees
    the same inputs otherwise; the reference agrees on every bit."""
    text = np.frombuffer(TEXT, dtype=np.uint8).astype(np.int64)
    m = len(text)
    data = np.concatenate([text, text])
    p = np.full((len(data), 8), 32768, dtype=np.uint16)
    offsets = [0, m, 2 * m]

    def cost(out):
        y = (data[m:, None] >> (7 - np.arange(8))) & 1
        q = np.where(y == 1, out, 65536 - out.astype(np.int64)) / 65536.0
        return -np.log2(q).sum()

    for spec in (dict(shared=True), dict(shared=True, wave=1, keep=True)):
        c1 = _core.cm_trace(p, data, offsets, table_bits=12, kind=1, **spec)
        c2 = _core.cm_trace(p, data, offsets, table_bits=12, kind=2, **spec)
        assert cost(c2[m:]) < 0.8 * cost(c1[m:])
        assert c2.tolist() == ref.cm_trace_ref(p, data, offsets, table_bits=12, kind=2, **spec)
    # without the carried state a second wave starts cold: no match into the first
    cold = _core.cm_trace(p, data, offsets, table_bits=12, kind=2, shared=True, wave=1)
    assert np.array_equal(cold[m:], cold[:m])


def test_trace_learns():
    """An uninformed model (p_lm = 1/2) on repetitive text: the stage's own
    contexts take the cost far below 8 bits a byte, and a shared state beats
    a state per chunk on chunks that repeat each other."""
    data = np.frombuffer(TEXT * 4, dtype=np.uint8).astype(np.int64)
    n = len(data)
    p = np.full((n, 8), 32768, dtype=np.uint16)
    alone = _cost_bits(_core.cm_trace(p, data), data) / n
    assert alone < 3.0
    off = np.arange(0, n + 1, len(TEXT))
    per_chunk = _cost_bits(_core.cm_trace(p, data, off, shared=False), data)
    shared = _cost_bits(_core.cm_trace(p, data, off, shared=True), data)
    assert shared < 0.8 * per_chunk


def test_trace_of_nothing():
    empty = _core.cm_trace(np.zeros((0, 8), dtype=np.uint16), np.zeros(0, dtype=np.int64))
    assert empty.shape == (0, 8)
    assert ref.cm_trace_ref([], []) == []


# ------------------------------------------------------------ ContextMixer sessions


def _weights(rng, m: int, kind: str) -> np.ndarray:
    if kind == "table":  # an exact model's rows: exp-table values <= 2**24
        w = rng.integers(0, 2**24 + 1, size=(m, 256), dtype=np.uint64)
    elif kind == "wide":
        w = rng.integers(0, 2**32, size=(m, 256), dtype=np.uint64)
    elif kind == "sparse":  # mostly zeros
        w = rng.integers(0, 5, size=(m, 256), dtype=np.uint64) * (rng.random((m, 256)) < 0.05)
    else:  # "one": all the mass on one symbol (the others get the quantizer's floor of 1)
        w = np.zeros((m, 256), dtype=np.uint64)
        w[np.arange(m), rng.integers(0, 256, size=m)] = rng.integers(1, 2**32, size=m)
    w = w.astype(np.uint32)
    w[np.arange(m), rng.integers(0, 256, size=m)] |= 1  # no row sums to zero
    return w


def _session(seed: int, n: int, T: int, with_match: bool, with_feed: bool) -> list[dict]:
    """Steps of a wave: feeds (a dictionary) and coded steps, each on all the
    rows or on a subset (increasing or in any order)."""
    rng = np.random.default_rng(seed)
    text = np.frombuffer(TEXT * 8, dtype=np.uint8).astype(np.int64)
    steps: list[dict] = []
    for t in range(T):
        mode = rng.integers(3)
        if mode == 0:
            rows = None
        else:
            rows = rng.choice(n, int(rng.integers(1, n + 1)), replace=False)
            if mode == 1:
                rows = np.sort(rows)
        m = n if rows is None else len(rows)
        if with_feed and (t < 3 or rng.random() < 0.1):
            steps.append(dict(feed=True, rows=rows, s=text[(t * 7 + np.arange(m)) % len(text)]))
            continue
        w = _weights(rng, m, str(rng.choice(["table", "wide", "sparse", "one"])))
        s = np.where(rng.random(m) < 0.5, text[(t + 13 * np.arange(m)) % len(text)], w.argmax(axis=1))
        s = np.where(rng.random(m) < 0.1, rng.integers(0, 256, size=m), s).astype(np.int64)
        step = dict(feed=False, rows=rows, w=w, s=s, match=None, q=None)
        if with_match and rng.random() < 0.6:
            match = np.where(rng.random(m) < 0.5, np.where(rng.random(m) < 0.5, s, rng.integers(0, 256, size=m)), -1)
            q = rng.choice(np.array([1, 32, 40000, 65504, 65535]), size=m).astype(np.uint32)
            step["match"], step["q"] = match.astype(np.int64), np.where(match >= 0, q, 0).astype(np.uint32)
        steps.append(step)
    return steps


def _cm(groups, bits) -> _core.ContextMixer:
    """A stage whose rows learn in groups: bits an int (one group) or one table size per group."""
    if isinstance(groups, int):
        groups = [0] * groups
    return _core.ContextMixer(np.asarray(groups, dtype=np.int64), [bits] if isinstance(bits, int) else list(bits))


def _encode(steps, groups, P: int, bits) -> list[bytes]:
    cm = _cm(groups, bits)
    enc = _core.BatchEncoder(cm.n_rows, precision=P)
    for st_ in steps:
        if st_["feed"]:
            cm.feed(st_["s"], rows=st_["rows"])
        else:
            cm.encode(enc, st_["w"], st_["s"], rows=st_["rows"], match=st_["match"], q=st_["q"])
    return enc.finish()


def _decode(streams, steps, groups, P: int, bits) -> list[np.ndarray]:
    cm = _cm(groups, bits)
    dec = _core.BatchDecoder(streams, precision=P)
    out = []
    for st_ in steps:
        if st_["feed"]:
            cm.feed(st_["s"], rows=st_["rows"])
        else:
            out.append(cm.decode(dec, st_["w"], rows=st_["rows"], match=st_["match"], q=st_["q"]))
    return out


def _encode_ref(steps, groups: list[int], P: int, bits: list[int]) -> list[bytes]:
    """The streams as the reference coder writes them, driven by the reference
    stage: one state per group, one history per row."""
    n = len(groups)
    models = [ref.CmModel(b) for b in bits]
    ctx = [ref.CmRowCtx() for _ in range(n)]
    encs = [ref.Encoder(16) for _ in range(n)]  # the stage codes every bit at precision 16
    for st_ in steps:
        rows = range(len(st_["s"])) if st_["rows"] is None else [int(r) for r in st_["rows"]]
        if st_["feed"]:
            for r, s in zip(rows, st_["s"]):
                models[groups[r]].feed(ctx[r], int(s))
            continue
        for k, r in enumerate(rows):
            m = -1 if st_["match"] is None else int(st_["match"][k])
            q = 0 if st_["q"] is None else int(st_["q"][k])
            cdf = ref.quantize_int_row(st_["w"][k].tolist(), P, m, q, k)
            for p_lm, y in zip(_lm_bits(cdf, int(st_["s"][k])), _bits(int(st_["s"][k]))):
                p = models[groups[r]].predict(ctx[r], p_lm)
                if y:
                    encs[r].put(0, p)
                else:
                    encs[r].put(p, 65536 - p)
                models[groups[r]].update(ctx[r], y)
    return [e.finish() for e in encs]


def _coded(steps) -> list[np.ndarray]:
    return [st_["s"] for st_ in steps if not st_["feed"]]


@st.composite
def waves(draw, max_rows: int = 6, min_steps: int = 8, max_steps: int = 80, max_bits: int = 12):
    """A wave: coder precision, the rows' groups and the groups' table sizes, steps."""
    P = draw(st.sampled_from([16, 24, 30]))
    n = draw(st.integers(1, max_rows))
    G = draw(st.integers(1, min(n, 3)))
    groups = draw(st.lists(st.integers(0, G - 1), min_size=n, max_size=n))
    bits = draw(st.lists(st.integers(10, max_bits), min_size=G, max_size=G))
    T = draw(st.integers(min_steps, max_steps))
    steps = _session(draw(st.integers(0, 2**32 - 1)), n, T, draw(st.booleans()), draw(st.booleans()))
    return P, groups, bits, steps


def _restrict(steps, members: list[int]) -> list[dict]:
    """The steps as a wave of only the rows `members` (renumbered in that order) sees them."""
    out = []
    for st_ in steps:
        rows = list(range(len(st_["s"]))) if st_["rows"] is None else [int(r) for r in st_["rows"]]
        ks = [k for k, r in enumerate(rows) if r in members]
        if not ks:
            continue
        sub = dict(st_, rows=np.array([members.index(rows[k]) for k in ks]), s=st_["s"][ks])
        if not st_["feed"]:
            sub["w"] = st_["w"][ks]
            if st_["match"] is not None:
                sub["match"], sub["q"] = st_["match"][ks], st_["q"][ks]
        out.append(sub)
    return out


@SLOW
@given(waves())
def test_context_mixer_round_trips(wave):
    P, groups, bits, steps = wave
    streams = _encode(steps, groups, P, bits)
    got = _decode(streams, steps, groups, P, bits)
    assert [g.tolist() for g in got] == [s.tolist() for s in _coded(steps)]
    # a group's rows learn only from each other: the group coded alone gives its rows' streams
    for g in sorted(set(groups)):
        members = [r for r in range(len(groups)) if groups[r] == g]
        sub = _restrict(steps, members)
        alone = _encode(sub, len(members), P, bits[g])
        assert alone == [streams[r] for r in members]
        got = _decode(alone, sub, len(members), P, bits[g])
        assert [x.tolist() for x in got] == [s.tolist() for s in _coded(sub)]


@SLOW
@given(waves(max_rows=3, min_steps=4, max_steps=30, max_bits=19))
def test_context_mixer_streams_are_the_reference_coders(wave):
    """Byte for byte: encode() is quantize_int + cm_lm_bit + the stage's
    predict / update + the range coder at precision 16, rows in the order
    given, one state per group."""
    P, groups, bits, steps = wave
    assert _encode(steps, groups, P, bits) == _encode_ref(steps, groups, P, bits)


def _text_session(n: int, T: int, seed: int = 3) -> tuple[list[dict], np.ndarray]:
    """n rows of text, each from its own place, under a rough order-1 model of it."""
    rng = np.random.default_rng(seed)
    text = np.frombuffer(TEXT * 20, dtype=np.uint8).astype(np.int64)
    table = rng.integers(1, 2**10, size=(256, 256)).astype(np.uint32)
    np.add.at(table, (text[:-1], text[1:]), np.uint32(2**14))
    data = np.stack([text[37 * r:37 * r + T] for r in range(n)])  # [n, T]
    steps = []
    prev = np.full(n, ord("\n"))
    for t in range(T):
        steps.append(dict(feed=False, rows=None, w=table[prev], s=data[:, t], match=None, q=None))
        prev = data[:, t]
    return steps, data


@pytest.mark.parametrize("P", [16, 24, 30])
def test_the_coder_pays_what_cm_trace_predicts(P):
    """The streams cost what cm_trace's probabilities (fed the same model's
    bits, chunks sharing one state, a step coding every chunk's byte t in
    chunk order) say they cost, within a few bytes: encode() codes with the
    stage's probabilities."""
    n, T = 3, 400
    steps, data = _text_session(n, T)
    streams = _encode(steps, n, P, 12)
    p_lm = np.zeros((n, T, 8), dtype=np.uint16)
    for t, st_ in enumerate(steps):
        cdf = _core.quantize_int(st_["w"], P)
        for r in range(n):
            p_lm[r, t] = _lm_bits(cdf[r], int(data[r, t]))
    probs = _core.cm_trace(p_lm.reshape(n * T, 8), data.reshape(-1), np.arange(0, n * T + 1, T), shared=True,
                           table_bits=12)
    for r in range(n):
        ideal = _cost_bits(probs[r * T:(r + 1) * T], data[r])
        assert abs(8 * len(streams[r]) - ideal) <= 2 * 8, (r, len(streams[r]), ideal / 8)
        # neither the model alone nor a state per chunk is what was coded
        assert _cost_bits(p_lm[r], data[r]) > ideal + 20 * 8
    unshared = _core.cm_trace(p_lm.reshape(n * T, 8), data.reshape(-1), np.arange(0, n * T + 1, T), table_bits=12)
    assert _cost_bits(unshared[:T], data[0]) > 8 * len(streams[0]) + 20 * 8
    # a single row: its own chunk
    one = _encode([dict(st_, w=st_["w"][:1], s=st_["s"][:1]) for st_ in steps], 1, P, 12)[0]
    probs1 = _core.cm_trace(p_lm[0], data[0], table_bits=12)
    assert abs(8 * len(one) - _cost_bits(probs1, data[0])) <= 2 * 8


def test_the_stage_is_in_the_loop():
    """Decoding with another table size, or with another weight row at one
    step, does not give the bytes back: both decide the probabilities."""
    n, T = 2, 300
    steps, data = _text_session(n, T)
    streams = _encode(steps, n, 24, 12)
    assert np.array_equal(np.stack(_decode(streams, steps, n, 24, 12), axis=1), data)

    def decoded(steps_, table_bits):
        try:
            return np.stack(_decode(streams, steps_, n, 24, table_bits), axis=1)
        except CodecError:  # a decoder may also notice; it need not
            return None

    for tb in (11, 13):
        got = decoded(steps, tb)
        assert got is None or not np.array_equal(got, data)
    other = [dict(s) for s in steps]
    other[5] = dict(other[5], w=np.roll(other[5]["w"], 1, axis=1))  # one step's table, shifted by a symbol
    got = decoded(other, 12)
    assert got is None or not np.array_equal(got, data)
    assert got is None or np.array_equal(got[:, :5], data[:, :5])  # the steps before it are intact


@pytest.mark.parametrize("groups", [[0, 0], [0, 1]])
def test_row_order_matters_within_a_group_only(groups):
    """Rows of one group take turns on one state: the decoder must give the
    encoder's order.  Rows of different groups do not see each other."""
    T = 150
    steps, data = _text_session(2, T, seed=11)
    flipped = [dict(st_, rows=np.array([1, 0]), w=st_["w"][::-1].copy(), s=st_["s"][::-1].copy()) for st_ in steps]
    streams = _encode(flipped, groups, 24, [12, 12])
    back = np.stack(_decode(streams, flipped, groups, 24, [12, 12]), axis=1)[::-1]  # in the encoder's order
    assert np.array_equal(back, data)
    try:
        other = np.stack(_decode(streams, steps, groups, 24, [12, 12]), axis=1)  # rows [0, 1]: the other order
    except CodecError:
        other = None
    assert (other is not None and np.array_equal(other, data)) == (groups == [0, 1])


def test_properties():
    cm = _cm([0, 1, 0], [10, 12])
    assert cm.n_rows == 3 and cm.table_bits == [10, 12]
    assert _cm(1, 10).table_bits == [10]
    # 9 tables of 2**table_bits uint32 per group (APM 2 is 2**12 contexts from table_bits 14 on)
    assert _cm(3, 19).nbytes - _cm(3, 18).nbytes == 9 * 4 * (2**19 - 2**18)
    assert 300_000 < _cm(1, 18).nbytes - 9 * 4 * 2**18 < 320_000  # the APMs (256 + 4096) x 33 uint16, mixers 27 KB
    row = _cm(2, 18).nbytes - _cm(1, 18).nbytes  # a row's history
    assert 0 < row < 1024
    state = _cm(1, 18).nbytes - row
    assert _cm([0, 1, 1], [18, 18]).nbytes == 2 * state + 3 * row  # a state per group
    assert _cm(4, 10).nbytes > _cm(3, 10).nbytes  # a history per row


# ------------------------------------------------------------ refusals


def _good(m: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return _weights(rng, m, "table"), rng.integers(0, 256, size=m)


def test_refusals_of_the_constructor():
    for tb in (9, 25):
        with pytest.raises(ValueError, match=r"table_bits\[1\] must be in 10\.\.24"):
            _cm([0, 1], [12, tb])
        with pytest.raises(ValueError, match=r"table_bits must be in 10\.\.24"):
            ref.CmModel(tb)
    with pytest.raises(ValueError, match="at least one row"):
        _cm([], [10])
    with pytest.raises(ValueError, match="at least one group"):
        _cm([0], [])
    with pytest.raises(ValueError, match=r"groups\[1\] = 2 is not a group index in \[0, 2\)"):
        _cm([0, 2], [10, 10])
    with pytest.raises(ValueError, match=r"groups\[0\] = -1 is not a group index"):
        _cm([-1], [10])
    with pytest.raises(TypeError, match="groups must be an integer array"):
        _core.ContextMixer(np.zeros(2), [10])


def test_refusals_of_encode_decode_and_feed():
    cm = _cm(2, 10)
    enc = _core.BatchEncoder(2, precision=24)
    dec = _core.BatchDecoder([b"", b""], precision=24)
    w, s = _good()
    cases = [
        (dict(weights=w[:, :255].copy()), ValueError, "rows need 256 weights, got 255"),
        (dict(weights=np.concatenate([w, w[:, :1]], axis=1)), ValueError, "rows need 256 weights, got 257"),
        (dict(weights=np.stack([w[0], np.zeros(256, np.uint32)])), ValueError, "weights row 1 sums to zero"),
        (dict(rows=[0, 2]), ValueError, r"rows\[1\] = 2 is not a context-mixing row index in \[0, 2\)"),
        (dict(rows=[-1, 0]), ValueError, r"rows\[0\] = -1 is not a context-mixing row index"),
        (dict(rows=[1, 1]), ValueError, r"rows\[1\] = 1 appears twice"),
        (dict(rows=[0]), ValueError, "rows has 1 entries but weights has 2 rows"),
        (dict(weights=w[:1]), ValueError, "got 1 rows for 2 context-mixing rows"),
        (dict(match=[-1, -1]), ValueError, "pass both match and q, or neither"),
        (dict(q=np.array([5, 5], np.uint32)), ValueError, "pass both match and q, or neither"),
        (dict(match=[256, -1], q=np.array([5, 5], np.uint32)), ValueError, r"match\[0\] = 256 is neither -1"),
        (dict(match=[-1, 3], q=np.array([5, 0], np.uint32)), ValueError, r"q\[1\] = 0 must be in 1\.\.65535"),
        (dict(weights=w.astype(np.int64)), TypeError, "uint32"),
    ]
    for kw, exc, msg in cases:
        args = dict(weights=w, rows=None, match=None, q=None) | kw
        with pytest.raises(exc, match=msg):
            cm.encode(enc, args["weights"], s[:len(args["weights"])], rows=args["rows"], match=args["match"],
                      q=args["q"])
        with pytest.raises(exc, match=msg):
            cm.decode(dec, args["weights"], rows=args["rows"], match=args["match"], q=args["q"])
    for bad in (256, -1):
        with pytest.raises(ValueError, match=rf"symbols\[1\] = {bad} is outside the alphabet \[0, 256\)"):
            cm.encode(enc, w, [5, bad])
        with pytest.raises(ValueError, match=rf"symbols\[1\] = {bad} is outside the alphabet \[0, 256\)"):
            cm.feed([5, bad])
    with pytest.raises(ValueError, match="symbols has 3 entries but weights has 2 rows"):
        cm.encode(enc, w, [1, 2, 3])
    with pytest.raises(ValueError, match=r"rows\[1\] = 0 appears twice"):
        cm.feed([1, 2], rows=[0, 0])
    with pytest.raises(ValueError, match="got 1 rows for 2 context-mixing rows"):
        cm.feed([1])
    # the stage has more rows than the coder has streams: the coder refuses
    big = _cm(3, 10)
    with pytest.raises(ValueError, match=r"rows\[0\] = 2 is not a stream index"):
        big.encode(enc, w[:1], s[:1], rows=[2])
    with pytest.raises(ValueError, match=r"rows\[0\] = 2 is not a stream index"):
        big.decode(dec, w[:1], rows=[2])


def test_refusals_of_cm_trace():
    p = np.full((4, 8), 100, dtype=np.uint16)
    s = np.arange(4)
    with pytest.raises(ValueError, match=r"p_lm entries must be in 1\.\.65535"):
        _core.cm_trace(np.where(np.arange(8) == 3, 0, p).astype(np.uint16), s)
    with pytest.raises(ValueError, match=r"p_lm must be \[n, 8\]"):
        _core.cm_trace(p[:, :7].copy(), s)
    with pytest.raises(ValueError, match="must be 2-D"):
        _core.cm_trace(p.reshape(-1), np.arange(32))
    with pytest.raises(TypeError, match="uint16"):
        _core.cm_trace(p.astype(np.uint32), s)
    with pytest.raises(ValueError, match="symbols has 3 entries but p_lm has 4 rows"):
        _core.cm_trace(p, s[:3])
    for bad in (256, -1):
        with pytest.raises(ValueError, match=r"symbols must be bytes \(0\.\.255\)"):
            _core.cm_trace(p, np.array([0, 1, bad, 2]))
    for off in ([1, 4], [0, 3], [0], [], [0, 2, 5]):
        with pytest.raises(ValueError, match="offsets must run from 0 to n"):
            _core.cm_trace(p, s, off)
    for off in ([0, 3, 1, 4], [0, 2, 5, 4]):
        with pytest.raises(ValueError, match="offsets must not decrease"):
            _core.cm_trace(p, s, off)
    for kw, msg in ((dict(table_bits=9), "table_bits must be in 10..24"),
                    (dict(table_bits=25), "table_bits must be in 10..24"),
                    (dict(limit=0), "limit must be in 1..1023"), (dict(limit=1024), "limit must be in 1..1023"),
                    (dict(lr=0), "lr must be in 1..128"), (dict(lr=129), "lr must be in 1..128")):
        with pytest.raises(ValueError, match=msg):
            _core.cm_trace(p, s, **kw)
        with pytest.raises(ValueError, match=msg):
            ref.cm_trace_ref(p, s, **kw)
    # the reference refuses alike
    with pytest.raises(ValueError, match=r"p_lm entries must be in 1\.\.65535"):
        ref.cm_trace_ref(np.where(np.arange(8) == 3, 0, p), s)
    with pytest.raises(ValueError, match="offsets must not decrease"):
        ref.cm_trace_ref(p, s, [0, 3, 1, 4])
    with pytest.raises(ValueError, match="offsets must run from 0 to n"):
        ref.cm_trace_ref(p, s, [0, 3])
    with pytest.raises(ValueError, match=r"symbols must be bytes"):
        ref.cm_trace_ref(p, [0, 1, 256, 2])


def test_a_refused_call_codes_nothing():
    """Every check runs before any stream or state moves: after a refused
    encode / decode / feed, the wave goes on as if the call never happened."""
    n, T = 3, 40
    steps, data = _text_session(n, T, seed=5)
    clean = _encode(steps, [0, 1, 0], 24, [10, 11])

    def bad_calls(w, s):
        zero = w.copy()
        zero[1] = 0
        sym = s.copy()
        sym[2] = 300
        yield dict(weights=zero, symbols=s)  # the second row sums to zero
        yield dict(weights=w, symbols=sym)  # the third symbol is no byte
        yield dict(weights=w, symbols=s, rows=[0, 2, 2])
        yield dict(weights=w, symbols=s, match=[-1, 7, -1], q=np.array([0, 0, 5], np.uint32))
        yield dict(weights=w[:, :200].copy(), symbols=s)

    cm = _cm([0, 1, 0], [10, 11])
    enc = _core.BatchEncoder(n, precision=24)
    for t, st_ in enumerate(steps):
        if t in (0, 7, T - 1):
            for kw in bad_calls(st_["w"], st_["s"]):
                with pytest.raises(ValueError):
                    cm.encode(enc, kw["weights"], kw["symbols"], rows=kw.get("rows"), match=kw.get("match"),
                              q=kw.get("q"))
            with pytest.raises(ValueError):
                cm.feed([1, 2, 256])
        cm.encode(enc, st_["w"], st_["s"])
    assert enc.finish() == clean

    cm = _cm([0, 1, 0], [10, 11])
    dec = _core.BatchDecoder(clean, precision=24)
    out = []
    for t, st_ in enumerate(steps):
        if t in (0, 7, T - 1):
            for kw in bad_calls(st_["w"], st_["s"]):
                if not np.array_equal(kw["symbols"], st_["s"]):
                    continue  # decode has no symbols to refuse
                with pytest.raises(ValueError):
                    cm.decode(dec, kw["weights"], rows=kw.get("rows"), match=kw.get("match"), q=kw.get("q"))
            with pytest.raises(ValueError):
                cm.feed([1, 2, 256])
        out.append(cm.decode(dec, st_["w"]))
    assert np.array_equal(np.stack(out, axis=1), data)


# ------------------------------------------------------------ priors (cm3's fitted initial weights)


def test_priors_start_the_mixers_and_a_trace_gives_its_weights():
    """A fresh cm3 state's three mixers start from the priors (csrc/cm.hpp
    Params::priors); cm_trace(weights=True) gives a state's final weights in
    the priors' layout, as the reference does, and they continue where the
    state stopped: a state fed its own weights codes the next text as if
    fitted there (training/fit_cm_priors.py)."""
    data = np.frombuffer(TEXT * 2, dtype=np.uint8).astype(np.int64)
    n = len(data)
    rng = np.random.default_rng(3)
    p = rng.integers(20000, 45000, size=(n, 8)).astype(np.uint16)
    offsets = [0, n // 2, n]
    spec = dict(shared=True, table_bits=11, kind=3)
    out, w = _core.cm_trace(p, data, offsets, weights=True, **spec)
    rout, rw = ref.cm_trace_ref(p, data, offsets, weights=True, **spec)
    assert out.tolist() == rout and w.dtype == np.int32 and w.tolist() == rw
    assert len(w) == _core.CM3_PRIOR_WEIGHTS == (48 + 256 + 80) * 22
    assert not np.array_equal(w, _core.cm_trace(p[:1], data[:1], weights=True, **spec)[1])  # it learned
    # from the priors: the first prediction changes, and C++ and the reference agree
    fresh = _core.cm_trace(p, data, offsets, **spec)
    warm = _core.cm_trace(p, data, offsets, priors=w, **spec)
    assert warm[0, 0] != fresh[0, 0]
    assert warm.tolist() == ref.cm_trace_ref(p, data, offsets, priors=w, **spec)
    # the fresh weights are the model alone: priors equal to them change nothing
    alone = np.zeros(_core.CM3_PRIOR_WEIGHTS, dtype=np.int64)
    alone[::22] = 65536
    assert np.array_equal(_core.cm_trace(p, data, offsets, priors=alone, **spec), fresh)
    # what a state learned on text of a kind pays on more of it (the first bits/byte)
    y = np.array([_bits(int(b)) for b in data[n // 2:]])

    def cost(q):  # the second half's ideal bits
        q = q[n // 2:].astype(np.int64)
        return float(-np.log2(np.where(y == 1, q, 65536 - q) / 65536).sum())

    _, w1 = _core.cm_trace(p[:n // 2], data[:n // 2], weights=True, **spec)
    second = (p[n // 2:], data[n // 2:])
    assert cost(np.concatenate([p[:n // 2], _core.cm_trace(*second, priors=w1, **spec)])) < cost(
        np.concatenate([p[:n // 2], _core.cm_trace(*second, **spec)]))


def test_refusals_of_priors():
    p = np.full((4, 8), 100, dtype=np.uint16)
    s = np.arange(4)
    w = np.zeros(_core.CM3_PRIOR_WEIGHTS, dtype=np.int64)
    for kind in (1, 2):
        with pytest.raises(ValueError, match=r"priors are mixer weights of kind 3 \(cm3\)"):
            _core.cm_trace(p, s, kind=kind, priors=w)
        with pytest.raises(ValueError, match=r"priors are mixer weights of kind 3"):
            ref.cm_trace_ref(p, s, kind=kind, priors=w)
        with pytest.raises(ValueError, match=r"priors are mixer weights of kind 3"):
            _core.ContextMixer([0], [10], kind=kind, priors=w)
        with pytest.raises(ValueError, match=r"weights=True needs kind 3"):
            _core.cm_trace(p, s, kind=kind, weights=True)
    for bad, msg in ((w[:-1], r"priors must be 8448 weights, got 8447"),
                     (np.concatenate([w, [0]]), r"priors must be 8448 weights, got 8449"),
                     (np.where(np.arange(len(w)) == 7, (1 << 24) + 1, w), r"priors\[7\] = 16777217 is outside"),
                     (np.where(np.arange(len(w)) == 9, -(1 << 24) - 1, w), r"priors\[9\] = -16777217 is outside"),
                     (np.where(np.arange(len(w)) == 5, 1 << 40, w), r"priors\[5\] = 1099511627776 is outside")):
        with pytest.raises(ValueError, match=msg):
            _core.cm_trace(p, s, kind=3, priors=bad)
        with pytest.raises(ValueError, match=msg):
            _core.ContextMixer([0, 0], [10], kind=3, priors=bad)
        with pytest.raises(ValueError, match="priors"):
            ref.cm_trace_ref(p, s, kind=3, priors=bad)
    with pytest.raises(TypeError, match="priors must be an integer array"):
        _core.cm_trace(p, s, kind=3, priors=w.astype(np.float64))
    with pytest.raises(ValueError, match="priors must be 1-D"):
        _core.ContextMixer([0], [10], kind=3, priors=w.reshape(2, -1))
    # in range, the extremes are taken
    edge = np.where(np.arange(len(w)) % 2 == 0, 1 << 24, -(1 << 24))
    assert _core.cm_trace(p, s, kind=3, priors=edge, table_bits=10).tolist() == ref.cm_trace_ref(
        p, s, kind=3, priors=edge, table_bits=10)
