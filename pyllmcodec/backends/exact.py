"""The exact integer step: a bundle of the exact byte model
(:mod:`pyllmcodec.nets.intlm`) run by the native kernel in the core
(``csrc/intlm.hpp``).

Its probabilities are integers computed with integer arithmetic and shipped
tables only, so they are the same bits on every CPU class, at every thread
count and batch size: an archive it writes opens on any machine that has the
bundle.  Its fingerprint therefore names the model and the numerics and
nothing about the machine.

Why a native step and not an ONNX graph: the arithmetic needs an exact
integer square root and floor divisions at every LayerNorm and softmax, which
ONNX has no integer operators for, and ONNX Runtime picks its integer GEMM
kernels per instruction set (the AVX2 u8 x s8 kernels saturate 16-bit
intermediates); a loop of integer multiply-adds that the compiler vectorises
cannot saturate and is exact by construction.  The numpy reference in
:mod:`pyllmcodec.nets.intlm` is the specification the kernel is tested
against bit for bit.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

from .. import _core
from ..errors import ModelError
from ..nets import intlm
from .base import BundleModel

__all__ = ["CDF_INT", "ExactNumerics", "ExactStepModel", "load_exact"]

#: the bundle file that holds the integers
INT_FILE = "intlm.npz"
#: how an exact model's rows reach the coder, named in the fingerprint: its
#: uint32 weights through the core's integer quantizer (``core.quantize_int``,
#: no float anywhere).  Archives written before the integer entry existed
#: (model ``default-exact`` 1.6.0 as first released) carry no ``cdf`` key:
#: their rows went to the float quantizer as float32 (the same integers,
#: exact), which :meth:`ExactNumerics.legacy_numerics` reproduces so that
#: they keep decoding.
CDF_INT = "int/1"


class ExactNumerics:
    """What the native step and the PyTorch port share: the fingerprint and
    the legacy variant (a shallow copy that shares the weights and returns
    float32 rows)."""

    name: str
    sha256: str
    integer_rows = True
    _legacy: list[Any] | None = None

    def fingerprint(self) -> dict[str, str]:
        # NOTE: nothing about the machine: the numerics are the same everywhere
        fp = {"backend": "exact", "numerics": intlm.NUMERICS, "model": f"{self.name}@{self.sha256[:16]}"}
        if self.integer_rows:
            fp["cdf"] = CDF_INT
        return fp

    def legacy_numerics(self) -> list[Any]:
        if not self.integer_rows:
            return []
        if self._legacy is None:  # kept: the codec caches sessions per model object
            old = copy.copy(self)
            old.integer_rows = False
            self._legacy = [old]
        return self._legacy


class _ExactState:
    def __init__(self, model: ExactStepModel, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.native = model.native.new_state(int(batch_size))
        self.batch_size = int(batch_size)
        self.probs: Any = np.empty((self.batch_size, model.vocab_size), np.uint32 if model.integer_rows else np.float32)

    @property
    def position(self) -> int:
        return int(self.native.position)

    @position.setter
    def position(self, value: int) -> None:  # benchmarks move a state; the cache keeps its contents
        self.native.position = int(value)


def load_exact(bundle: Any) -> tuple[dict[str, np.ndarray], intlm.IntModel]:
    """An exact bundle's arrays and the validated model they make, checked
    against its manifest: what the native step and the PyTorch port load
    (a ModelError says what is wrong)."""
    m = bundle.manifest
    name = bundle.name
    if m.get("numerics") != intlm.NUMERICS:
        raise ModelError(f"bundle {name!r} has numerics {m.get('numerics')!r}; this pyllmcodec runs "
                         f"exact bundles of numerics {intlm.NUMERICS!r}: upgrade pyllmcodec")
    path = bundle.path / INT_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ModelError(f"bundle {name!r}: cannot read {path}: {e}") from None
    try:
        net = intlm.from_arrays(arrays)
    except ValueError as e:
        raise ModelError(f"bundle {name!r}: {INT_FILE} is damaged or not an exact model: {e}") from None
    if net.head.w.shape[0] != int(m["vocab"]["size"]) or net.ctx < int(m["context_length"]) or \
            net.tok.shape[0] <= int(m["vocab"]["bos"]):
        raise ModelError(f"bundle {name!r}: {INT_FILE} does not match its manifest (vocabulary, context or bos)")
    return arrays, net


class ExactStepModel(ExactNumerics, BundleModel):
    """An exact bundle behind the StepModel interface (CPU, any thread count)."""

    backend = "exact"

    def __init__(self, bundle: Any, *, threads: int | None = None):
        super().__init__(bundle)
        arrays, net = load_exact(bundle)
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        try:
            self.native = _core.IntLM(arrays, threads=self.threads)
        except ValueError as e:
            raise ModelError(f"bundle {self.name!r}: {INT_FILE} rejected by the native step: {e}") from None
        # int16 keys and values of every layer (the native cache pads head_dim to 64 and the context
        # to a multiple of 16), and the row's weights
        self.row_state_bytes = 4 * -(-net.ctx // 16) * 16 * 64 * len(net.layers) + 4 * self.vocab_size

    def new_state(self, batch_size: int) -> _ExactState:
        return _ExactState(self, int(batch_size))

    def step(self, state: _ExactState, tokens: np.ndarray) -> np.ndarray:
        """One token per row -> uint32 [B, V] weights (unnormalised
        probabilities; float32 for the legacy numerics).  The returned array
        is the state's own buffer."""
        if state.position >= self.max_context:
            raise ValueError(f"state is full: {self.max_context} steps taken")
        self.native.step(state.native, np.ascontiguousarray(tokens, dtype=np.int64), state.probs)
        return state.probs
