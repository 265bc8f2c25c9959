"""The exact integer Llama in PyTorch, for CUDA (and the CPU): the same
integers as the native step (:mod:`.exact_llama`) and the numpy reference
(:mod:`pyllmcodec.nets.intllama`), so archives of the exact SmolLM2 tier move
between a GPU and a CPU-only machine.

It stays exact the way :mod:`.exact_torch` does: the block dot products are
integers below 2**24 computed as float64 matrix products (exact in any order,
TF32 does not apply to float64); everything else is int64 tensor arithmetic
(floor divisions, shifts, clamps, table gathers) written as the reference
writes it.  It is a port for equality, not for speed: the CPU's native step
is the fast path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..mixer import WaveSpec
from ..nets import intllama as il
from .base import BundleModel
from .exact import CDF_INT
from .exact_llama import _load_tables, load_exact_llama
from .exact_torch import _fdiv, _isqrt, _rdiv

__all__ = ["TorchExactLlamaStepModel"]

_BITS = (32, 16, 8, 4, 2, 1)


def _rsr(p: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=torch.int64, device=p.device).expand_as(p)
    pos = torch.clamp(s, min=1)
    right = (p + (torch.ones_like(p) << (pos - 1))) >> pos
    return torch.where(s > 0, right, p << torch.clamp(-s, min=0))


def _bitlen(n: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(n)
    for sh in _BITS:
        big = (n >> sh) > 0
        out = out + big.long() * sh
        n = torch.where(big, n >> sh, n)
    return out + (n > 0).long()


def _quant_blocks(y: torch.Tensor, D: torch.Tensor, sh: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """:func:`pyllmcodec.nets.intllama.quant_blocks` (the same integers)."""
    B, n = y.shape
    yb = y.view(B, n // il.BLOCK, il.BLOCK)
    ymax = yb.abs().amax(-1)
    safe = torch.clamp(ymax, min=1)
    xq = torch.where(ymax[..., None] > 0, _rdiv(127 * yb, safe[..., None]), torch.zeros_like(yb)).view(B, n)
    X = 127 * D
    j0 = _bitlen(X) - _bitlen(safe)
    fits = torch.where(j0 >= 0, (safe << torch.clamp(j0, min=0)) < X, safe < (X << torch.clamp(-j0, min=0)))
    e_b = torch.where(fits, j0, j0 - 1) + il.A_BITS - sh
    live = ymax > 0
    big = torch.full_like(e_b, il.MAX_EXP)
    eA = torch.where(live.any(-1), torch.clamp(torch.where(live, e_b, big).amin(-1), max=il.MAX_EXP),
                     torch.zeros_like(ymax[:, 0]))
    k = eA[:, None] + sh
    num = torch.where(k >= 0, safe << torch.clamp(k, 0, 62), safe >> torch.clamp(-k, 0, 63))
    A = torch.where(live, _fdiv(num, X), torch.zeros_like(num))
    return xq, A, eA


class _Lin:
    """A Q4_1 (or Q8_0) matrix: weights as float64 [nb, 32, out] on the device."""

    def __init__(self, x: il.QLinear, dev: torch.device):
        out, n = x.q.shape
        nb = n // il.BLOCK
        w = torch.from_numpy(x.q.reshape(out, nb, il.BLOCK).astype(np.float64)).to(dev)
        self.w = w.permute(1, 2, 0).contiguous()
        self.d = torch.from_numpy(x.d).to(dev)
        self.m = None if x.m is None else torch.from_numpy(x.m).to(dev)
        self.e = torch.from_numpy(x.e).to(dev)

    def __call__(self, xq: torch.Tensor, A: torch.Tensor, eA: torch.Tensor, U: int, out_unit: int,
                 clamp: int) -> torch.Tensor:
        B, n = xq.shape
        nb = n // il.BLOCK
        xb = xq.view(B, nb, il.BLOCK).double().transpose(0, 1)  # [nb, B, 32]
        S = torch.round(torch.bmm(xb, self.w)).long().permute(1, 2, 0)  # [B, out, nb]: exact, |S| < 2**24
        inner = S * self.d[None]
        if self.m is not None:
            T = xq.view(B, nb, il.BLOCK).sum(-1)
            inner = inner + T[:, None, :] * self.m[None]
        P = (inner * A[:, None, :]).sum(-1)
        s = eA[:, None] + U + self.e[None, :] - out_unit
        lim = torch.ones_like(s) << torch.clamp(62 + torch.clamp(s, max=0), 0, 62)
        return torch.clamp(_rsr(torch.maximum(torch.minimum(P, lim), -lim), s), -clamp, clamp)


class _State:
    def __init__(self, model: TorchExactLlamaStepModel, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n, dev = model.net, model.device
        L, KV, hd, C = n.n_layer, n.n_kv_head, n.head_dim, model.max_context
        self.batch_size = int(batch_size)
        self.position = 0
        self.k = torch.zeros((L, batch_size, C, KV, hd), dtype=torch.int64, device=dev)
        self.v = torch.zeros_like(self.k)
        self.kmax = torch.zeros((L, batch_size, C, KV), dtype=torch.int64, device=dev)
        self.vmax = torch.zeros_like(self.kmax)


class TorchExactLlamaStepModel(BundleModel):
    """The exact SmolLM2 tier in PyTorch (CUDA or CPU): the native step's integers."""

    backend = "exact"
    integer_rows = True

    def __init__(self, bundle: Any, *, device: str = "cpu", threads: int | None = None):
        super().__init__(bundle)
        if self.default_mixer is None:  # the tier's match model, unless the bundle names one
            self.default_mixer = WaveSpec()
        tables, self._tables_digest = _load_tables()
        self.net = il.from_arrays(dict(load_exact_llama(bundle)), tables)
        self.device = torch.device(device)
        if threads:
            torch.set_num_threads(int(threads))
        dev, n = self.device, self.net
        self.layers = [{k: _Lin(v, dev) for k, v in ly.items()} for ly in n.layers]
        self.norms = [(torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)) for a, b in n.norms]
        self.norm = torch.from_numpy(n.norm).to(dev)
        self.embed = _Lin(n.embed, dev)
        self.emb_q = torch.from_numpy(n.embed.q.astype(np.int64)).to(dev)
        self.emb_d = torch.from_numpy(n.embed.d).to(dev)
        self.emb_e = torch.from_numpy(n.embed.e).to(dev)
        t = {k: torch.from_numpy(getattr(n, k)).to(dev) for k in ("rope_cos", "rope_sin", "silu", "expa", "expl")}
        self.t = t
        cfg = bundle.manifest["config"]
        hd = int(cfg["d_model"]) // int(cfg["n_head"])
        self.row_state_bytes = (2 * int(cfg["n_layer"]) * self.max_context * int(cfg["n_kv_head"]) * (hd + 1) * 8
                                + 4 * self.vocab_size)

    def fingerprint(self) -> dict[str, str]:
        # the same as the native step's: the same integers on every device
        return {"backend": "exact", "numerics": il.NUMERICS, "model": f"{self.name}@{self.sha256[:16]}",
                "tables": self._tables_digest[:16], "cdf": CDF_INT}

    def new_state(self, batch_size: int) -> _State:
        return _State(self, int(batch_size))

    def _rms(self, x: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, d = x.shape
        s = torch.clamp(_bitlen(x.abs().amax(-1)) - il.SS_BITS, min=0)
        z = x >> s[:, None]
        ms = _fdiv((z * z).sum(-1), d) + (torch.full_like(s, self.net.eps) >> (2 * s))
        r = torch.clamp(_isqrt(ms), min=1)
        nb = d // il.BLOCK
        return _quant_blocks(z * gain[None], r[:, None].expand(B, nb), torch.zeros((B, nb), dtype=torch.int64,
                                                                                     device=x.device))

    def _rotate(self, v: torch.Tensor, t: int) -> torch.Tensor:
        c, s = self.t["rope_cos"][t], self.t["rope_sin"][t]
        h = v.shape[-1] // 2
        a, b = v[..., :h], v[..., h:]
        return torch.cat([_rsr(a * c - b * s, il.ROPE_BITS), _rsr(b * c + a * s, il.ROPE_BITS)], -1)

    @staticmethod
    def _kvq(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mx = v.abs().amax(-1)
        q = torch.where(mx[..., None] > 0, _rdiv(127 * v, torch.clamp(mx, min=1)[..., None]), torch.zeros_like(v))
        return q, mx

    def _attend(self, q: torch.Tensor, k8: torch.Tensor, kmax: torch.Tensor, v8: torch.Tensor,
                vmax: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.net
        B, H, hd = q.shape
        g = H // n.n_kv_head
        sq = torch.clamp(_bitlen(q.abs().amax(-1)) - il.A_BITS, min=0)  # [B, H]
        q16 = torch.clamp(_rsr(q, sq[..., None]), -32767, 32767)
        kk = k8.repeat_interleave(g, dim=2)  # [B, T, H, hd]
        S = torch.round(torch.einsum("bhd,bthd->bht", q16.double(), kk.double())).long()  # exact: < 2**28
        S = S * kmax.repeat_interleave(g, dim=2).transpose(1, 2)
        den = 127 * (torch.ones_like(sq) << (29 - sq))
        idx = _fdiv(S.amax(-1, keepdim=True) - S, den[..., None])
        ea = self.t["expa"]
        e = torch.where(idx < len(ea), ea[torch.clamp(idx, max=len(ea) - 1)], torch.zeros_like(idx))
        Z = e.sum(-1)
        gw = e * vmax.repeat_interleave(g, dim=2).transpose(1, 2)
        vs = torch.clamp(_bitlen(gw.amax(-1)) - il.A_BITS, min=0)
        w = gw >> vs[..., None]
        a = torch.round(torch.einsum("bht,bthd->bhd", w.double(), v8.repeat_interleave(g, dim=2).double())).long()
        per = hd // il.BLOCK
        return _quant_blocks(a.reshape(B, H * hd), (127 * Z).repeat_interleave(per, dim=1),
                             vs.repeat_interleave(per, dim=1))

    def _silu(self, gt: torch.Tensor) -> torch.Tensor:
        tab = self.t["silu"]
        i = torch.clamp((gt >> il.SILU_STEP) + (il.SILU_HALF >> il.SILU_STEP), 0, len(tab) - 2)
        f = gt & ((1 << il.SILU_STEP) - 1)
        lo = tab[i]
        mid = lo + _rsr((tab[i + 1] - lo) * f, il.SILU_STEP)
        return torch.where(gt >= il.SILU_HALF, gt, torch.where(gt < -il.SILU_HALF, torch.zeros_like(gt), mid))

    @torch.inference_mode()
    def step(self, state: _State, tokens: np.ndarray) -> np.ndarray:
        """One token per row -> uint32 [B, V] weights."""
        t = state.position
        if t >= self.max_context:
            raise ValueError(f"state is full: {self.max_context} steps taken")
        n, dev = self.net, self.device
        tok = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(dev)
        B = tok.shape[0]
        H, KV, hd, U = n.n_head, n.n_kv_head, n.head_dim, il.UNIT
        x = _rsr(self.emb_q[tok] * self.emb_d[tok].repeat_interleave(il.BLOCK, dim=1), self.emb_e[tok][:, None] - U)
        x = torch.clamp(x, -il.RES_CLAMP, il.RES_CLAMP)
        for i, ly in enumerate(self.layers):
            g1, g2 = self.norms[i]
            xq, A, eA = self._rms(x, g1)
            q = self._rotate(ly["q"](xq, A, eA, U, U, il.QKV_CLAMP).view(B, H, hd), t)
            k = self._rotate(ly["k"](xq, A, eA, U, U, il.QKV_CLAMP).view(B, KV, hd), t)
            v = ly["v"](xq, A, eA, U, U, il.QKV_CLAMP).view(B, KV, hd)
            state.k[i, :, t], state.kmax[i, :, t] = self._kvq(k)
            state.v[i, :, t], state.vmax[i, :, t] = self._kvq(v)
            aq, aA, aE = self._attend(q, state.k[i, :, : t + 1], state.kmax[i, :, : t + 1],
                                      state.v[i, :, : t + 1], state.vmax[i, :, : t + 1])
            x = torch.clamp(x + ly["o"](aq, aA, aE, U, U, il.RES_CLAMP), -il.RES_CLAMP, il.RES_CLAMP)
            xq, A, eA = self._rms(x, g2)
            y = self._silu(ly["gate"](xq, A, eA, U, U, il.QKV_CLAMP)) * ly["up"](xq, A, eA, U, U, il.QKV_CLAMP)
            nb = n.d_mlp // il.BLOCK
            mq, mA, mE = _quant_blocks(y, torch.ones((B, nb), dtype=torch.int64, device=dev),
                                       torch.zeros((B, nb), dtype=torch.int64, device=dev))
            x = torch.clamp(x + ly["down"](mq, mA, mE, 2 * U, U, il.RES_CLAMP), -il.RES_CLAMP, il.RES_CLAMP)
        xq, A, eA = self._rms(x, self.norm)
        logits = self.embed(xq, A, eA, U, il.LOGIT_UNIT, il.LOGIT_CLAMP)
        state.position = t + 1
        el = self.t["expl"]
        idx = torch.clamp(logits.amax(-1, keepdim=True) - logits, max=len(el) - 1)
        return el[idx].cpu().numpy().astype(np.uint32)
