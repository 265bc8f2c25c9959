"""Compact frames and headerless frames (docs/FORMAT.md section 11)."""

from __future__ import annotations

import io
import zlib

import pytest
from conftest import CORPUS, TEXT, get_mixer_model, get_model, get_short_model, get_token_model, needs_default
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import CodecError, Compressor, Decompressor, FormatError, FrameParams, ModelError
from pyllmcodec.constants import FRAME_MAGIC, METHOD_STORED
from pyllmcodec.container import ChunkEntry
from pyllmcodec.frames import FrameIndex, encode_frame, split
from pyllmcodec.models import clear_cache

RECORD = b'{"id": 4711, "name": "the quick brown fox", "tags": ["dog", "lazy"]}\n'


def _overhead(frame: bytes) -> int:
    """Everything but the payloads: magic, params, index, CRC."""
    return len(frame) - sum(b.payload_len for b in FrameIndex(frame).blocks)


def test_one_chunk_frame_costs_at_most_48_bytes():
    for comp in (Compressor("test-bigram", frame="compact"), Compressor("test-bigram-mixer", frame="compact"),
                 Compressor("test-bigram-ctx32", frame="compact", chunk_size=100)):
        frame = comp.compress(RECORD)
        assert frame.startswith(FRAME_MAGIC)
        assert _overhead(frame) <= 48, _overhead(frame)
        assert pyllmcodec.decompress(frame, model=comp.model.name) == RECORD
    full = Compressor("test-bigram").compress(RECORD)
    assert len(full) - len(Compressor("test-bigram", frame="compact").compress(RECORD)) > 300


@needs_default
def test_default_model_frame_overhead_and_decoding_without_model():
    frame = pyllmcodec.compress(RECORD, frame="compact")
    assert _overhead(frame) <= 48
    assert pyllmcodec.decompress(frame) == RECORD  # the default model is found by its id
    d = pyllmcodec.info(frame)
    assert d["frame"] == "compact" and d["size"] == len(RECORD) and d["sha256"] is None
    assert sum(d["layout"].values()) == len(frame)


def test_model_is_found_by_id_or_named():
    frame = Compressor("test-bigram", frame="compact").compress(RECORD)
    assert Decompressor().decompress(frame) == RECORD  # test-bigram is in the model cache
    clear_cache()
    with pytest.raises(ModelError, match="pass model="):
        Decompressor().decompress(frame)
    with pytest.raises(ModelError, match="the model whose id is"):
        Decompressor("test-bigram-ctx32").decompress(frame)
    assert Decompressor("test-bigram").decompress(frame) == RECORD


def test_golden_compact_frame_layout():
    """The bytes of a frame, pinned by hand (no model numerics in it)."""
    params = FrameParams(model_id=bytes(range(8)), probe=bytes(range(8, 16)), chunk_size=64, batch_size=2,
                         precision=30, probe_batch=2)
    frame = encode_frame(params, [(2, [ChunkEntry(0, 5, 5, METHOD_STORED, zlib.crc32(b"hello"))], [b"hello"])])
    head = FRAME_MAGIC + bytes([0]) + bytes(range(16)) + bytes([64, 2, 30, 2]) + bytes([1, 2, 1, 0x80, 5])
    head += zlib.crc32(b"hello").to_bytes(4, "little")
    assert frame == head + zlib.crc32(head).to_bytes(4, "little") + b"hello"
    ix = FrameIndex(frame)
    assert ix.params == params and ix.n_chunks == 1 and bytes(ix.payload(ix.blocks[0], 0)) == b"hello"
    # the headerless frame is the same without magic and params, its CRC seeded with them
    bare = encode_frame(params, [(2, [ChunkEntry(0, 5, 5, METHOD_STORED, zlib.crc32(b"hello"))], [b"hello"])],
                        headerless=True)
    index = bytes([1, 2, 1, 0x80, 5]) + zlib.crc32(b"hello").to_bytes(4, "little")
    assert bare == index + zlib.crc32(index, zlib.crc32(params.to_bytes())).to_bytes(4, "little") + b"hello"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.binary(max_size=300) | st.sampled_from([RECORD, CORPUS[:200], b""]), min_size=1,
                        max_size=6),
       chunk_size=st.sampled_from([16, 64, 1000]), batch_size=st.integers(1, 5), headerless=st.booleans())
def test_frames_round_trip(records, chunk_size, batch_size, headerless):
    comp = Compressor("test-bigram", chunk_size=chunk_size, batch_size=batch_size, frame="compact")
    dec = Decompressor("test-bigram")
    if headerless:
        params = comp.frame_params()
        frames = comp.compress_batch(records, params=params)
        assert dec.decompress_batch(frames, params=params) == records
        assert [dec.decompress(f, params=params) for f in frames] == records
    else:
        frames = comp.compress_batch(records)
        assert dec.decompress_batch(frames) == records
        assert dec.decompress(b"".join(frames)) == b"".join(records)  # concatenated, as gzip members
        assert b"".join(dec.read_to_iter(io.BytesIO(b"".join(frames)))) == b"".join(records)


def test_segments_tokens_and_the_match_model_in_frames():
    data = (CORPUS * 3)[:700]
    for name, kw in (("test-bigram-ctx32", {"chunk_size": 100}), ("test-tokens", {}),
                     ("test-bigram-mixer", {"chunk_size": 300})):
        comp = Compressor(name, frame="compact", **kw)
        frame = comp.compress(data)
        assert Decompressor(name).decompress(frame) == data
        params = comp.frame_params()
        assert Decompressor(name).decompress_batch(comp.compress_batch([data, data[:50]], params=params),
                                                   params=params) == [data, data[:50]]
    assert get_short_model() and get_token_model() and get_mixer_model()


