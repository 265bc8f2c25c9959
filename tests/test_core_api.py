"""Public names, constants, docstrings and the threading model of pyllmcodec.core."""

from __future__ import annotations

import threading

import numpy as np

import pyllmcodec
from pyllmcodec import core


def test_public_names():
    assert pyllmcodec.__version__ == "0.4.0"
    assert pyllmcodec.core is core
    assert issubclass(pyllmcodec.CodecError, Exception)
    for name in [
        "quantize",
        "BatchEncoder",
        "BatchDecoder",
        "DEFAULT_PRECISION",
        "MIN_PRECISION",
        "MAX_PRECISION",
        "MAX_SYMBOLS",
        "kernels",
    ]:
        assert name in core.__all__
        assert hasattr(core, name)
    for method in ["encode", "encode_probs", "encode_ranges", "finish"]:
        assert callable(getattr(core.BatchEncoder, method))
    for method in ["decode", "decode_probs", "targets", "advance", "positions"]:
        assert callable(getattr(core.BatchDecoder, method))


def test_every_function_has_a_docstring():
    assert core.quantize.__doc__ and "2**precision" in core.quantize.__doc__
    for cls in (core.BatchEncoder, core.BatchDecoder):
        assert cls.__doc__
        for name, member in vars(cls).items():
            if not name.startswith("_"):
                assert member.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_separate_coders_in_threads_give_the_same_bits():
    rng = np.random.default_rng(0)
    probs = rng.random((50, 64, 512)).astype(np.float32)
    symbols = rng.integers(0, 512, (50, 64))

    def run(out, i):
        enc = core.BatchEncoder(64)
        for p, s in zip(probs, symbols):
            enc.encode_probs(p, s)
        out[i] = enc.finish()

    out = [None] * 4
    threads = [threading.Thread(target=run, args=(out, i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[0] == out[1] == out[2] == out[3]


def test_one_coder_shared_by_threads_never_corrupts():
    """Concurrent use of one object raises RuntimeError in the loser, or works."""
    rng = np.random.default_rng(1)
    p = rng.random((256, 4096)).astype(np.float32)
    enc = core.BatchEncoder(256)
    errors = []

    def run():
        for _ in range(20):
            try:
                enc.encode_probs(p, np.zeros(256, np.int64))
            except RuntimeError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("another thread" in e for e in errors)
    streams = enc.finish()
    n_ok = 40 - len(errors)
    dec = core.BatchDecoder(streams)
    for _ in range(n_ok):
        assert (dec.decode_probs(p) == 0).all()
