"""pyllmcodec as a numcodecs codec (issue 17, part)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEXT

numcodecs = pytest.importorskip("numcodecs")

from pyllmcodec.numcodecs import LLMZ  # noqa: E402


def test_codec_round_trip_and_config():
    codec = LLMZ(model="test-bigram", chunk_size=64, batch_size=4)
    arr = np.frombuffer(TEXT[:800], dtype=np.uint8).reshape(20, 40)
    enc = codec.encode(arr)
    assert bytes(codec.decode(enc)) == arr.tobytes()
    out = np.empty_like(arr)
    codec.decode(enc, out=out)
    assert (out == arr).all()
    again = numcodecs.get_codec(codec.get_config())  # through the registry (entry point or register_codec)
    assert isinstance(again, LLMZ) and again.get_config() == codec.get_config()
    assert bytes(again.decode(enc)) == arr.tobytes()
    floats = np.linspace(0, 1, 300, dtype=np.float32)
    assert (np.frombuffer(codec.decode(codec.encode(floats)), dtype=np.float32) == floats).all()


def test_codec_refuses_corrupt_data():
    import pyllmcodec

    codec = LLMZ(model="test-bigram", chunk_size=64)
    enc = bytearray(codec.encode(np.frombuffer(TEXT[:300], dtype=np.uint8)))
    enc[-30] ^= 1
    with pytest.raises(pyllmcodec.CodecError):
        codec.decode(bytes(enc))


def test_compact_frames_by_default_full_archives_and_a_dictionary():
    import pyllmcodec
    from pyllmcodec.constants import FRAME_MAGIC, MAGIC

    rec = np.frombuffer(TEXT[:120], dtype=np.uint8)
    compact = LLMZ(model="test-bigram").encode(rec)
    full = LLMZ(model="test-bigram", frame="full").encode(rec)
    assert compact.startswith(FRAME_MAGIC) and full.startswith(MAGIC) and len(full) - len(compact) > 300
    codec = LLMZ(model="test-bigram", dictionary=TEXT[:40].hex())
    enc = codec.encode(rec)
    again = numcodecs.get_codec(codec.get_config())
    assert bytes(again.decode(enc)) == rec.tobytes()
    with pytest.raises(pyllmcodec.DictionaryError):
        LLMZ(model="test-bigram").decode(enc)