def test_headerless_frames_need_their_params():
    comp = Compressor("test-bigram", chunk_size=64)
    params = comp.frame_params()
    frames = comp.compress_batch([RECORD, TEXT[:500]], params=params)
    assert sum(len(f) for f in frames) < 0.7 * (len(RECORD) + 500)
    dec = Decompressor("test-bigram")
    other = Compressor("test-bigram", chunk_size=128).frame_params()
    with pytest.raises(FormatError, match="record 0: .*other parameters"):
        dec.decompress_batch(frames, params=other)
    with pytest.raises(FormatError, match="self-describing"):
        dec.decompress(Compressor("test-bigram", frame="compact").compress(RECORD), params=params)
    with pytest.raises(FormatError):
        dec.decompress(frames[0])  # no params: not an archive
    with pytest.raises(ValueError, match="not this Compressor's"):
        Compressor("test-bigram", chunk_size=128).compress_batch([RECORD], params=params)
    # params of another model (same geometry): the model id says so before any decoding
    foreign = Compressor("test-bigram-ctx32", chunk_size=16).frame_params()
    fr = Compressor("test-bigram-ctx32", chunk_size=16).compress_batch([RECORD], params=foreign)
    with pytest.raises(ModelError, match="id"):
        dec.decompress(fr[0], params=foreign)


def test_params_round_trip_through_bytes_and_dicts():
    comp = Compressor("test-bigram-ctx32", chunk_size=100, dictionary=b"the fox ")
    p = comp.frame_params()
    assert p.context == 32 and p.prime and p.dictionary is not None
    assert FrameParams.from_bytes(p.to_bytes()) == p
    assert FrameParams.from_dict(p.to_dict()) == p
    import json

    assert FrameParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@pytest.mark.parametrize("change, why", [
    ({"precision": 40}, "precision"),
    ({"batch_size": 0}, "batch_size"),
    ({"context": 40}, "context"),  # a context without segments (chunk_size 100 + 8 > 40 is fine; prime missing)
    ({"dictionary_size": 0}, "dictionary_size"),
    ({"model_id": "00"}, "model_id"),
    ({"extra": 1}, "keys among"),
])
def test_hostile_params_are_refused(change, why):
    d = Compressor("test-bigram-ctx32", chunk_size=100, dictionary=b"the fox ").frame_params().to_dict()
    d.pop("prime") if "context" in change else None
    d.update(change)
    with pytest.raises(FormatError, match=why):
        FrameParams.from_dict(d)


def test_unknown_flags_and_every_truncation_and_bit_flip_are_caught():
    comp = Compressor("test-bigram", chunk_size=64, batch_size=2, frame="compact")
    frame = comp.compress(TEXT[:200])
    dec = Decompressor("test-bigram")
    assert dec.decompress(frame) == TEXT[:200]
    bad = bytearray(frame)
    bad[4] |= 0x80
    with pytest.raises(FormatError, match="unknown frame flags"):
        dec.decompress(bytes(bad))
    for n in range(len(frame)):
        with pytest.raises(CodecError):
            dec.decompress(frame[:n])
    for i in range(len(frame)):
        for bit in (0, 3, 7):
            flipped = bytearray(frame)
            flipped[i] ^= 1 << bit
            try:
                out = dec.decompress(bytes(flipped))
            except CodecError:
                continue
            assert out == TEXT[:200]  # never wrong bytes


def test_streams_and_decompressobj_read_frames_and_archives_mixed():
    comp = Compressor("test-bigram", chunk_size=64, batch_size=2)
    a, b = comp.compress(TEXT[:300]), Compressor("test-bigram", frame="compact").compress(RECORD)
    dec = Decompressor("test-bigram")
    for blob in (a + b, b + a, b + b + a + b, a + b + a):  # a + b + a: fuzz finding 3
        want = b"".join(TEXT[:300] if p.tobytes().startswith(b"\x89LLMZ") else RECORD for p in split(blob))
        assert dec.decompress(blob) == want
        assert b"".join(dec.read_to_iter(io.BytesIO(blob))) == want
        with pyllmcodec.open(io.BytesIO(blob), model="test-bigram") as fh:
            assert fh.read() == want
    obj = dec.decompressobj()
    out = b"".join(obj.decompress(bytes([x])) for x in b)
    assert out == RECORD and obj.eof
    obj = dec.decompressobj()
    assert obj.decompress(b + a) == RECORD and obj.unused_data == a
    with pytest.raises(FormatError, match="trailing data"):
        dec.decompress(b + b"junk")


def test_random_access_and_info_on_frames():
    comp = Compressor("test-bigram", chunk_size=64, batch_size=3, frame="compact")
    frame = comp.compress(TEXT[:1000])
    dec = Decompressor("test-bigram")
    assert dec.decompress_chunk(frame, 5) == TEXT[320:384]
    d = pyllmcodec.info(frame, chunks=True)
    assert d["n_chunks"] == 16 and len(d["chunks"]) == 16 and d["frame_params"]["chunk_size"] == 64
    assert pyllmcodec.info(frame, header_only=True)["chunk_size"] == 64
    assert pyllmcodec.info(io.BytesIO(frame), header_only=True)["batch_size"] == 3
    with pyllmcodec.open(io.BytesIO(frame), model="test-bigram") as fh:
        fh.seek(900)
        assert fh.read() == TEXT[900:1000]


def test_numerics_mismatch_in_a_frame_is_refused():
    from conftest import BigramModel

    frame = Compressor("test-bigram", frame="compact").compress(RECORD)
    other = BigramModel(variant=1)  # same weights (same id), other numerics
    with pytest.raises(pyllmcodec.NumericsMismatchError):
        Decompressor(other).decompress(frame)
    assert get_model()
