"""The exact SmolLM2 tier: a bundle of the exact integer Llama
(:mod:`pyllmcodec.nets.intllama`) run by the native step in the core
(``csrc/intllama.hpp``).

As for the exact byte model (:mod:`.exact`), its rows are integers computed
with integer arithmetic and the package's tables only, so they are the same
bits on every CPU class, thread count and batch size, and go to the coder
through the core's integer quantizer.  The fingerprint names the model, the
numerics and the tables, nothing about the machine.

Why not ONNX Runtime's integer kernels: ``MatMulInteger`` has no 4-bit
blocks with per-block scales and minimums (the weights would have to be
widened, and the block sums recombined outside it), ORT's u8 x s8 kernels
are chosen per instruction set (the AVX2 ones saturate 16-bit
intermediates), and the attention over an int8 cache with per-position
scales has no operator at all; the native step does all of it exactly.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from .. import _core
from ..errors import ModelError
from ..mixer import WaveSpec
from ..models.bundle import read_arrays
from ..nets import intllama
from .base import BundleModel
from .exact import CDF_INT

__all__ = ["ExactLlamaStepModel", "load_exact_llama", "tables_digest"]

#: the bundle file that holds the integers (:func:`pyllmcodec.models.bundle.write_arrays`)
ARRAYS_FILE = "intllama.bin"

_tables: dict[str, Any] = {}


def _load_tables() -> tuple[dict[str, np.ndarray], str]:
    if not _tables:
        try:
            t = intllama.load_tables()
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"the exact Llama's tables ({intllama.TABLES_FILE}) are damaged: {e}; "
                             "reinstall pyllmcodec") from None
        h = hashlib.sha256()
        for k in sorted(t):
            h.update(k.encode() + b"\0" + np.ascontiguousarray(t[k]).tobytes())
        _tables["t"], _tables["digest"] = t, h.hexdigest()
    return _tables["t"], _tables["digest"]


def tables_digest() -> str:
    """SHA-256 of the shipped tables' contents (part of the fingerprint)."""
    return _load_tables()[1]


def load_exact_llama(bundle: Any) -> dict[str, np.ndarray]:
    """An exact Llama bundle's arrays, validated against the arithmetic's
    bounds and its manifest (a ModelError says what is wrong)."""
    m = bundle.manifest
    name = bundle.name
    if m.get("numerics") != intllama.NUMERICS:
        raise ModelError(f"bundle {name!r} has numerics {m.get('numerics')!r}; this pyllmcodec runs exact "
                         f"Llama bundles of numerics {intllama.NUMERICS!r}: upgrade pyllmcodec")
    if not isinstance(m.get("arrays"), dict):
        raise ModelError(f"bundle {name!r}: its manifest has no array index")
    arrays = read_arrays(bundle.path / ARRAYS_FILE, m["arrays"])
    try:
        net = intllama.from_arrays(arrays, _load_tables()[0], unpack=False)
    except ValueError as e:
        raise ModelError(f"bundle {name!r}: {ARRAYS_FILE} is damaged or not an exact Llama: {e}") from None
    if net.vocab != int(m["vocab"]["size"]) or net.ctx < int(m["context_length"]) or \
            net.vocab <= int(m["vocab"]["bos"]):
        raise ModelError(f"bundle {name!r}: {ARRAYS_FILE} does not match its manifest (vocabulary, context or bos)")
    return arrays


class _State:
    def __init__(self, model: ExactLlamaStepModel, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.native = model.native.new_state(int(batch_size))
        self.batch_size = int(batch_size)
        self.probs = np.empty((self.batch_size, model.vocab_size), np.uint32)

    @property
    def position(self) -> int:
        return int(self.native.position)

    @position.setter
    def position(self, value: int) -> None:
        self.native.position = int(value)


class ExactLlamaStepModel(BundleModel):
    """An exact Llama bundle behind the StepModel interface (CPU, any thread count)."""

    backend = "exact"
    integer_rows = True

    def __init__(self, bundle: Any, *, threads: int | None = None):
        super().__init__(bundle)
        if self.default_mixer is None:  # the tier's match model, unless the bundle names one
            self.default_mixer = WaveSpec()
        arrays = load_exact_llama(bundle)
        tables, self._tables_digest = _load_tables()
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        try:
            self.native = _core.IntLlama(arrays, tables, threads=self.threads)
        except ValueError as e:
            raise ModelError(f"bundle {self.name!r}: {ARRAYS_FILE} rejected by the native step: {e}") from None
        cfg = bundle.manifest["config"]
        hd = int(cfg["d_model"]) // int(cfg["n_head"])
        # int8 keys and values with one int64 scale per position and KV head, and the row's weights
        self.row_state_bytes = (2 * int(cfg["n_layer"]) * self.max_context * int(cfg["n_kv_head"]) * (hd + 8)
                                + 4 * self.vocab_size)

    def fingerprint(self) -> dict[str, str]:
        # NOTE: nothing about the machine: the numerics are the same everywhere
        return {"backend": "exact", "numerics": intllama.NUMERICS, "model": f"{self.name}@{self.sha256[:16]}",
                "tables": self._tables_digest[:16], "cdf": CDF_INT}

    def new_state(self, batch_size: int) -> _State:
        return _State(self, int(batch_size))

    def step(self, state: _State, tokens: np.ndarray) -> np.ndarray:
        """One token per row -> uint32 [B, V] weights (the state's own buffer)."""
        if state.position >= self.max_context:
            raise ValueError(f"state is full: {self.max_context} steps taken")
        self.native.step(state.native, np.ascontiguousarray(tokens, dtype=np.int64), state.probs)
        return state.probs
