"""The wave scheduler: geometry, fed tokens, exact mirroring, probe."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BigramModel, get_model

from pyllmcodec.backends.base import StepModelBase
from pyllmcodec.errors import CodecError
from pyllmcodec.geometry import Geometry
from pyllmcodec.scheduler import WaveRunner, fed_tokens, plan_waves, segments


def runner(model, precision=30):
    """A runner for chunks that fit the context, no match model."""
    return WaveRunner(model, Geometry(chunk_size=model.max_context, batch_size=1, precision=precision,
                                      pad=model.bos, context=model.max_context))


def decoded(r, batch, rows, lengths, payloads):
    """decode_wave's symbol arrays as bytes (known lengths: byte-level chunks)."""
    return [a.tobytes() for a in r.decode_wave(batch, rows, lengths, payloads)]


def test_plan_waves():
    assert plan_waves(0, 4) == []
    assert plan_waves(3, 4) == [(0, 3)]
    assert plan_waves(4, 4) == [(0, 4)]
    assert plan_waves(9, 4) == [(0, 4), (4, 4), (8, 1)]
    with pytest.raises(ValueError):
        plan_waves(3, 0)


def test_segments_full_and_partial():
    seg = segments(3, [0, 1, 2], [5, 5, 5])
    assert len(seg) == 1 and seg[0][:2] == (0, 5) and seg[0][2] is None
    seg = segments(4, [0, 2, 3], [5, 2, 5])
    assert [(a, b) for a, b, _, _ in seg] == [(0, 2), (2, 5)]
    assert seg[0][2].tolist() == [0, 2, 3] and seg[0][3].tolist() == [2]
    assert seg[1][2].tolist() == [0, 3] and seg[1][3].tolist() == [0, 3]


def test_fed_tokens_follow_the_documented_rule():
    bos, pad = 256, 300
    tok, sym = fed_tokens(4, [0, 2], [b"abc", b"x"], bos, pad)
    assert tok.shape == (3, 4) and tok.dtype == np.int64
    assert tok[:, 0].tolist() == [bos, ord("a"), ord("b")]  # the last byte is never fed
    assert tok[:, 2].tolist() == [bos, pad, pad]
    assert tok[:, 1].tolist() == [pad] * 3 and tok[:, 3].tolist() == [pad] * 3  # absent rows
    assert sym[:, 0].tolist() == [ord(c) for c in "abc"] and sym[0, 2] == ord("x")


class Recorder(StepModelBase):
    """Wraps a model and records the fed-token matrix of every state."""

    def __init__(self, model):
        self.model = model
        self.name, self.sha256 = model.name, model.sha256
        self.vocab_size, self.bos, self.max_context = model.vocab_size, model.bos, model.max_context
        self.log = []

    def new_state(self, b):
        st = self.model.new_state(b)
        self.log.append([])
        st.log = self.log[-1]
        return st

    def step(self, st, tokens):
        st.log.append(tokens.copy())
        return self.model.step(st, tokens)

    def fingerprint(self):
        return self.model.fingerprint()


def test_encoder_and_decoder_feed_identical_tokens():
    """Exact mirroring: for a full decode the decoder feeds the model the very
    same [steps, batch] token matrix as the encoder, finished rows included."""
    rec = Recorder(get_model())
    r = runner(rec, precision=30)
    chunks = [b"hello world", b"hi", b"", b"a longer chunk of text"][:2] + [b"the end."]
    payloads = r.encode_wave(3, [0, 1, 2], chunks)
    got = decoded(r, 3, [0, 1, 2], [len(c) for c in chunks], payloads)
    assert got == chunks
    enc, dec = (np.array(x) for x in rec.log)
    assert enc.shape == dec.shape == (max(map(len, chunks)), 3)
    assert (enc == dec).all()


def test_random_access_rows_alone():
    r = runner(get_model(), precision=30)
    chunks = [b"first chunk!", b"second one", b"third, the longest of all", b"4th"]
    payloads = r.encode_wave(4, range(4), chunks)
    for k in range(4):
        assert decoded(r, 4, [k], [len(chunks[k])], [payloads[k]]) == [chunks[k]]
    assert decoded(r, 4, [1, 3], [10, 3], [payloads[1], payloads[3]]) == [chunks[1], chunks[3]]


def test_geometry_matters_for_the_test_model():
    """The fake model depends on batch size and row index (as a real backend
    may), so decoding at the wrong geometry must fail: the tests would catch a
    scheduler that got the geometry wrong."""
    r = runner(get_model(), precision=30)
    chunks = [b"some ordinary english text here"] * 2
    payloads = r.encode_wave(2, [0, 1], chunks)
    for batch, row in [(3, 0), (2, 1), (1, 0)]:
        try:
            got = decoded(r, batch, [row], [len(chunks[0])], [payloads[0]])
        except CodecError:
            continue
        assert got != [chunks[0]]


def test_probe_digest():
    m = get_model()
    r = runner(m, precision=30)
    d4 = r.probe_digest(4)
    assert len(d4) == 64 and d4 == runner(m, precision=30).probe_digest(4)
    assert r.probe_digest(3) != d4
    assert runner(m, precision=24).probe_digest(4) != d4
    assert runner(get_model(variant=1), precision=30).probe_digest(4) != d4


def test_bare_wave_steps_like_the_encoder():
    m = BigramModel()
    r = runner(m, precision=30)
    chunks = [b"abcdef", b"xy"]
    m.steps = 0
    r.bare_wave(2, chunks)
    bare = m.steps
    m.steps = 0
    r.encode_wave(2, [0, 1], chunks)
    assert bare == m.steps == 6


def test_chunk_longer_than_context_is_refused():
    r = runner(get_model(max_context=8), precision=30)
    with pytest.raises(ValueError):
        r.encode_wave(1, [0], [b"123456789"])


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A random-weight ByteLM in the real ONNX Runtime step graph."""
    pytest.importorskip("onnx")
    from pyllmcodec.backends import open_bundle
    from pyllmcodec.models.bundle import load_bundle
    from pyllmcodec.export.testing import make_tiny_bundle

    path = make_tiny_bundle(tmp_path_factory.mktemp("tiny"))
    return open_bundle(load_bundle(path), device="cpu", backend="onnxruntime", threads=1)


def test_real_backend_waves_and_random_access(tiny_onnx):
    """Padding rows, finished rows and single-row random access are exact on
    the real ONNX Runtime graph (its row independence, as the codec uses it)."""
    r = runner(tiny_onnx, precision=30)
    chunks = [b"hello onnx runtime", b"x", b"a somewhat longer chunk of plain text", b"\x00\xff" * 9]
    payloads = r.encode_wave(4, range(4), chunks)
    assert decoded(r, 4, range(4), [len(c) for c in chunks], payloads) == chunks
    for k in range(4):
        assert decoded(r, 4, [k], [len(chunks[k])], [payloads[k]]) == [chunks[k]]
    assert r.probe_digest(4) == runner(tiny_onnx, precision=30).probe_digest(4)


def test_real_backend_archive_roundtrip(tiny_onnx):
    from pyllmcodec import Compressor, Decompressor

    comp = Compressor(tiny_onnx, chunk_size=64, batch_size=3, verify=True)
    data = b"The quick brown fox. " * 20
    assert Decompressor(tiny_onnx).decompress(comp.compress(data)) == data
