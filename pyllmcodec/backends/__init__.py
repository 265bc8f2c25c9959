"""Inference backends behind the :class:`~.base.StepModel` interface.

* ``onnxruntime`` (the main path): runs the bundle's ONNX step graph.
* ``torch``: runs the same weights in PyTorch (CPU or CUDA), for machines with
  torch but without an ONNX Runtime GPU build.
* ``exact``: an exact integer bundle (:mod:`pyllmcodec.nets.intlm`) on the
  core's native integer step; the same bits on every machine.

The float backends give close but not bit-identical probabilities, so a float
model's archive is decodable only with the backend (and device class) that
wrote it; the probe digest in the archive enforces this.  An exact model's
archive decodes everywhere.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelError
from .base import StepModel, TwoPhaseStepModel

__all__ = ["StepModel", "TwoPhaseStepModel", "open_bundle", "resolve_device"]


def _cuda_present() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl"))


def _torch_cuda() -> bool:
    if not _cuda_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str, backend: str) -> tuple[str, str]:
    """Map ("auto"|"cpu"|"cuda", "auto"|"onnxruntime"|"torch") to a concrete pair.

    ``device="auto"`` picks CUDA only when a GPU is really there (and a backend
    that can use it is importable), so CPU machines never probe for CUDA.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if backend not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"backend must be 'auto', 'onnxruntime' or 'torch', not {backend!r}")
    if device == "auto":
        device = "cuda" if backend in ("auto", "torch") and _torch_cuda() else "cpu"
    if backend == "auto":
        backend = "torch" if device == "cuda" else "onnxruntime"
    if device == "cuda" and backend == "onnxruntime":
        raise ModelError(
            "the ONNX Runtime path of pyllmcodec runs on the CPU; for a GPU use backend='torch' "
            "(pip install 'pyllmcodec[torch]')"
        )
    if device == "cuda" and not _torch_cuda():
        raise ModelError(
            "device='cuda' was requested but no usable CUDA GPU is visible (no NVIDIA device or driver, "
            "or PyTorch without CUDA support); use device='cpu' or 'auto' (CLI: --device cpu).  "
            "Note that an archive written on a GPU decodes only where its numerics can be reproduced "
            "(the probe check says so)"
        )
    return device, backend


def _exact_native(arch: str) -> Any:
    """The native step's model class of an exact architecture."""
    if arch == "llama-int":
        from .exact_llama import ExactLlamaStepModel

        return ExactLlamaStepModel
    from .exact import ExactStepModel

    return ExactStepModel


def _exact_port(arch: str) -> Any:
    """The PyTorch port's model class of an exact architecture (ImportError without torch)."""
    if arch == "llama-int":
        from .exact_llama_torch import TorchExactLlamaStepModel

        return TorchExactLlamaStepModel
    from .exact_torch import TorchExactStepModel

    return TorchExactStepModel


def open_bundle(bundle: Any, *, device: str = "auto", backend: str = "auto",
                threads: int | None = None) -> StepModel:
    """A :class:`StepModel` for a loaded :class:`~pyllmcodec.models.bundle.Bundle`."""
    arch = bundle.manifest.get("architecture")
    if arch in ("bytelm-int", "llama-int"):
        # an exact model: the same bits on every machine, from the core's native step (the CPU) or PyTorch
        if backend == "onnxruntime":
            raise ModelError(f"model {bundle.name!r} is an exact integer model: it runs on the core's native "
                             "step (backend='auto') or in PyTorch (backend='torch'), not in ONNX Runtime")
        if device == "cuda" or backend == "torch":
            device, _ = resolve_device(device, "torch")
            try:
                port = _exact_port(arch)
            except ImportError as e:
                raise ModelError(f"backend='torch' needs PyTorch: pip install 'pyllmcodec[torch]' ({e})") from None
            return port(bundle, device=device, threads=threads)
        return _exact_native(arch)(bundle, threads=threads)
    device, backend = resolve_device(device, backend)
    if backend == "onnxruntime":
        from .onnxruntime import OrtStepModel

        return OrtStepModel(bundle, threads=threads)
    if bundle.manifest.get("architecture") == "llama":
        from .llama import LlamaTorchStepModel

        return LlamaTorchStepModel(bundle, device=device, threads=threads)
    try:
        from .torch import TorchStepModel
    except ImportError as e:
        raise ModelError(f"backend='torch' needs PyTorch: pip install 'pyllmcodec[torch]' ({e})") from None
    return TorchStepModel(bundle, device=device, threads=threads)
