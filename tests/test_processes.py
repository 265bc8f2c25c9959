"""Compressor and Decompressor in process pools: they pickle by their
constructor arguments, and the child loads the model again by its registered
name.  Both start methods: "fork" (the child inherits the parent's memory,
its loaded models included) and "spawn" (a fresh interpreter that has only
what pyllmcodec registers itself: the shipped "default" model, loaded by
name, never the test models of conftest.py).
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest
from conftest import needs_default

from pyllmcodec import Compressor, Decompressor
from pyllmcodec.models import available_models

pytestmark = needs_default

INPUTS = [b"", b"x", b"hello, world\n" * 3, "naïve café ☕ — UTF-8\n".encode() * 4,
          b'{"id": 7, "msg": "disk full", "ms": 120}\n' * 2]

METHODS = [m for m in ("fork", "spawn") if m in multiprocessing.get_all_start_methods()]


@pytest.fixture(scope="module")
def comp() -> Compressor:
    """Default threads (all cores): the model has run in this process before
    a fork, so a forked child inherits its ONNX Runtime session."""
    return Compressor("default", batch_size=4)


@pytest.fixture(scope="module")
def expected(comp) -> list[bytes]:
    return [comp.compress(x) for x in INPUTS]


def test_they_pickle_by_configuration(comp):
    c2 = pickle.loads(pickle.dumps(comp))
    assert type(c2) is Compressor and c2.batch_size == 4 and c2 is not comp
    d2 = pickle.loads(pickle.dumps(Decompressor(max_output_size=1 << 16, threads=1)))
    assert d2.max_output_size == 1 << 16
    assert len(pickle.dumps(comp)) < 1000  # arguments, not a model


@pytest.mark.parametrize("method", METHODS)
def test_multiprocessing_pool(method, comp, expected):
    ctx = multiprocessing.get_context(method)
    dec = Decompressor()
    with ctx.Pool(2) as pool:
        blobs = pool.map(comp.compress, INPUTS)
        batches = pool.map(comp.compress_batch, [INPUTS[:3], INPUTS[3:]])
        back = pool.map(dec.decompress, blobs)
        back_batches = pool.map(dec.decompress_batch, batches)
    assert blobs == expected  # the same bytes as in this process
    assert back == INPUTS
    assert batches == [comp.compress_batch(INPUTS[:3]), comp.compress_batch(INPUTS[3:])]
    assert back_batches == [INPUTS[:3], INPUTS[3:]]
    assert [dec.decompress(b) for b in blobs] == INPUTS


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_executor(method, comp, expected):
    ctx = multiprocessing.get_context(method)
    compact = Compressor("default", batch_size=4, frame="compact")
    dec = Decompressor()
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        blobs = list(ex.map(comp.compress, INPUTS))
        frames = ex.submit(compact.compress_batch, INPUTS).result()
        back = list(ex.map(dec.decompress, blobs + frames))
    assert blobs == expected
    assert frames == compact.compress_batch(INPUTS)
    assert back == INPUTS + INPUTS


@pytest.mark.skipif("spawn" not in METHODS, reason="no spawn start method")
def test_spawn_child_has_only_the_shipped_models(comp):
    """What the spawn tests above rely on: a spawned child knows the shipped
    "default" model by name, and none of the test models that conftest.py
    registered in this process."""
    assert "test-bigram" in available_models()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        names = ex.submit(available_models).result()
        assert ex.submit(comp.compress, b"abc").result() == comp.compress(b"abc")
    assert "default" in names and "test-bigram" not in names
