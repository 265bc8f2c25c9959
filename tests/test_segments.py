"""Chunks longer than the model's context: coded in segments, each after
``prime`` symbols of context (pyllmcodec/scheduler.py, docs/FORMAT.md)."""

from __future__ import annotations

import io

import pytest
from conftest import TEXT, get_model, get_short_model, get_token_model, with_meta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import ChecksumError, Compressor, Decompressor, FormatError
from pyllmcodec.constants import MAX_BYTE_CHUNK_SIZE
from pyllmcodec.container import HEADER_FLAG_CONTEXT, parse_header
from pyllmcodec.scheduler import segment_plan

C = 32  # the short model's context


def test_segment_plan():
    assert segment_plan(32, 32, 5) == [(0, 0)]
    assert segment_plan(33, 32, 5) == [(0, 0), (32, 5)]
    assert segment_plan(32 + 27, 32, 5) == [(0, 0), (32, 5)]
    assert segment_plan(32 + 28, 32, 5) == [(0, 0), (32, 5), (59, 5)]
    # every symbol is coded by exactly one segment, each window fits the context
    for n in range(1, 300, 7):
        plan = segment_plan(n, 32, 9)
        covered = []
        for s, k in plan:
            e = min(n, s - k + 32)
            assert 0 <= s - k and e - (s - k) <= 32
            covered += range(s, e)
        assert covered == list(range(n))
    with pytest.raises(ValueError, match="context"):
        segment_plan(33, 32, 0)


