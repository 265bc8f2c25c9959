"""The core quantizer's algorithm in PyTorch, for probabilities that live on an
accelerator (the two-phase large-vocabulary step).

Moving ``[B, 49152]`` float32 probabilities to the host each step costs more
than the model on a GPU; with these functions only O(B) numbers cross:

* encoder: :func:`symbol_ranges` -> each row's ``(cum_low, freq)`` at the
  known symbol, for ``BatchEncoder.encode_ranges``;
* decoder: ``BatchDecoder.targets`` in, :func:`find_symbols` ->
  ``(symbol, cum_low, freq)`` out, for ``BatchDecoder.advance``.

Bit-exactness (NOTE): the tables are the ones ``core.quantize`` builds from the
same float32 row, step for step of the contract in ``csrc/quantizer.hpp``:

1. float32 pair sums ``q_j = (p[i+j] + p[i+8+j]) + (p[i+16+j] + p[i+24+j])``
   per block of 32 (element-wise IEEE adds: exact on any device), then each
   of the 8 float64 lanes accumulates its ``q_j`` block after block *in
   order*, the tail element ``t`` into lane ``t % 8``; the lanes are combined
   ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``.  The in-order accumulation is a
   sequential scan: on the CPU ``torch.cumsum`` is exactly that loop; on other
   devices (whose scans reassociate) an explicit loop over the blocks is used.
2. ``pre`` = 2^100 if ``S < 2^-64`` else 1; ``s32 = float32(c / (S * pre))``
   in float64, ``c = 2^P - V - (2^P >> 20)``.
3. ``f[i] = 1 + trunc(float32(float32(p[i] * pre) * s32))`` for ``i < V-1``
   (two separate float32 multiplies: no FMA), the last symbol takes the rest;
   cumulative sums in int64 (exact in any order).

``tests/test_smollm2.py`` checks the tables against ``core.quantize`` bit for
bit on CPU tensors, including rows that exercise the tail and the ``pre``
rescaling.  The fused GPU kernel that would make step 1 cheap on CUDA is not
written yet (docs/SMOLLM2.md).
"""

from __future__ import annotations

import torch

__all__ = ["find_symbols", "freqs", "quantize", "symbol_ranges"]

_TINY = 2.0**-64
_HUGE = 2.0**100


def _row_sums(p: torch.Tensor) -> torch.Tensor:
    B, V = p.shape
    nb = V // 32
    lanes = torch.zeros(B, 8, dtype=torch.float64, device=p.device)
    if nb:
        x = p[:, : nb * 32].reshape(B, nb, 4, 8)
        q = ((x[:, :, 0] + x[:, :, 1]) + (x[:, :, 2] + x[:, :, 3])).double()  # [B, nb, 8]
        if p.device.type == "cpu":
            lanes = torch.cumsum(q, dim=1)[:, -1]  # the CPU scan is the sequential loop
        else:
            for i in range(nb):
                lanes = lanes + q[:, i]
    tail = V - nb * 32
    for t in range(tail):
        lanes[:, t % 8] += p[:, nb * 32 + t].double()
    return ((lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])) + (
        (lanes[:, 4] + lanes[:, 5]) + (lanes[:, 6] + lanes[:, 7]))


def freqs(probs: torch.Tensor, precision: int) -> torch.Tensor:
    """int64 ``[B, V]`` frequencies of the core quantizer's table."""
    if probs.dtype != torch.float32 or probs.dim() != 2:
        raise ValueError("probs must be a float32 [B, V] tensor")
    V = probs.shape[1]
    if not 2 <= V <= min(2 ** (precision - 1), 1 << 21):
        raise ValueError(f"V = {V} symbols is too many for precision {precision}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("probabilities must be finite and >= 0")
    S = _row_sums(probs)
    if not bool(((S > 0) & (S < _HUGE)).all()):
        raise ValueError("a probs row sums to zero or to 2^100 or more")
    total = 1 << precision
    c = float(total - V - (total >> 20))
    pre = torch.where(S < _TINY, torch.full_like(S, 2.0**100), torch.ones_like(S))
    s32 = (c / (S * pre)).float()
    y = (probs * pre.float()[:, None]) * s32[:, None]
    f = y.to(torch.int32).to(torch.int64) + 1
    f[:, V - 1] = total - f[:, : V - 1].sum(dim=1)
    if bool((f[:, V - 1] < 1).any()):
        raise RuntimeError("internal error: quantizer remainder underflow (please report this input)")
    return f


def quantize(probs: torch.Tensor, precision: int) -> torch.Tensor:
    """int64 ``[B, V+1]`` cumulative table (the same numbers as ``core.quantize``)."""
    f = freqs(probs, precision)
    return torch.nn.functional.pad(torch.cumsum(f, dim=1), (1, 0))


def symbol_ranges(probs: torch.Tensor, symbols: torch.Tensor, precision: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cum_low, freq)`` int64 ``[B]`` of ``symbols`` (int64 ``[B]``)."""
    cdf = quantize(probs, precision)
    s = symbols.view(-1, 1)
    lo = cdf.gather(1, s)
    hi = cdf.gather(1, s + 1)
    return lo.view(-1), (hi - lo).view(-1)


def find_symbols(probs: torch.Tensor, targets: torch.Tensor,
                 precision: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(symbol, cum_low, freq)`` int64 ``[B]``: the symbol whose interval
    holds each row's target (``cdf[s] <= target < cdf[s+1]``)."""
    cdf = quantize(probs, precision)
    V = cdf.shape[1] - 1
    s = torch.searchsorted(cdf, targets.view(-1, 1).to(cdf.dtype), right=True) - 1
    s = s.clamp_(0, V - 1)
    lo = cdf.gather(1, s)
    hi = cdf.gather(1, s + 1)
    return s.view(-1), lo.view(-1), (hi - lo).view(-1)
