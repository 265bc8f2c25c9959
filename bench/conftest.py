"""Test support for bench/: the repo root on sys.path, and a toy model.

The toy model ("bench-toy") is a fixed byte-bigram table in numpy, so the
pyllmcodec-row machinery (subprocess worker, peak RSS, ideal bits) can be
tested without the shipped model.  The worker imports this module when
``PYLLMCODEC_BENCH_PLUGIN=bench.conftest`` is set, which registers it.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyllmcodec.backends.base import StepModelBase

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TOY_NAME = "bench-toy"
_TEXT = (
    b"the benchmark compares a language model coder with classical compressors. "
    b"every row is checked by a round trip, and the model's ideal code length is "
    b"reported next to the real one, so the coding overhead can be read off.\n"
)


@dataclass
class _State:
    batch_size: int
    position: int = 0


class ToyModel(StepModelBase):
    """Row-independent, geometry-independent bigram StepModel (V=256, bos=256)."""

    vocab_size = 256
    bos = 256
    max_context = 4096
    name = TOY_NAME

    def __init__(self) -> None:
        counts = np.full((257, 256), 0.05)
        t = np.frombuffer(_TEXT, dtype=np.uint8)
        np.add.at(counts, (t[:-1], t[1:]), 1.0)
        counts[256] += np.bincount(t, minlength=256)
        self.table = (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)
        self.sha256 = hashlib.sha256(self.table.tobytes()).hexdigest()

    def new_state(self, batch_size: int) -> _State:
        return _State(int(batch_size))

    def step(self, state: _State, tokens: np.ndarray) -> np.ndarray:
        state.position += 1
        return self.table[tokens]

    def fingerprint(self) -> dict[str, str]:
        return {"backend": "numpy-toy", "numpy": np.__version__}


def register() -> None:
    try:
        from pyllmcodec.models import register_model
    except ImportError:
        return
    model = ToyModel()
    register_model(TOY_NAME, lambda **_: model, replace=True)


register()
