"""The line-ending methods (4: model-eol-cr, 5: model-eol-space-cr): a chunk
whose every LF is preceded by CR (or space CR) is model-coded without that
suffix and restored exactly; anything else is coded as before.  Byte-level
(the bigram test model) and token-level (the tiny BPE test model) archives."""

from __future__ import annotations

import io

import pytest
from conftest import CORPUS, PROSE, get_model, get_token_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import Compressor, Decompressor, eol
from pyllmcodec.constants import METHOD_MODEL_EOL_CR, METHOD_MODEL_EOL_SPACE_CR
from pyllmcodec.errors import ChecksumError

BYTES = get_model()
TOKENS = get_token_model(400)

LF_TEXT = (CORPUS * 3).replace(b"\n", b" ").replace(b". ", b".\n")
CRLF_TEXT = LF_TEXT.replace(b"\n", b"\r\n")
SPCRLF_TEXT = LF_TEXT.replace(b"\n", b" \r\n")


# ------------------------------------------------------------ the transform


def test_choose_picks_the_longest_suffix_every_line_has():
    assert eol.choose(b"a\r\nb\r\n") == METHOD_MODEL_EOL_CR
    assert eol.choose(b"a \r\nb \r\nc") == METHOD_MODEL_EOL_SPACE_CR
    assert eol.choose(b"a \r\nb\r\n") == METHOD_MODEL_EOL_CR  # one line lacks the space
    assert eol.choose(b"a\r\nb\n") == 0  # one bare LF
    assert eol.choose(b"no newline\r") == 0
    assert eol.choose(b"") == 0
    assert eol.choose(b"\n") == 0
    assert eol.choose(b"\r\r\n") == METHOD_MODEL_EOL_CR
    assert eol.encoded(b"a \r\nb \r\n") == (METHOD_MODEL_EOL_SPACE_CR, b"a\nb\n")
    assert eol.encoded(b"a\r\nb\n") == (0, b"a\r\nb\n")


@given(st.lists(st.sampled_from([b"a", b" ", b"\r", b"\n", b"\r\n", b" \r\n", b"xy"]), max_size=60))
def test_strip_then_restore_is_the_identity_when_chosen(parts):
    data = b"".join(parts)
    m = eol.choose(data)
    if m:
        s = eol.strip(data, m)
        assert len(s) == len(data) - len(pyllmcodec.constants.EOL_SUFFIXES[m]) * data.count(b"\n")
        assert s.count(b"\n") == data.count(b"\n")
        assert eol.restore(s, m) == data
    else:
        assert b"\n" not in data or data.count(b"\r\n") != data.count(b"\n")


# ------------------------------------------------------------ archives


def _methods(blob: bytes) -> dict[str, int]:
    return pyllmcodec.info(blob)["methods"]


@pytest.mark.parametrize("model,chunk", [(BYTES, 128), (TOKENS, 256)], ids=["bytes", "tokens"])
def test_crlf_text_uses_the_eol_methods_and_round_trips(model, chunk):
    for data, name in ((CRLF_TEXT, "model-eol-cr"), (SPCRLF_TEXT, "model-eol-space-cr")):
        blob = Compressor(model, chunk_size=chunk, batch_size=4, fallback="stored").compress(data)
        m = _methods(blob)
        assert m[name] >= len(data) // chunk - 2, m  # all but chunks without a LF / the tail
        assert Decompressor(model).decompress(blob) == data


@pytest.mark.parametrize("model,chunk", [(BYTES, 128), (TOKENS, 256)], ids=["bytes", "tokens"])
def test_the_transform_pays_on_crlf_text(model, chunk):
    on = Compressor(model, chunk_size=chunk, batch_size=4, fallback="stored").compress(CRLF_TEXT)
    off = Compressor(model, chunk_size=chunk, batch_size=4, fallback="stored", eol=False).compress(CRLF_TEXT)
    assert _methods(off)["model-eol-cr"] == 0
    assert Decompressor(model).decompress(off) == CRLF_TEXT
    assert len(on) < len(off)


