"""ONNX Runtime backend: the bundle's step graph with an in-place KV cache.

Per step, ``run_with_iobinding`` is called on OrtValues that wrap numpy
buffers owned by the state: the token/position inputs are rewritten in place,
each layer's ``present_key/value`` output is bound to the same buffer as its
``past_key/value`` input (GroupQueryAttention then appends the new entry in
place: no cache copy per step), and ``probs`` is written into a preallocated
[B, V] array.  So a step allocates nothing and copies only O(B) numbers.

Session options are fixed here and recorded in :meth:`fingerprint`, because
the graph-optimisation level and the CPU's instruction set change the float
results (and so the quantized tables).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import BundleModel

__all__ = ["OrtStepModel", "cpu_isa_class"]

#: Optimisation level used for every session.  ALL enables layout and fusion
#: passes (SkipLayerNorm, FastGelu, MatMul+Add) that are faster on the CPU; the
#: numerics depend on it, so it is part of the fingerprint and never varies.
GRAPH_OPT_LEVEL = "ORT_ENABLE_ALL"


def cpu_isa_class() -> str:
    """The widest x86 vector ISA the CPU offers (ONNX Runtime's MLAS picks its
    GEMM kernels by it), or the machine name on other architectures.

    Read from CPUID, as MLAS reads it (through numpy's CPU feature detection),
    not from /proc/cpuinfo: an emulator (qemu-user) or a container can pass the
    host's /proc/cpuinfo through while the CPU the code runs on has fewer
    instruction sets; a fingerprint that named the host's class there would
    turn a numerics mismatch into a "corrupt archive"."""
    mach = platform.machine().lower()
    if mach not in ("x86_64", "amd64"):
        return mach
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats  # type: ignore[no-redef]
    for isa, need in (("avx512-vnni", ("AVX512F", "AVX512VNNI")), ("avx512", ("AVX512F",)),
                      ("avx2-fma", ("AVX2", "FMA3")), ("avx", ("AVX",))):
        if all(feats.get(n) for n in need):
            return f"x86_64-{isa}"
    return "x86_64-sse"


class _OrtState:
    def __init__(self, model: OrtStepModel, batch_size: int):
        import onnxruntime as ort

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.position = 0
        B = batch_size
        self.tokens = np.zeros(B, np.int64)
        self.pos = np.zeros(B, np.int64)
        self.seqlens = np.zeros(B, np.int32)
        self.total = np.zeros(1, np.int32)
        kv = model.kv
        shape = (B, kv["n_kv_head"], kv["max_len"], kv["head_dim"])
        self.caches = [np.zeros(shape, np.float32) for _ in range(2 * kv["n_layer"])]
        self.probs = np.empty((B, model.vocab_size), np.float32)
        io = model.session.io_binding()
        self._keep = []
        for name, arr in (("tokens", self.tokens), ("pos", self.pos), ("seqlens_k", self.seqlens),
                          ("total_len", self.total)):
            v = ort.OrtValue.ortvalue_from_numpy(arr)
            self._keep.append(v)
            io.bind_ortvalue_input(name, v)
        for i in range(kv["n_layer"]):
            for j, kind in enumerate(("key", "value")):
                v = ort.OrtValue.ortvalue_from_numpy(self.caches[2 * i + j])
                self._keep.append(v)
                io.bind_ortvalue_input(f"past_{kind}_{i}", v)
                io.bind_ortvalue_output(f"present_{kind}_{i}", v)
        v = ort.OrtValue.ortvalue_from_numpy(self.probs)
        self._keep.append(v)
        io.bind_ortvalue_output("probs", v)
        self.io = io


class OrtStepModel(BundleModel):
    """A bundle's step graph in an ONNX Runtime CPU session."""

    backend = "onnxruntime"

    def __init__(self, bundle: Any, *, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(bundle)
        m = bundle.manifest
        try:
            self.kv = dict(m["graphs"]["step"]["kv_cache"])
        except KeyError:
            raise ModelError(f"bundle {self.name!r} has no step graph with a kv_cache section") from None
        so = ort.SessionOptions()
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVEL)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(bundle.graph_path("step")), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"ONNX Runtime could not load {bundle.graph_path('step')}: {e}") from None
        self._ort_version = ort.__version__

    def new_state(self, batch_size: int) -> _OrtState:
        return _OrtState(self, int(batch_size))

    def step(self, state: _OrtState, tokens: np.ndarray) -> np.ndarray:
        """One token per row -> float32 [B, V] probabilities.  The returned
        array is the state's own buffer: valid until the next step."""
        t = state.position
        if t >= self.max_context:
            raise ValueError(f"state is full: {self.max_context} steps taken")
        state.tokens[:] = tokens
        state.pos.fill(t)
        state.seqlens.fill(t)
        state.total[0] = t + 1
        self.session.run_with_iobinding(state.io)
        state.position = t + 1
        return state.probs

    def fingerprint(self) -> dict[str, str]:
        return {
            "backend": "onnxruntime",
            "backend_version": self._ort_version,
            "provider": "CPUExecutionProvider",
            "device": cpu_isa_class(),
            "graph_optimization_level": GRAPH_OPT_LEVEL,
            "intra_op_threads": str(self.threads),
            "model": f"{self.name}@{self.sha256[:16]}",
        }
