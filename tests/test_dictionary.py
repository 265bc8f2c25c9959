"""Dictionaries: bytes primed before every chunk (docs/FORMAT.md section 4d)."""

from __future__ import annotations

import io
import json
import random

import pytest
from conftest import CORPUS, PROSE, TEXT, needs_default
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyllmcodec
from pyllmcodec import Compressor, Decompressor, Dictionary, DictionaryError, FormatError, train_dictionary
from pyllmcodec.container import HEADER_FLAG_DICTIONARY, parse_header


def _records(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    words = CORPUS.decode().split()
    out = []
    for i in range(n):
        rec = {"id": 1000 + i, "user": rng.choice(["fox", "dog", "cat"]), "text": " ".join(rng.sample(words, 5)),
               "score": rng.randint(0, 99)}
        out.append(json.dumps(rec).encode() + b"\n")
    return out


DICT = b'{"id": 1042, "user": "fox", "text": "the quick brown fox jumps", "score": 50}\n'


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400) | st.sampled_from([TEXT[:700], b"", b"x"]),
       name=st.sampled_from(["test-bigram", "test-bigram-ctx32", "test-bigram-mixer"]),
       frame=st.sampled_from(["full", "compact"]), chunk_size=st.sampled_from([8, 50, 200]))
def test_dictionary_round_trips(data, name, frame, chunk_size):
    dic = DICT[:12] if name == "test-bigram-ctx32" else DICT  # at most half of a 32-symbol context
    comp = Compressor(name, chunk_size=chunk_size, frame=frame, dictionary=dic, batch_size=3)
    blob = comp.compress(data)
    dec = Decompressor(name, dictionary=dic)
    assert dec.decompress(blob) == data
    assert b"".join(dec.read_to_iter(io.BytesIO(blob))) == data


def test_token_model_with_a_dictionary():
    comp = Compressor("test-tokens", dictionary=b"The quick brown fox", frame="compact")
    data = PROSE[:300]
    blob = comp.compress(data)
    assert Decompressor("test-tokens", dictionary=b"The quick brown fox").decompress(blob) == data
    params = comp.frame_params()
    frames = comp.compress_batch([data[:80], data[80:200]], params=params)
    assert Decompressor("test-tokens", dictionary=b"The quick brown fox").decompress_batch(
        frames, params=params) == [data[:80], data[80:200]]


def test_a_dictionary_pays_on_small_records():
    recs = _records(40)
    dic = train_dictionary(_records(300, seed=8), size=200)
    plain = Compressor("test-bigram-mixer", frame="compact").compress_batch(recs)
    primed = Compressor("test-bigram-mixer", frame="compact", dictionary=dic).compress_batch(recs)
    assert sum(map(len, primed)) < 0.9 * sum(map(len, plain))
    assert Decompressor("test-bigram-mixer", dictionary=dic).decompress_batch(primed) == recs


def test_missing_or_wrong_dictionary_is_a_clear_error():
    blob = Compressor("test-bigram", dictionary=DICT).compress(TEXT[:300])
    frame = Compressor("test-bigram", dictionary=DICT, frame="compact").compress(TEXT[:300])
    for b in (blob, frame):
        with pytest.raises(DictionaryError, match="pass the same bytes"):
            Decompressor("test-bigram").decompress(b)
        with pytest.raises(DictionaryError, match="wrong dictionary"):
            Decompressor("test-bigram", dictionary=DICT + b" ").decompress(b)
        with pytest.raises(DictionaryError):
            b"".join(Decompressor("test-bigram").read_to_iter(io.BytesIO(b)))
    # one given for an archive that names none is not used
    plain = Compressor("test-bigram").compress(TEXT[:300])
    assert Decompressor("test-bigram", dictionary=DICT).decompress(plain) == TEXT[:300]
    assert pyllmcodec.decompress(blob, model="test-bigram", dictionary=DICT) == TEXT[:300]


def test_the_header_records_the_dictionary():
    blob = Compressor("test-bigram", dictionary=DICT).compress(TEXT[:300])
    h = parse_header(blob)
    assert h.meta["dictionary"] == {"sha256": Dictionary(DICT).sha256, "size": len(DICT)}
    assert blob[9] & HEADER_FLAG_DICTIONARY


def test_hostile_dictionary_headers():
    from conftest import with_meta

    blob = Compressor("test-bigram", dictionary=DICT).compress(TEXT[:300])
    dic = parse_header(blob).meta["dictionary"]
    for change, flip, msg in [({"dictionary": {**dic, "sha256": "xyz"}}, 0, "dictionary.sha256"),
                              ({"dictionary": {**dic, "size": 0}}, 0, "dictionary.size"),
                              ({"dictionary": {**dic, "x": 1}}, 0, "must be"),
                              ({"dictionary": None}, 0, "dictionary flag"),
                              ({}, HEADER_FLAG_DICTIONARY, "dictionary flag")]:
        with pytest.raises(FormatError, match=msg):
            Decompressor("test-bigram", dictionary=DICT).decompress(with_meta(blob, flags_xor=flip, **change))


def test_dictionary_limits():
    with pytest.raises(ValueError, match="half the segments"):
        Compressor("test-bigram-ctx32", dictionary=b"x" * 17)
    with pytest.raises(ValueError, match="1.."):
        Dictionary(b"")
    with pytest.raises(TypeError, match="bytes-like"):
        Compressor("test-bigram", dictionary="text")  # type: ignore[arg-type]
    assert Compressor("test-bigram", dictionary=bytearray(b"abc")).dictionary == Dictionary(b"abc")


def test_train_dictionary_is_deterministic_and_bounded():
    samples = _records(200)
    a, b = train_dictionary(samples, size=128), train_dictionary(samples, size=128)
    assert a == b and 0 < len(a) <= 128
    assert b'"score": ' in a or b'"user": "' in a  # what every record shares
    with pytest.raises(ValueError):
        train_dictionary([b"ab"], size=64)
    assert len(train_dictionary([bytes([i]) * 20 for i in range(5)], size=16)) <= 16


def test_compressor_with_a_dictionary_pickles():
    import pickle

    comp = pickle.loads(pickle.dumps(Compressor("test-bigram", dictionary=bytearray(DICT))))
    assert comp.dictionary == Dictionary(DICT)


@needs_default
def test_default_model_with_a_trained_dictionary():
    recs = _records(12)
    dic = train_dictionary(_records(200, seed=3), size=256)
    frames = pyllmcodec.compress_batch(recs, frame="compact", dictionary=dic)
    assert pyllmcodec.decompress_batch(frames, dictionary=dic) == recs


def test_headerless_frames_check_the_dictionary():
    comp = Compressor("test-bigram", chunk_size=64, dictionary=DICT)
    params = comp.frame_params()
    frames = comp.compress_batch([TEXT[:100], TEXT[100:300]], params=params)
    assert Decompressor("test-bigram", dictionary=DICT).decompress_batch(frames, params=params) == [
        TEXT[:100], TEXT[100:300]]
    with pytest.raises(DictionaryError):
        Decompressor("test-bigram").decompress_batch(frames, params=params)
    with pytest.raises(DictionaryError):
        Decompressor("test-bigram", dictionary=DICT[:-1]).decompress_batch(frames, params=params)
    plain = Compressor("test-bigram", chunk_size=64).frame_params()  # the params without the dictionary
    with pytest.raises(FormatError, match="other parameters"):
        Decompressor("test-bigram", dictionary=DICT).decompress_batch(frames, params=plain)