def test_one_shot_compress_takes_the_option():
    on = pyllmcodec.compress(CRLF_TEXT, "test-bigram", chunk_size=128, fallback="stored")
    off = pyllmcodec.compress(CRLF_TEXT, "test-bigram", chunk_size=128, fallback="stored", eol=False)
    assert _methods(on)["model-eol-cr"] > 0 and _methods(off)["model-eol-cr"] == 0
    assert pyllmcodec.decompress(on) == pyllmcodec.decompress(off) == CRLF_TEXT


def test_lf_text_is_coded_as_before():
    for model, chunk in ((BYTES, 128), (TOKENS, 256)):
        a = Compressor(model, chunk_size=chunk, batch_size=4).compress(LF_TEXT)
        b = Compressor(model, chunk_size=chunk, batch_size=4, eol=False).compress(LF_TEXT)
        assert a == b


@pytest.mark.parametrize("model,chunk", [(BYTES, 96), (TOKENS, 200)], ids=["bytes", "tokens"])
def test_mixed_waves_random_access_and_streaming(model, chunk):
    # chunks with CR LF, space CR LF, bare LF and no LF share waves
    data = CRLF_TEXT[:700] + LF_TEXT[:500] + SPCRLF_TEXT[:900] + PROSE[:300] + b"\r\n" * 5
    comp = Compressor(model, chunk_size=chunk, batch_size=3, fallback="stored")  # the test models lose to deflate
    blob = comp.compress(data)
    m = _methods(blob)
    assert m["model-eol-cr"] and m["model-eol-space-cr"] and m.get("model", 0) + m.get("model-tokens", 0)
    d = Decompressor(model)
    assert d.decompress(blob) == data
    n = pyllmcodec.info(blob)["n_chunks"]
    for i in range(n):  # each chunk alone, at its recorded row and batch
        assert d.decompress_chunk(blob, i) == data[i * chunk : (i + 1) * chunk]
    buf = io.BytesIO()
    with comp.stream_writer(buf) as w:
        for i in range(0, len(data), 37):
            w.write(data[i : i + 37])
    assert buf.getvalue() == blob
    assert pyllmcodec.decompress_batch([blob, blob], model=model) == [data, data]


def test_verify_after_compress_covers_the_eol_methods():
    blob = Compressor(BYTES, chunk_size=128, batch_size=4, verify=True).compress(CRLF_TEXT)
    assert _methods(blob)["model-eol-cr"] > 0


def _retag(blob: bytes, frm: int, to: int) -> bytes:
    """Change the method of every ``frm`` entry to ``to``, with every CRC fixed."""
    from fuzz.mutate import build_loose, parse_loose

    lz = parse_loose(blob)
    assert lz is not None and build_loose(lz) == blob
    for _batch, entries, _payloads in lz.blocks:
        for e in entries:
            if e[3] == frm:
                e[3] = to
    return build_loose(lz)


def test_a_wrong_eol_method_is_an_error_not_wrong_bytes():
    blob = Compressor(BYTES, chunk_size=128, batch_size=4, fallback="stored").compress(CRLF_TEXT)
    bad = _retag(blob, METHOD_MODEL_EOL_CR, METHOD_MODEL_EOL_SPACE_CR)
    assert bad != blob
    with pytest.raises(ChecksumError):
        Decompressor(BYTES).decompress(bad)


_texts = st.lists(
    st.sampled_from([b"the ", b"fox", b"\r\n", b" \r\n", b"\n", b".", b"\r", b"dog ", b"\xc3\xa9"]),
    max_size=120,
).map(b"".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_texts, chunk=st.integers(8, 90), batch=st.integers(1, 5), tokens=st.booleans())
def test_round_trip_property(data, chunk, batch, tokens):
    model = TOKENS if tokens else BYTES
    blob = Compressor(model, chunk_size=chunk, batch_size=batch).compress(data)
    assert Decompressor(model).decompress(blob) == data
