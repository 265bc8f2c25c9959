"""Chunking for token-level models: a cell of ``chunk_size`` bytes with more
tokens than the model's context is split (not deflated), streaming cuts the
same chunks as one-shot compression, and every path round-trips.

Uses a numpy token-level model (a hand-made BPE tokenizer over all 256 bytes
plus a few merges, a small context) so it runs in seconds."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from conftest import DENSE, PROSE, get_token_model

import pyllmcodec
from pyllmcodec import Compressor, Decompressor
from pyllmcodec.geometry import MIN_SPLIT_PIECE
from pyllmcodec.geometry import split_point as _split_point

MODEL = get_token_model()


def test_split_point_prefers_newline_then_space_then_a_character_start():
    assert _split_point(b"a" * 40 + b"\n" + b"b" * 50 + b" " + b"c" * 40) == 41
    assert _split_point(b"a" * 40 + b" " + b"b" * 40) == 41
    s = "é".encode() * 40  # no separator: never inside a 2-byte character
    assert _split_point(s) % 2 == 0
    cut = _split_point(b"x" * 100)
    assert MIN_SPLIT_PIECE <= cut <= 100 - MIN_SPLIT_PIECE


def test_dense_cells_are_split_and_model_coded_not_deflated():
    comp = Compressor(MODEL, chunk_size=256, batch_size=4)
    blob = comp.compress(DENSE)
    info = pyllmcodec.info(blob)
    assert info["n_chunks"] > -(-len(DENSE) // 256)  # more chunks than cells: cells were split
    assert info["methods"]["deflate"] == 0 and info["methods"]["stored"] == 0
    assert info["methods"]["model-tokens"] == info["n_chunks"]
    assert Decompressor(MODEL).decompress(blob) == DENSE
    # every chunk fits the context
    for c in comp.cut(memoryview(DENSE), comp.geometry_for(None)):
        assert len(MODEL.tokenizer.tokenize(bytes(c))) <= MODEL.max_context


def test_prose_cells_that_fit_are_not_split():
    comp = Compressor(get_token_model(400), chunk_size=128, batch_size=4)
    chunks = comp.cut(memoryview(PROSE), comp.geometry_for(None))
    assert [len(c) for c in chunks] == [len(PROSE[i : i + 128]) for i in range(0, len(PROSE), 128)]


@pytest.mark.parametrize("piece", [1, 7, 100, 1000])
def test_streaming_writes_the_same_archive_as_one_shot(piece):
    data = PROSE + DENSE + PROSE[:333]
    comp = Compressor(MODEL, chunk_size=200, batch_size=3)
    one = comp.compress(data)
    buf = io.BytesIO()
    with comp.stream_writer(buf, closefd=False) as w:
        for i in range(0, len(data), piece):
            w.write(data[i : i + piece])
    assert buf.getvalue() == one
    assert Decompressor(MODEL).decompress(one) == data


def test_random_access_to_split_chunks():
    data = DENSE + PROSE
    blob = Compressor(MODEL, chunk_size=256, batch_size=5).compress(data)
    dec = Decompressor(MODEL)
    n = pyllmcodec.info(blob)["n_chunks"]
    assert b"".join(dec.decompress_chunk(blob, i) for i in range(n)) == data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=900),
                      st.text(alphabet="the cat in a hat\n é漢", max_size=400).map(str.encode)),
       chunk=st.sampled_from([17, 64, 150, 300]), batch=st.integers(1, 5))
def test_token_round_trip_property(data, chunk, batch):
    comp = Compressor(MODEL, chunk_size=chunk, batch_size=batch)
    blob = comp.compress(data)
    assert Decompressor(MODEL).decompress(blob) == data
    assert len(blob) <= len(data) + 2048 + 40 * pyllmcodec.info(blob)["n_chunks"]
