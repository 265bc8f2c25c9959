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
   sequential scan, done as ``torch.cumsum`` over the block dimension of a
   ``[B, V/32, 8]`` tensor: not the innermost dimension, so PyTorch's CPU
   loop and its CUDA "outer dimension" scan kernel (one thread per row and
   lane, adding in order) both add in exactly the contract's order.  That
   is an implementation property, not a documented guarantee, so it is
   *checked*: the first use on each device runs :func:`scan_is_sequential`
   (adversarial rows whose sums change under any reassociation, against a
   plain Python float64 loop); a device that fails it gets an explicit
   loop over the blocks (V/32 small ops per step: correct, slow).
2. ``pre`` = 2^100 if ``S < 2^-64`` else 1; ``s32 = float32(c / (S * pre))``
   in float64, ``c = 2^P - V - (2^P >> 20)``.
3. ``f[i] = 1 + trunc(float32(float32(p[i] * pre) * s32))`` for ``i < V-1``
   (two separate float32 multiplies: no FMA), the last symbol takes the rest;
   cumulative sums in int64 (exact in any order).

``tests/test_smollm2.py`` checks the tables against ``core.quantize`` bit for
bit on CPU tensors, including rows that exercise the tail and the ``pre``
rescaling, and that a reassociating scan is caught by the self-check and
replaced by the loop without changing a table.  ``bench/gpu_bench.py``
prints the self-check's result and compares device tables with
``core.quantize`` on the GPU machine.
"""

from __future__ import annotations

import torch

from ..core import MAX_SYMBOLS

__all__ = ["find_symbols", "freqs", "quantize", "scan_is_sequential", "symbol_ranges"]

_TINY = 2.0**-64
_HUGE = 2.0**100


def _scan_lanes(q: torch.Tensor) -> torch.Tensor:
    """Last row of the in-order prefix sums of ``q`` (float64 ``[B, nb, 8]``)
    over dim 1: ``[B, 8]``.  In order only where :func:`scan_is_sequential`
    says so."""
    return torch.cumsum(q, dim=1)[:, -1]


def _loop_lanes(q: torch.Tensor) -> torch.Tensor:
    lanes = torch.zeros(q.shape[0], 8, dtype=torch.float64, device=q.device)
    for i in range(q.shape[1]):
        lanes = lanes + q[:, i]
    return lanes


_SCAN_CHECKED: dict[str, bool] = {}


def _adversarial_blocks(nb: int, seed: int = 20261127) -> list[list[list[float]]]:
    """``[2][nb][8]`` float64 values (each a float32, like the contract's
    ``q_j``) whose in-order sums differ from any regrouping: a large first
    value followed by many values below half its ulp, spread over 70
    binades, so a sequential sum drops them one by one while a tree or a
    blocked scan lets them add up first."""
    import random

    rnd = random.Random(seed)
    rows = [[[1.0 + rnd.random() if i == 0 else rnd.random() * 2.0 ** rnd.randint(-70, -52) for _j in range(8)]
             for i in range(nb)] for _ in range(2)]
    return torch.tensor(rows, dtype=torch.float32).double().tolist()  # each value rounded to float32 once


def scan_is_sequential(device: torch.device | str, nb: int = 1536) -> bool:
    """Whether ``torch.cumsum`` over dim 1 of a float64 ``[B, nb, 8]`` tensor
    on ``device`` adds in order, bit for bit (see the module note).  Cached
    per device; ``nb`` = 1536 is SmolLM2's V/32."""
    key = f"{torch.device(device)}/{nb}"
    if key not in _SCAN_CHECKED:
        rows = _adversarial_blocks(nb)
        want = []
        for blocks in rows:
            lanes = [0.0] * 8
            for block in blocks:  # the contract's loop, in Python floats (IEEE double)
                for j in range(8):
                    lanes[j] += block[j]
            want.append(lanes)
        q = torch.tensor(rows, dtype=torch.float64, device=device)
        got = _scan_lanes(q).cpu().tolist()
        _SCAN_CHECKED[key] = got == want
    return _SCAN_CHECKED[key]


def _row_sums(p: torch.Tensor) -> torch.Tensor:
    B, V = p.shape
    nb = V // 32
    lanes = torch.zeros(B, 8, dtype=torch.float64, device=p.device)
    if nb:
        x = p[:, : nb * 32].reshape(B, nb, 4, 8)
        q = ((x[:, :, 0] + x[:, :, 1]) + (x[:, :, 2] + x[:, :, 3])).double()  # [B, nb, 8]
        lanes = _scan_lanes(q) if scan_is_sequential(p.device, nb) else _loop_lanes(q)
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
    if not 2 <= V <= min(2 ** (precision - 1), MAX_SYMBOLS):
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
