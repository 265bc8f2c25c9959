"""The wave match (kind ``wave1``, csrc/wavematch.hpp, FORMAT.md section 4g):
the native state against the contract's Python reference, its cross-row
matches, its refusals, and its spec and header key."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmcodec import core
from pyllmcodec._reference import WaveMatchRef
from pyllmcodec.mixer import MixerSpec, WaveSpec, spec_from_json


def _run(seed: int, n_rows: int, V: int, max_len: int, long_len: int, min_len: int, hash_bits: int, rate: int,
         p_repeat: float) -> tuple[int, int]:
    """Drive core.WaveMatch and the reference with the same calls; returns
    (overrides, overrides that came from a match)."""
    rng = random.Random(seed)
    kw = dict(long_len=long_len, min_len=min_len, hash_bits=hash_bits, rate=rate)
    a = core.WaveMatch(n_rows, max_len, **kw)
    b = WaveMatchRef(n_rows, max_len, **kw)
    motif = [rng.randrange(V) for _ in range(9)]
    n_over = n_match = 0
    for t in range(max_len):
        rows = [r for r in range(n_rows) if rng.random() < 0.85]
        rng.shuffle(rows)  # any order of rows: the state follows the order given
        if not rows:
            continue
        w = np.array([[rng.choice([0, 1, 7, 1 << 16, 0xFFFFFFFF, rng.randrange(1 << 24)]) for _ in range(V)]
                      for _ in rows], dtype=np.uint32)
        m, q = a.mix_int(w, rows=np.array(rows))
        cells, _ = a.last_cells()
        for k, r in enumerate(rows):
            assert b.mix_int(w[k], r) == (int(m[k]), int(q[k])), (t, r)
            if m[k] >= 0:
                n_over += 1
                n_match += int(cells[r] >= 8 * 33)  # bucket >= 8: the guess came from the second match
        sy = [motif[(t + 2 * r) % 9] if rng.random() < p_repeat else rng.randrange(V) for r in rows]
        a.push(np.array(sy), rows=np.array(rows))
        for r, s in zip(rows, sy):
            b.push(s, r)
        assert all(a.length(r) == len(b.hist[r]) for r in range(n_rows))
    assert a.length(0) <= max_len
    return n_over, n_match


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(1, 4), V=st.integers(2, 24), max_len=st.integers(1, 48),
       long_len=st.integers(1, 6), min_len=st.integers(1, 5), hash_bits=st.integers(10, 12), rate=st.integers(1, 15),
       p_repeat=st.floats(0.0, 1.0))
def test_native_matches_the_reference(seed: int, n_rows: int, V: int, max_len: int, long_len: int, min_len: int,
                                      hash_bits: int, rate: int, p_repeat: float) -> None:
    _run(seed, n_rows, V, max_len, long_len, min_len, hash_bits, rate, p_repeat)


def test_repeats_give_match_overrides():
    n_over, n_match = _run(7, 3, 16, 120, 4, 2, 12, 6, 0.9)
    assert n_over > n_match > 20  # guesses of both matches


def test_a_row_continues_a_match_into_another_rows_tokens():
    wm = core.WaveMatch(2, 32, long_len=4, min_len=4)
    V = 50
    w = np.ones((1, V), dtype=np.uint32)
    seq = [3, 1, 4, 1, 5, 9, 2, 6]
    for s in seq:  # row 0 codes the sequence first
        wm.mix_int(w, rows=np.array([0]))
        wm.push(np.array([s]), rows=np.array([0]))
    guesses = []
    for s in seq[:6]:  # row 1 repeats its start: after 4 symbols it guesses from row 0
        m, q = wm.mix_int(w, rows=np.array([1]))
        guesses.append(int(m[0]))
        wm.push(np.array([s]), rows=np.array([1]))
    assert guesses[:4] == [-1] * 4 and guesses[4:] == [5, 9]
    m, q = wm.mix_int(w, rows=np.array([1]))
    assert int(m[0]) == 2 and 32 <= int(q[0]) <= 65504


def test_a_guess_at_the_end_of_a_row_still_being_coded_waits():
    # row 1 matches row 0's newest symbols: the place after them is not coded yet, so no guess
    wm = core.WaveMatch(2, 16, long_len=2, min_len=2)
    w = np.ones((2, 8), dtype=np.uint32)
    for a, b in ((1, 1), (2, 2)):
        wm.mix_int(w)
        wm.push(np.array([a, b]))
    m, _ = wm.mix_int(w)
    assert m.tolist() == [-1, -1]


def test_all_the_mass_on_the_guess_is_no_override():
    wm = core.WaveMatch(1, 8, long_len=1, min_len=1)
    w = np.array([[1, 2, 3, 4]], dtype=np.uint32)
    for s in (2, 2):
        wm.mix_int(w)
        wm.push(np.array([s]))
    m, q = wm.mix_int(w)  # the match guesses 2 after 2
    assert int(m[0]) == 2 and 32 <= int(q[0]) <= 65504
    wm.push(np.array([2]))
    m, q = wm.mix_int(np.array([[0, 0, 7, 0]], dtype=np.uint32))  # no other mass to move
    assert int(m[0]) == -1 and int(q[0]) == 0


def test_the_map_learns():
    # a guess that always comes gets a larger share than the model's
    wm = core.WaveMatch(1, 200)
    w = np.array([[40, 60, 0, 0]], dtype=np.uint32)  # the model gives symbol 1 0.6
    shares = []
    for _ in range(150):
        m, q = wm.mix_int(w)
        if m[0] >= 0:
            shares.append(int(q[0]))
        wm.push(np.ones(1, dtype=np.int64))
    assert len(shares) == 147  # from the 4th symbol on: the last 2 seen before
    assert abs(shares[0] - 39321) < 400  # the identity map at the start (0.6 of 65536)
    # hits only: each length bucket's nearer knot climbs (the share interpolates it with the other knot)
    assert shares[-1] > 48000 and min(shares) > 39000


@pytest.mark.parametrize("call, msg", [
    (lambda wm: (wm.mix_int(np.ones((1, 4), np.uint32), rows=[0]), wm.mix_int(np.ones((1, 4), np.uint32), rows=[0])),
     "mixed twice"),
    (lambda wm: wm.push(np.array([1]), rows=[0]), "without a mix"),
    (lambda wm: (wm.mix_int(np.ones((1, 4), np.uint32), rows=[0]), wm.feed(np.array([1]), rows=[0])),
     "fed between"),
    (lambda wm: wm.feed(np.array([-1]), rows=[0]), "out of range"),
    (lambda wm: wm.feed(np.array([1, 2]), rows=[0, 0]), "appears twice"),
    (lambda wm: wm.feed(np.array([1]), rows=[2]), "not a mixer row"),
])
def test_misuse_is_refused(call, msg):
    wm = core.WaveMatch(2, 8)
    with pytest.raises(ValueError, match=msg):
        call(wm)


def test_bounds_are_refused():
    wm = core.WaveMatch(1, 2)
    wm.feed(np.array([1]))
    wm.feed(np.array([2]))
    with pytest.raises(ValueError, match="is full"):
        wm.feed(np.array([3]))
    with pytest.raises(ValueError, match="below 2\\^32"):
        core.WaveMatch(1 << 17, 1 << 16)
    with pytest.raises(ValueError, match="at least one row"):
        core.WaveMatch(0, 8)
    for kw, msg in ((dict(hash_bits=9), "hash_bits"), (dict(hash_bits=25), "hash_bits"),
                    (dict(min_len=0), "min_len"), (dict(rate=16), "rate")):
        with pytest.raises(ValueError, match=msg):
            core.WaveMatch(1, 8, **kw)


def test_spec_is_fixed_by_its_kind():
    spec = WaveSpec()
    assert spec_from_json(spec.to_json()) == spec and spec.digest == WaveSpec.from_json(spec.to_json()).digest
    assert isinstance(spec_from_json({"kind": "match1", "prior": [32768] * 256}), MixerSpec)
    for bad in ({"kind": "wave1", "rate": 6}, {"kind": "wave1", "min_len": 4}, {"kind": "wave1", "top1": True}, {"kind": "wave1", "extra": 1}, []):
        with pytest.raises(ValueError):
            spec_from_json(bad)
    assert WaveSpec.hash_bits(6144) == 18 and WaveSpec.hash_bits(1) == 12 and WaveSpec.hash_bits(1 << 30) == 22


# ------------------------------------------------------------ the codec (an integer token model)

def _tokens_model():
    pytest.importorskip("tokenizers")
    from conftest import get_int_token_model

    return get_int_token_model()


PROSE = (b"The tokens repeat across the chunks of a wave: the same identifiers, /usr/share/doc paths and "
         b"boilerplate.\n")


def test_the_wave_match_pays_and_round_trips():
    import pyllmcodec
    from pyllmcodec import Compressor, Decompressor
    from pyllmcodec.container import HEADER_FLAG_MIXER, parse_header

    model = _tokens_model()  # its context is 40 tokens: a chunk is coded in cells of up to 40
    text = PROSE * 30
    on = Compressor(model, chunk_size=200, batch_size=16).compress(text)
    off = Compressor(model, chunk_size=200, batch_size=16, mixer=False).compress(text)
    assert len(on) < 0.93 * len(off)  # 3839 vs 4277 bytes: the cells that repeat earlier cells code smaller
    assert parse_header(on).meta["mixer"] == {"kind": "wave1", "digest": WaveSpec().digest}
    assert on[9] & HEADER_FLAG_MIXER and "mixer" not in parse_header(off).meta
    d = Decompressor(model)
    assert d.decompress(on) == text and d.decompress(off) == text
    # a chunk alone: its wave is decoded (the state is the wave's), the chunk returned
    n = pyllmcodec.info(on)["n_chunks"]
    assert b"".join(d.decompress_chunk(on, i) for i in range(n)) == text
    compact = Compressor(model, chunk_size=200, batch_size=16, frame="compact").compress(text)
    assert d.decompress(compact) == text


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_the_wave_match_round_trips(data):
    from pyllmcodec import Compressor, Decompressor

    model = _tokens_model()
    n = data.draw(st.integers(0, 1500))
    cut = data.draw(st.integers(0, len(PROSE)))
    text = (PROSE[cut:] + PROSE * 16)[:n]
    if data.draw(st.booleans()):
        text += bytes(data.draw(st.lists(st.integers(0, 255), max_size=80)))
    comp = Compressor(model, chunk_size=data.draw(st.integers(16, 400)), batch_size=data.draw(st.integers(1, 5)))
    blob = comp.compress(text)
    assert Decompressor(model).decompress(blob) == text


def test_hostile_wave_headers():
    from conftest import get_model, with_meta

    from pyllmcodec import Compressor, Decompressor
    from pyllmcodec.container import parse_header
    from pyllmcodec.errors import FormatError, ModelError

    model = _tokens_model()
    blob = Compressor(model, chunk_size=200, batch_size=2).compress(PROSE * 4)
    mx = parse_header(blob).meta["mixer"]
    with pytest.raises(FormatError, match=r"kind 'wave2'.*upgrade"):
        Decompressor(model).decompress(with_meta(blob, mixer={**mx, "kind": "wave2"}))
    with pytest.raises(ModelError, match="match model"):
        Decompressor(model).decompress(with_meta(blob, mixer={**mx, "digest": "0" * 16}))
    bare = type(model).__new__(type(model))  # the same model, shipping no match model
    bare.__dict__.update(model.__dict__)
    bare.default_mixer = None
    with pytest.raises(ModelError, match="ships none"):
        Decompressor(bare).decompress(blob)
    byte_blob = Compressor(get_model(), chunk_size=64, batch_size=2).compress(PROSE)
    from pyllmcodec.container import HEADER_FLAG_MIXER

    with pytest.raises(FormatError, match="token-level archives only"):
        Decompressor(get_model()).decompress(with_meta(byte_blob, flags_xor=HEADER_FLAG_MIXER, mixer=mx))


def test_archives_sharing_waves_decode_alone_and_together():
    # compress_batch codes several archives in shared waves: each archive's rows keep their own state
    from pyllmcodec import Compressor, Decompressor

    model = _tokens_model()
    texts = [PROSE * 6, (PROSE * 5)[7:], b"", PROSE[:50]]
    blobs = Compressor(model, chunk_size=200, batch_size=8).compress_batch(texts)
    d = Decompressor(model)
    assert [d.decompress(b) for b in blobs] == texts
    assert d.decompress_batch(blobs) == texts
    assert d.decompress_batch(blobs[::-1]) == texts[::-1]