# text with line breaks, CR LF runs (the line-ending methods) and binary bits
_pieces = st.sampled_from([b"the ", b"segment ", b"\n", b"\r\n", b" \r\n", b"\x00\xff", b"prime, ",
                           b"caf\xc3\xa9 ", b"0123"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(_pieces, max_size=120).map(b"".join),
       chunk=st.integers(C + 1, 5 * C), prime=st.integers(1, C // 2), batch=st.integers(1, 5),
       eol=st.booleans(), fallback=st.sampled_from(["stored", "deflate"]))
def test_round_trip(data, chunk, prime, batch, eol, fallback):
    m = get_short_model()
    comp = Compressor(m, chunk_size=chunk, prime=prime, batch_size=batch, eol=eol, fallback=fallback)
    blob = comp.compress(data)
    dec = Decompressor(m)
    assert dec.decompress(blob) == data
    assert parse_header(blob).prime == prime
    # random access, streaming and shared waves give the same bytes
    n = pyllmcodec.info(blob)["n_chunks"]
    assert pyllmcodec.info(blob)["prime"] == prime
    if n:
        k = n // 2
        assert dec.decompress_chunks(blob, k, n) == data[k * chunk:]
    out = io.BytesIO()
    with comp.stream_writer(out) as w:
        w.write(data[: len(data) // 3])
        w.write(data[len(data) // 3:])
    assert out.getvalue() == blob
    a, b = comp.compress_batch([data, data[::-1]])
    assert dec.decompress_batch([a, b]) == [data, data[::-1]]


def test_segments_pay_on_text_and_cost_steps():
    """The segments after the first start from context, so they code the
    repetitive text in fewer bits than chunks of one context each."""
    m = get_short_model()
    data = TEXT[:3000]
    one = Compressor(m, chunk_size=C, batch_size=4, fallback="stored").compress(data)
    seg = Compressor(m, chunk_size=10 * C, prime=8, batch_size=4, fallback="stored").compress(data)
    assert len(seg) < len(one)
    assert Decompressor(m).decompress(seg) == data


@pytest.fixture(scope="module")
def seg_blob():
    m = get_short_model()
    return Compressor(m, chunk_size=100, prime=6, batch_size=3, fallback="stored").compress(TEXT[:700])


@pytest.mark.parametrize("change,message", [
    ({"prime": None}, "prime"),
    ({"prime": 0}, "prime"),
    ({"prime": C // 2 + 1}, "prime"),
    ({"prime": "6"}, "prime"),
    ({"chunk_size": MAX_BYTE_CHUNK_SIZE + 1}, "chunk_size"),
])
def test_hostile_segment_headers_are_refused(seg_blob, change, message):
    with pytest.raises(FormatError, match=message):
        Decompressor(get_short_model()).decompress(with_meta(seg_blob, **change))
    with pytest.raises(FormatError, match=message):
        pyllmcodec.info(with_meta(seg_blob, **change))


def test_prime_only_where_it_means_something():
    m = get_short_model()
    blob = Compressor(m, chunk_size=C, batch_size=2).compress(TEXT[:100])
    assert "prime" not in parse_header(blob).meta  # chunks that fit: nothing new in the header
    with pytest.raises(FormatError, match="prime"):
        pyllmcodec.info(with_meta(blob, prime=4))


def test_another_prime_never_returns_wrong_bytes(seg_blob):
    """A header whose prime was changed (archive otherwise consistent) steps
    other contexts: the chunk CRCs catch it."""
    for prime in {1, 2, C // 2} - {parse_header(seg_blob).prime}:
        with pytest.raises(ChecksumError):
            Decompressor(get_short_model()).decompress(with_meta(seg_blob, prime=prime))


def test_default_chunk_size_comes_from_the_model(monkeypatch):
    m = get_short_model()
    assert Compressor(m).chunk_size == C  # no preference: min(1 KiB, context)
    monkeypatch.setattr(m, "default_chunk_size", 5 * C, raising=False)
    monkeypatch.setattr(m, "default_prime", 3, raising=False)
    comp = Compressor(m)
    assert (comp.chunk_size, comp.prime) == (5 * C, 3)
    assert Decompressor(m).decompress(comp.compress(TEXT[:500])) == TEXT[:500]


# ------------------------------------------------------------ shorter segments (header key `context`)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(_pieces, max_size=120).map(b"".join), context=st.integers(2, C),
       chunk_mult=st.integers(1, 4), batch=st.integers(1, 4), eol=st.booleans(), mixer=st.booleans())
def test_shorter_context_round_trips(data, context, chunk_mult, batch, eol, mixer):
    from conftest import get_mixer_model

    m = get_mixer_model() if mixer else get_model()  # context 4096, so `context` < max_context
    chunk = context * chunk_mult + 1
    comp = Compressor(m, chunk_size=chunk, context=context, prime=max(1, context // 3), batch_size=batch, eol=eol)
    blob = comp.compress(data)
    h = parse_header(blob)
    assert h.context == context and h.meta["context"] == context and h.prime == max(1, context // 3)
    assert blob[9] & HEADER_FLAG_CONTEXT
    dec = Decompressor(m)
    assert dec.decompress(blob) == data
    n = pyllmcodec.info(blob)["n_chunks"]
    if n:
        assert dec.decompress_chunks(blob, n // 2, n) == data[(n // 2) * chunk:]


def test_shorter_context_is_what_the_decoder_steps():
    """The model's preference (manifest codec.context) is recorded; the
    decoder takes the segments' length from the header, not from the model."""
    m = get_model()
    data = TEXT * 3
    full = Compressor(m, chunk_size=600, batch_size=2, fallback="stored").compress(data)
    short = Compressor(m, chunk_size=600, batch_size=2, fallback="stored", context=100, prime=10).compress(data)
    assert "context" not in parse_header(full).meta and not full[9] & HEADER_FLAG_CONTEXT
    assert parse_header(short).meta["context"] == 100
    assert Decompressor(m).decompress(short) == data
    assert short != full
    # chunks that fit the shorter context record nothing new
    fits = Compressor(m, chunk_size=100, batch_size=2, context=100).compress(data)
    assert "context" not in parse_header(fits).meta and "prime" not in parse_header(fits).meta
    for bad in (1, 4097, "64", True):
        with pytest.raises(ValueError, match="context must be"):
            Compressor(m, context=bad)
    with pytest.raises(ValueError, match="context must be"):
        Compressor(get_token_model(), context=16)


@pytest.fixture(scope="module")
def ctx_blob():
    return Compressor(get_model(), chunk_size=300, context=100, prime=10, batch_size=2,
                      fallback="stored").compress(TEXT[:900])


@pytest.mark.parametrize("change,flip,message", [
    ({"context": 4096}, 0, "context"),  # the whole context needs no key (canonical form)
    ({"context": 1}, 0, "context"),
    ({"context": 300}, 0, "context"),  # chunks that fit need no key
    ({"context": "100"}, 0, "context"),
    ({"context": 10}, 0, "prime"),  # prime 10 > context / 2
    ({"context": None}, 0, "prime"),  # without it, chunks of 300 fit the model: no prime either
    ({"context": None, "prime": None}, 0, "flag and the metadata key 'context' disagree"),
    ({}, HEADER_FLAG_CONTEXT, "flag and the metadata key 'context' disagree"),
])
def test_hostile_context_headers_are_refused(ctx_blob, change, flip, message):
    bad = with_meta(ctx_blob, flags_xor=flip, **change)
    with pytest.raises(FormatError, match=message):
        Decompressor(get_model()).decompress(bad)
    with pytest.raises(FormatError, match=message):
        pyllmcodec.info(bad)


def test_another_context_never_returns_wrong_bytes(ctx_blob):
    for context in {60, 99, 101, 200} - {parse_header(ctx_blob).context}:
        with pytest.raises(ChecksumError):
            Decompressor(get_model()).decompress(with_meta(ctx_blob, context=context))
