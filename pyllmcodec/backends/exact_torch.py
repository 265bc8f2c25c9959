"""The exact integer step in PyTorch, for CUDA (and the CPU): the same
integers as the native step (:mod:`.exact`) and the numpy reference
(:mod:`pyllmcodec.nets.intlm`), so archives move freely between a GPU and a
CPU-only machine.

How it stays exact on a GPU: every matrix product is of integers whose every
partial sum is below 2**53 in magnitude, computed in float64 (cuBLAS DGEMM
then adds integers exactly, in any order, with or without FMA); TF32 does
not apply to float64.  Everything else is int64 tensor arithmetic (floor
division with ``rounding_mode="floor"``, shifts, clamps, table gathers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..nets import intlm as I
from .base import BundleModel
from .exact import ExactNumerics, load_exact

__all__ = ["TorchExactStepModel"]


def _fdiv(a: torch.Tensor, b: Any) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def _rdiv(a: torch.Tensor, b: Any) -> torch.Tensor:
    return torch.div(2 * a + b, 2 * b, rounding_mode="floor")


def _isqrt(d: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt(d.double()).long()
    for _ in range(2):
        r = torch.where(r * r > d, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= d, r + 1, r)
    return r


class _Lin:
    def __init__(self, x: I.IntLinear, dev: torch.device):
        self.w = torch.from_numpy(x.w.astype(np.float64)).to(dev).T.contiguous()
        self.m = torch.from_numpy(x.m).to(dev)
        self.b = torch.from_numpy(x.b).to(dev)
        self.div = 1 << x.sh
        self.lo, self.hi = x.lo, x.hi

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        acc = torch.round(x.double() @ self.w).long()  # exact: |partial sums| < 2**32
        return torch.clamp(_fdiv(acc * self.m + self.b, self.div), self.lo, self.hi)


class _State:
    def __init__(self, model: TorchExactStepModel, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = model.net
        self.batch_size = int(batch_size)
        self.position = 0
        shape = (len(n.layers), batch_size, n.ctx, n.head_dim)
        self.k = torch.zeros(shape, dtype=torch.float64, device=model.device)
        self.v = torch.zeros(shape, dtype=torch.float64, device=model.device)


class TorchExactStepModel(ExactNumerics, BundleModel):
    """An exact bundle on a PyTorch device; the same bits as the native step."""

    backend = "torch-exact"

    def __init__(self, bundle: Any, *, device: str = "cuda", threads: int | None = None):
        super().__init__(bundle)
        _, self.net = load_exact(bundle)
        self.device = torch.device(device)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(int(threads))
        dev = self.device
        n = self.net
        self.tok = torch.from_numpy(n.tok.astype(np.int64)).to(dev)
        self.pos = torch.from_numpy(n.pos.astype(np.int64)).to(dev)
        self.layers = [
            (_Lin(ly.q, dev), _Lin(ly.kv, dev), _Lin(ly.o, dev), _Lin(ly.fc1, dev), _Lin(ly.fc2, dev),
             ly.att_shift, torch.from_numpy(ly.gelu.astype(np.int64)).to(dev))
            for ly in n.layers
        ]
        self.head = _Lin(n.head, dev)
        self.expa = torch.from_numpy(np.append(n.expa, 0)).to(dev)
        self.expl = torch.from_numpy(n.expl).to(dev)
        self.row_state_bytes = 16 * n.ctx * n.head_dim * len(n.layers) + 4 * self.vocab_size

    def new_state(self, batch_size: int) -> _State:
        return _State(self, int(batch_size))

    def _ln(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        c = x - _fdiv(x.sum(-1, keepdim=True), d)
        r = _isqrt((c * c).sum(-1, keepdim=True) + self.net.ln_eps)
        return torch.clamp(_rdiv(c * self.net.ln_k, r), -I.ACT16, I.ACT16)

    @torch.inference_mode()
    def step_int(self, state: _State, tokens: np.ndarray) -> torch.Tensor:
        """One step -> int64 EXPL values [B, V] on the device."""
        t = state.position
        if t >= self.max_context:
            raise ValueError(f"state is full: {self.max_context} steps taken")
        n = self.net
        B, hd, H = state.batch_size, n.head_dim, n.n_head
        tok = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(self.device)
        x = torch.clamp(self.tok[tok] + self.pos[t], -I.RES_CLAMP, I.RES_CLAMP)
        na = len(self.expa) - 1
        for i, (q_, kv_, o_, f1, f2, shift, gelu) in enumerate(self.layers):
            h = self._ln(x)
            q = q_(h).view(B, H, hd).double()
            kv = kv_(h)
            state.k[i, :, t] = kv[:, :hd].double()
            state.v[i, :, t] = kv[:, hd:].double()
            k = state.k[i, :, : t + 1]
            v = state.v[i, :, : t + 1]
            s = torch.round(torch.einsum("bhd,btd->bht", q, k)).long()  # exact: < 2**31
            idx = torch.clamp((s.max(-1, keepdim=True).values - s) >> shift, max=na)
            e = self.expa[idx]
            z = e.sum(-1, keepdim=True)
            a = torch.round(torch.einsum("bht,btd->bhd", e.double(), v)).long()  # exact: < 2**41
            a = _rdiv(a << I.ATT_OUT_SHIFT, z).reshape(B, H * hd)
            x = torch.clamp(x + o_(a), -I.RES_CLAMP, I.RES_CLAMP)
            g = f1(self._ln(x))
            x = torch.clamp(x + f2(gelu[g + I.GELU_CLAMP]), -I.RES_CLAMP, I.RES_CLAMP)
        logits = self.head(self._ln(x))
        state.position = t + 1
        idx = torch.clamp(logits.max(-1, keepdim=True).values - logits, max=len(self.expl) - 1)
        return self.expl[idx]

    def step(self, state: _State, tokens: np.ndarray) -> np.ndarray:
        w = self.step_int(state, tokens)
        if self.integer_rows:  # EXPL values are < 2**25: int32 on the device, uint32 on the host
            return np.ascontiguousarray(w.to(torch.int32).cpu().numpy().view(np.uint32))
        return np.ascontiguousarray(w.to(torch.float32).cpu().numpy())
