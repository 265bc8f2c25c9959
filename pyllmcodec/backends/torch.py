"""PyTorch backend: the bundle's weights in :class:`~pyllmcodec.nets.bytelm.ByteLM`,
stepped with a preallocated KV cache (CPU or CUDA).

Its probabilities are close to, but not bit-identical with, the ONNX Runtime
backend's; an archive records which backend and device wrote it and the probe
digest refuses a mismatched decoder.  On CUDA the step runs in float32 with
TF32 disabled so that results do not depend on a global torch setting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models.bundle import float_tensors
from ..nets.bytelm import ByteLM, ByteLMConfig
from .base import BundleModel

__all__ = ["TorchStepModel", "load_bytelm"]


def load_bytelm(bundle: Any) -> ByteLM:
    """Rebuild ByteLM from a bundle's ``weights.bin`` and tensor table."""
    m = bundle.manifest
    cfg = ByteLMConfig(**{k: v for k, v in m["config"].items() if k in ByteLMConfig.__dataclass_fields__})
    sd = {k: torch.from_numpy(a) for k, a in float_tensors(bundle).items()}
    model = ByteLM(cfg)
    model.load_state_dict(sd)
    return model.eval()


class _TorchState:
    def __init__(self, model: TorchStepModel, batch_size: int):
        c = model.net.c
        self.batch_size = batch_size
        self.position = 0
        shape = (batch_size, c.n_kv_head, model.max_context, c.head_dim)
        dev = model.device
        self.k = [torch.zeros(shape, device=dev) for _ in range(c.n_layer)]
        self.v = [torch.zeros(shape, device=dev) for _ in range(c.n_layer)]
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=dev)


class TorchStepModel(BundleModel):
    """A bundle's network in PyTorch behind the StepModel interface.

    ``net`` is any module with a config ``net.c`` (``n_layer``, ``n_kv_head``,
    ``head_dim``) and ``net.step(kcache, vcache, tokens, t) -> logits``; by
    default the bundle's ByteLM.  Subclasses (the Llama tier) add a tokenizer
    and the two-phase large-vocabulary steps.
    """

    backend = "torch"

    def __init__(self, bundle: Any, *, device: str = "cpu", threads: int | None = None,
                 net: torch.nn.Module | None = None):
        super().__init__(bundle)
        self.device = torch.device(device)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(int(threads))
        self.threads = threads
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        #: ByteLM, or another network with a config ``c`` and ``step`` (docstring)
        self.net: Any = (net if net is not None else load_bytelm(bundle)).to(self.device)

    def new_state(self, batch_size: int) -> _TorchState:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return _TorchState(self, int(batch_size))

    @torch.inference_mode()
    def step_logits(self, state: _TorchState, tokens: np.ndarray) -> torch.Tensor:
        """One step; the logits ``[B, vocab]`` stay on the device."""
        t = state.position
        if t >= self.max_context:
            raise ValueError(f"state is full: {self.max_context} steps taken")
        state.tokens.copy_(torch.from_numpy(np.asarray(tokens, dtype=np.int64)))
        logits = self.net.step(state.k, state.v, state.tokens, t)
        state.position = t + 1
        return logits

    @torch.inference_mode()
    def step(self, state: _TorchState, tokens: np.ndarray) -> np.ndarray:
        probs = torch.softmax(self.step_logits(state, tokens), -1)
        return np.ascontiguousarray(probs.float().cpu().numpy())

    def fingerprint(self) -> dict[str, str]:
        dev = self.device.type
        if dev == "cuda":
            dev = "cuda:" + torch.cuda.get_device_name(self.device)
        else:
            from .onnxruntime import cpu_isa_class

            dev = cpu_isa_class()
        return {
            "backend": "torch",
            "backend_version": torch.__version__,
            "provider": self.device.type,
            "device": dev,
            "graph_optimization_level": "eager",
            "intra_op_threads": str(self.threads or torch.get_num_threads()),
            "model": f"{self.name}@{self.sha256[:16]}",
        }
