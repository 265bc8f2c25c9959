"""pytest-benchmark suite for end-to-end compression with the default model.

    pytest bench/bench_codec.py                       # measure
    pytest bench/bench_codec.py --benchmark-disable   # CI: run once, check results

One group per batch size: the bare step loop of the same model over the same
chunks (the reference: what the model alone costs), ``compress`` and
``decompress``.  Compare the three rows of a group; each asserts its result.
With ``--benchmark-disable`` (CI's smoke run) only the batch of 8 runs: the
batch of 32 codes 4 times the bytes through the same paths (~70 s there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyllmcodec
from pyllmcodec.models import available_models, load_model

pytestmark = pytest.mark.skipif("default" not in available_models(), reason="no default model shipped")

CHUNK = 1024
DATA = (Path(__file__).resolve().parents[1] / "README.md").read_bytes()


#: the batch sizes measured; the smoke run (--benchmark-disable) takes the first only
BATCHES = [8, 32]


@pytest.fixture(autouse=True)
def _smoke_runs_the_small_batch(request):
    batch = request.node.callspec.params.get("batch") if hasattr(request.node, "callspec") else None
    if batch not in (None, BATCHES[0]) and request.config.getoption("benchmark_disable", False):
        pytest.skip(f"--benchmark-disable: a smoke run, batch {BATCHES[0]} covers the same paths")


def _data(batch: int) -> bytes:
    n = batch * CHUNK
    return (DATA * (1 + n // len(DATA)))[:n]


def _bare_steps(model, data: bytes, batch: int) -> float:
    """The step loop alone over one wave of ``batch`` chunks; returns the ideal bits."""
    sym = np.frombuffer(data, np.uint8).reshape(batch, CHUNK).astype(np.int64)
    st = model.new_state(batch)
    tok = np.full(batch, model.bos, np.int64)
    bits = 0.0
    for t in range(CHUNK):
        p = model.step(st, tok)
        bits -= float(np.log2(p[np.arange(batch), sym[:, t]] / p.sum(1)).sum())
        tok = sym[:, t]
    return bits


@pytest.mark.parametrize("batch", BATCHES)
def test_bare_step_loop(benchmark, batch):
    benchmark.group = f"codec-B{batch}"
    model = load_model("default", device="cpu")
    data = _data(batch)
    bits = benchmark(_bare_steps, model, data, batch)
    assert 0 < bits < 8 * len(data)


@pytest.mark.parametrize("batch", BATCHES)
def test_compress(benchmark, batch):
    benchmark.group = f"codec-B{batch}"
    comp = pyllmcodec.Compressor("default", device="cpu", batch_size=batch)
    data = _data(batch)
    blob = benchmark(comp.compress, data)
    assert len(blob) < len(data)
    assert pyllmcodec.decompress(blob) == data


@pytest.mark.parametrize("batch", BATCHES)
def test_decompress(benchmark, batch):
    benchmark.group = f"codec-B{batch}"
    data = _data(batch)
    blob = pyllmcodec.Compressor("default", device="cpu", batch_size=batch).compress(data)
    dec = pyllmcodec.Decompressor(device="cpu")
    assert benchmark(dec.decompress, blob) == data
