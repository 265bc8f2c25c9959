"""The exact integer Llama step (issue 20: SmolLM2 at CPU speed, the same
bits on every machine): its arithmetic, written down once, and a plain numpy
reference of it.

The weights stay the GGUF's integers (:func:`pyllmcodec.models.smollm2.read_gguf_ints`):
Q4_1 layers (4-bit ``q`` with a 14-bit integer scale ``d`` and minimum ``m``
per block of 32 inputs, one exponent ``e`` per output row) and the Q8_0
embedding, tied to the head.  Everything that runs through them is an
integer, with the rule of :mod:`pyllmcodec.nets.intlm`: integer reductions
(any order), tables for every nonlinearity (shipped in the package,
:data:`TABLES_FILE`), floor/round divisions and shifts written out below, no
float.  The native step (``csrc/intllama.hpp``) is tested against this module
bit for bit.

Notation: ``rsr(p, s)`` is the round-half-up shift ``floor((p + 2**(s-1)) /
2**s)`` for ``s > 0``, ``p`` for ``s == 0`` and ``p * 2**-s`` for ``s < 0``
(then clamped by the caller's range); ``rdiv(a, b) = floor((2a + b) / 2b)``
for ``b > 0``; ``bitlen(n)`` is the number of bits of ``|n|``.

**Units.**  Every int64 activation has a fixed unit ``2**-16`` (the residual
stream ``x``, the linear layers' outputs, q/k/v, gate/up) except where said.

**Block quantization** (every linear layer's input, per row): given int64
values ``y`` (``|y| < 2**55``) whose real value is ``y * 2**sh_b / D_b *
2**-U`` (``D_b >= 1`` and ``sh_b >= 0`` per block of 32, ``U`` per site):

* ``Y_b = max |y_i|`` over the block; ``xq_i = rdiv(127 y_i, Y_b)`` (int8 in
  [-127, 127]; 0 when ``Y_b = 0``);
* ``F_b(k) = floor(Y_b * 2**k / (127 D_b))`` as a real floor (``k`` of any
  sign); ``e_b`` is the largest ``k - sh_b`` with ``F_b(k) < 2**15``; the
  row's exponent ``eA = min(min_b e_b, 64)`` over the blocks with ``Y_b > 0``
  (0 when there are none);
* ``A_b = F_b(eA + sh_b)`` (``0 <= A_b < 2**15``): the block's scale is
  ``A_b * 2**-(eA + U)`` per unit of ``xq``.

**Linear layer** (Q4_1 weights; output ``o``, input block ``b``):
``S_ob = sum_{i in b} q_oi xq_i`` (what ``vpdpbusd`` computes, exact in
int32), ``T_b = sum_{i in b} xq_i``, ``P_o = sum_b A_b (d_ob S_ob + m_ob
T_b)`` (int64: ``|d S + m T| < 2**31``, ``A < 2**15``, at most 64 blocks:
``< 2**52``), and the output ``out_o = clamp(rsr(P_o, eA + U + e_o - 16),
+-C)`` with the site's clamp ``C``.  The head (Q8_0, signed ``q``) has no
``m`` term and leaves in units of 1/64 nat: ``rsr(P_o, eA + U + e_o - 6)``.

**A step** for each row, at position ``t``:

1. ``x = rsr(q8 * d_b, e_v - 16)`` of the token's embedding row.
2. Per layer: RMSNorm into block quantization: ``s = max(0, bitlen(max |x|)
   - 26)``, ``z = x >> s`` (floor), ``ms = floor(sum z**2 / d) + (EPS >> 2s)``
   (``EPS`` = the GGUF's epsilon in units of 2**-32), ``r = max(1,
   isqrt(ms))``, ``y = z * G`` (the gain in units of 2**-16): ``D = r``,
   ``sh = 0``, ``U = 16``.
3. ``q, k, v`` = linear (clamp ``2**27``); rotary halves layout with the
   tables ``C, S`` (units 2**-14, position ``t``): ``a' = rsr(a C - b S,
   14)``, ``b' = rsr(b C + a S, 14)`` for the pairs ``(i, i + hd/2)``.
4. Keys and values are stored per position and KV head as int8 with their
   largest magnitude: ``kmax = max |k|``, ``k8 = rdiv(127 k, kmax)`` (0 when
   ``kmax = 0``), the same for ``v``.
5. Per query head ``h`` (KV head ``h // (H / KVH)``): ``sq = max(0,
   bitlen(max |q_h|) - 15)``, ``q16 = clamp(rsr(q_h, sq), +-32767)``;
   ``S'_j = (sum_d q16_d k8_jd) * kmax_j`` for the cached positions ``j <=
   t``; ``i_j = floor((max S' - S'_j) / (127 * 2**(29 - sq)))`` (1/64 nat:
   the real score is ``S' 2**sq / 127 * 2**-35``, the 1/sqrt(64) included);
   ``e_j = EXPA[i_j]`` (0 past the table), ``Z = sum e_j``, ``g_j = e_j
   vmax_j``, ``vs = max(0, bitlen(max g) - 15)``, ``w_j = g_j >> vs``,
   ``a_d = sum_j w_j v8_jd``.  The head's output goes to block quantization
   as ``y = a``, ``D = 127 Z``, ``sh = vs``, ``U = 16``.
6. ``x += o(a)`` (clamp ``2**40``); RMSNorm as in 2 with the second gain;
   ``g, u`` = linear (clamp ``2**27``); SiLU by table with interpolation:
   ``g >= 16``: ``g``; ``g < -16``: 0; else ``i = (g >> 8) + 4096``, ``f = g &
   255``, ``SILU[i] + rsr((SILU[i+1] - SILU[i]) f, 8)``; ``y = silu(g) * u``
   (``< 2**54``; unit 2**-32): ``D = 1``, ``sh = 0``, ``U = 32``;
   ``x += down(y)`` (clamp ``2**40``).
7. Final RMSNorm, the head (clamp ``2**31``): logits ``L`` in 1/64 nat; the
   row's weights are ``EXPL[min(max L - L_v, len(EXPL) - 1)]`` (``EXPL[0] =
   2**24``, last 0), uint32 for the core's integer quantizer.

Importing this module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the numerics' name, recorded in bundles and archive fingerprints
NUMERICS = "exact-llama/1"
#: the tables every exact Llama shares (rotary for theta 100000 / head_dim 64, SiLU, the softmaxes)
TABLES_FILE = Path(__file__).resolve().parent / "intllama-tables.npz"

UNIT = 16  # activations: 2**-16
LOGIT_UNIT = 6  # logits: 1/64 nat
A_BITS = 15  # block scales below 2**15
SS_BITS = 26  # RMSNorm squares of values below 2**26
RES_CLAMP = 1 << 40
QKV_CLAMP = 1 << 27  # q, k, v, gate, up
LOGIT_CLAMP = 1 << 31
ROPE_BITS = 14
SILU_STEP = 8  # table step 2**(SILU_STEP - UNIT) = 2**-8
SILU_HALF = 16 << UNIT  # the table covers [-16, 16)
EXPA_ONE = 1 << 14
EXPL_ONE = 1 << 24
MAX_EXP = 64
BLOCK = 32
#: the ``(out, in)`` of each layer matrix, in terms of the config
MATRICES = ("q", "k", "v", "o", "gate", "up", "down")


def rsr(p: np.ndarray, s: np.ndarray | int) -> np.ndarray:
    """Round-half-up shift right of int64 ``p`` by ``s`` (``s < 0``: shift
    left; the caller clamps, and must bound ``|p| * 2**-s`` below 2**62)."""
    p = np.asarray(p, dtype=np.int64)
    s = np.broadcast_to(np.asarray(s, dtype=np.int64), p.shape)
    pos = np.maximum(s, 1)
    right = (p + (np.int64(1) << (pos - 1))) >> pos
    left = p << np.maximum(-s, 0)
    return np.where(s > 0, right, left)


def rdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.floor_divide(2 * a + b, 2 * b)


def isqrt(d: np.ndarray) -> np.ndarray:
    """Exact floor square root of non-negative int64 values (< 2**62): a
    float64 estimate, then integer corrections (as :mod:`.intlm`'s; the
    networks import nothing of ours, not even each other)."""
    d = np.asarray(d, dtype=np.int64)
    r = np.sqrt(d.astype(np.float64)).astype(np.int64)
    for _ in range(2):
        r = np.where(r * r > d, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= d, r + 1, r)
    return r


def bitlen(n: int) -> int:
    return int(abs(int(n))).bit_length()


def _floor_pow(ymax: int, k: int, x: int) -> int:
    """floor(ymax * 2**k / x) for any integer k (Python ints: exact)."""
    return (ymax << k) // x if k >= 0 else ymax // (x << -k)


def block_exponent(ymax: int, x: int, sh: int) -> int:
    """The largest ``k - sh`` with ``floor(ymax 2**k / x) < 2**15`` (ymax > 0)."""
    k = A_BITS + bitlen(x) - bitlen(ymax) + 1
    while _floor_pow(ymax, k, x) >= 1 << A_BITS:
        k -= 1
    while _floor_pow(ymax, k + 1, x) < 1 << A_BITS:
        k += 1
    return k - sh


def bitlen_arr(n: np.ndarray) -> np.ndarray:
    """``bitlen`` of every element of a non-negative int64 array (exact: shifts only)."""
    n = np.asarray(n, dtype=np.int64)
    out = np.zeros(n.shape, np.int64)
    for sh in (32, 16, 8, 4, 2, 1):
        big = (n >> sh) > 0
        out += np.where(big, sh, 0)
        n = np.where(big, n >> sh, n)
    return out + (n > 0)


def floor_pow_arr(ymax: np.ndarray, k: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``floor(ymax * 2**k / x)`` elementwise (int64; for ``k >= 0`` the caller
    bounds the product below 2**63): ``(ymax >> -k) // x`` for negative ``k``
    is the same floor."""
    up = ymax << np.clip(k, 0, 62)
    down = ymax >> np.clip(-k, 0, 63)
    return np.where(k >= 0, up, down) // x


def quant_blocks(y: np.ndarray, D: np.ndarray, sh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block quantization of int64 rows ``y`` [B, n] with per-block ``D``,
    ``sh`` [B, n / 32] -> ``(xq int8 [B, n], A int64 [B, nb], eA int64 [B])``.

    The block exponent without big integers: ``F(k) < 2**15`` iff ``ymax *
    2**(k - 15) < X``; the largest such ``j = k - 15`` is ``bitlen(X) -
    bitlen(ymax)`` or one less (one comparison, by shifting the smaller
    side).  :func:`block_exponent` is the Python-integer statement of it."""
    y = np.asarray(y, dtype=np.int64)
    B, n = y.shape
    nb = n // BLOCK
    yb = y.reshape(B, nb, BLOCK)
    ymax = np.abs(yb).max(-1)
    if (ymax >= 1 << 55).any():
        raise OverflowError("block quantization input beyond 2**55")
    safe = np.maximum(ymax, 1)
    xq = np.where(ymax[..., None] > 0, rdiv(127 * yb, safe[..., None]), 0).reshape(B, n).astype(np.int8)
    X = 127 * np.asarray(D, dtype=np.int64)
    j0 = bitlen_arr(X) - bitlen_arr(safe)
    fits = np.where(j0 >= 0, (safe << np.maximum(j0, 0)) < X, safe < (X << np.maximum(-j0, 0)))
    e_b = np.where(fits, j0, j0 - 1) + A_BITS - sh
    live = ymax > 0
    eA = np.where(live.any(-1), np.minimum(np.where(live, e_b, MAX_EXP).min(-1), MAX_EXP), 0)
    A = np.where(live, floor_pow_arr(safe, eA[:, None] + sh, X), 0)
    return xq, A, eA


@dataclass
class QLinear:
    """A Q4_1 (``m`` given) or Q8_0 (``m`` None, signed ``q``) matrix."""

    q: np.ndarray  # uint8 [out, in] (0..15) or int8 [out, in]
    d: np.ndarray  # int64 [out, nb]
    m: np.ndarray | None
    e: np.ndarray  # int64 [out]

    def products(self, xq: np.ndarray, A: np.ndarray) -> np.ndarray:
        """``P`` int64 [B, out] (see the module docstring)."""
        B, n = xq.shape
        nb = n // BLOCK
        xb = xq.reshape(B, nb, BLOCK).astype(np.float32).transpose(1, 0, 2)  # [nb, B, 32]
        wb = self.q.reshape(-1, nb, BLOCK).astype(np.float32).transpose(1, 2, 0)  # [nb, 32, out]
        # exact: every product and partial sum is an integer below 2**24
        S = np.rint(np.matmul(xb, wb)).astype(np.int64).transpose(1, 2, 0)  # [B, out, nb]
        inner = S * self.d[None]
        if self.m is not None:
            T = xq.reshape(B, nb, BLOCK).astype(np.int64).sum(-1)  # [B, nb]
            inner += T[:, None, :] * self.m[None]
        return (inner * A[:, None, :]).sum(-1)

    def __call__(self, xq: np.ndarray, A: np.ndarray, eA: np.ndarray, U: int, out_unit: int,
                 clamp: int) -> np.ndarray:
        P = self.products(xq, A)
        s = eA[:, None] + U + self.e[None, :] - out_unit
        # a left shift must not overflow: clamp P first to what the shift keeps in range
        lim = np.int64(1) << np.clip(62 + np.minimum(s, 0), 0, 62)
        return np.clip(rsr(np.clip(P, -lim, lim), s), -clamp, clamp)


@dataclass
class IntLlama:
    """Every integer of an exact Llama (see the module docstring)."""

    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_mlp: int
    vocab: int
    ctx: int
    eps: int  # units of 2**-32
    embed: QLinear  # Q8_0, [vocab, d]: the input rows and the head
    norms: list[tuple[np.ndarray, np.ndarray]]  # per layer: (attention gain, MLP gain), int64 [d]
    layers: list[dict[str, QLinear]]
    norm: np.ndarray  # final gain
    rope_cos: np.ndarray  # int64 [ctx, hd / 2]
    rope_sin: np.ndarray
    silu: np.ndarray  # int64 [2 * SILU_HALF / 2**SILU_STEP + 1]
    expa: np.ndarray
    expl: np.ndarray

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def rms_quant(model: IntLlama, x: np.ndarray, gain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RMSNorm of the residual rows ``x`` [B, d] straight into block quantization."""
    B, d = x.shape
    top = np.abs(x).max(-1)
    s = np.array([max(0, bitlen(int(v)) - SS_BITS) for v in top], np.int64)
    z = x >> s[:, None]
    ms = (z * z).sum(-1) // d + (np.int64(model.eps) >> (2 * s))
    r = np.maximum(isqrt(ms), 1)
    y = z * gain[None]
    nb = d // BLOCK
    return quant_blocks(y, np.repeat(r[:, None], nb, 1), np.zeros((B, nb), np.int64))


def rotate(v: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary halves layout of int64 ``v`` [B, heads, hd] at one position."""
    h = v.shape[-1] // 2
    a, b = v[..., :h], v[..., h:]
    return np.concatenate([rsr(a * cos - b * sin, ROPE_BITS), rsr(b * cos + a * sin, ROPE_BITS)], -1)


def kv_quant(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 [..., hd] -> (int8 [..., hd], max |v| int64 [...])."""
    mx = np.abs(v).max(-1)
    q = np.where(mx[..., None] > 0, rdiv(127 * v, np.maximum(mx, 1)[..., None]), 0)
    return q.astype(np.int8), mx


class RefState:
    """The reference's cache: int8 keys and values with their per-position scales."""

    def __init__(self, model: IntLlama, batch_size: int):
        L, KV, hd = model.n_layer, model.n_kv_head, model.head_dim
        self.batch_size = batch_size
        self.position = 0
        self.k = np.zeros((L, batch_size, model.ctx, KV, hd), np.int8)
        self.v = np.zeros((L, batch_size, model.ctx, KV, hd), np.int8)
        self.kmax = np.zeros((L, batch_size, model.ctx, KV), np.int64)
        self.vmax = np.zeros((L, batch_size, model.ctx, KV), np.int64)


def attend(model: IntLlama, q: np.ndarray, k8: np.ndarray, kmax: np.ndarray, v8: np.ndarray,
           vmax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q int64 [B, H, hd]; the cache [B, T, KVH, hd] and its scales [B, T, KVH]
    -> block quantization of the heads' outputs ``(xq, A, eA)``."""
    B, H, hd = q.shape
    g = H // model.n_kv_head
    out = np.zeros((B, H, hd), np.int64)
    Dz = np.zeros((B, H), np.int64)
    vs_all = np.zeros((B, H), np.int64)
    for b in range(B):
        for h in range(H):
            kv = h // g
            qh = q[b, h]
            sq = max(0, bitlen(int(np.abs(qh).max())) - A_BITS)
            q16 = np.clip(rsr(qh, sq), -32767, 32767)
            S = (k8[b, :, kv].astype(np.int64) @ q16) * kmax[b, :, kv]  # [T]
            idx = (S.max() - S) // (127 << (29 - sq))
            e = np.where(idx < len(model.expa), model.expa[np.minimum(idx, len(model.expa) - 1)], 0)
            Z = int(e.sum())
            gw = e * vmax[b, :, kv]
            vs = max(0, bitlen(int(gw.max())) - A_BITS)
            w = gw >> vs
            out[b, h] = w @ v8[b, :, kv].astype(np.int64)
            Dz[b, h], vs_all[b, h] = 127 * Z, vs
    per = hd // BLOCK
    return quant_blocks(out.reshape(B, H * hd), np.repeat(Dz, per, 1), np.repeat(vs_all, per, 1))


def silu(model: IntLlama, g: np.ndarray) -> np.ndarray:
    i = np.clip((g >> SILU_STEP) + (SILU_HALF >> SILU_STEP), 0, len(model.silu) - 2)
    f = g & ((1 << SILU_STEP) - 1)
    lo = model.silu[i]
    mid = lo + rsr((model.silu[i + 1] - lo) * f, SILU_STEP)
    return np.where(g >= SILU_HALF, g, np.where(g < -SILU_HALF, 0, mid))


def ref_step(model: IntLlama, state: RefState, tokens: np.ndarray) -> np.ndarray:
    """One step for every row: tokens [B] -> uint32 [B, vocab] weights."""
    t = state.position
    if t >= model.ctx:
        raise ValueError("state is full")
    tok = np.asarray(tokens, dtype=np.int64)
    B = len(tok)
    H, KV, hd = model.n_head, model.n_kv_head, model.head_dim
    E = model.embed
    x = rsr(E.q[tok].astype(np.int64) * np.repeat(E.d[tok], BLOCK, 1), E.e[tok][:, None] - UNIT)
    x = np.clip(x, -RES_CLAMP, RES_CLAMP)
    cos, sin = model.rope_cos[t], model.rope_sin[t]
    for i, ly in enumerate(model.layers):
        g1, g2 = model.norms[i]
        xq, A, eA = rms_quant(model, x, g1)
        q = ly["q"](xq, A, eA, UNIT, UNIT, QKV_CLAMP).reshape(B, H, hd)
        k = ly["k"](xq, A, eA, UNIT, UNIT, QKV_CLAMP).reshape(B, KV, hd)
        v = ly["v"](xq, A, eA, UNIT, UNIT, QKV_CLAMP).reshape(B, KV, hd)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        state.k[i, :, t], state.kmax[i, :, t] = kv_quant(k)
        state.v[i, :, t], state.vmax[i, :, t] = kv_quant(v)
        aq, aA, aE = attend(model, q, state.k[i, :, : t + 1], state.kmax[i, :, : t + 1],
                            state.v[i, :, : t + 1], state.vmax[i, :, : t + 1])
        x = np.clip(x + ly["o"](aq, aA, aE, UNIT, UNIT, RES_CLAMP), -RES_CLAMP, RES_CLAMP)
        xq, A, eA = rms_quant(model, x, g2)
        gt = ly["gate"](xq, A, eA, UNIT, UNIT, QKV_CLAMP)
        up = ly["up"](xq, A, eA, UNIT, UNIT, QKV_CLAMP)
        y = silu(model, gt) * up
        nb = model.d_mlp // BLOCK
        mq, mA, mE = quant_blocks(y, np.ones((B, nb), np.int64), np.zeros((B, nb), np.int64))
        x = np.clip(x + ly["down"](mq, mA, mE, 2 * UNIT, UNIT, RES_CLAMP), -RES_CLAMP, RES_CLAMP)
    xq, A, eA = rms_quant(model, x, model.norm)
    logits = E(xq, A, eA, UNIT, LOGIT_UNIT, LOGIT_CLAMP)
    state.position = t + 1
    idx = np.minimum(logits.max(-1, keepdims=True) - logits, len(model.expl) - 1)
    return model.expl[idx].astype(np.uint32)


# ------------------------------------------------------------------ tables

def make_tables(ctx: int = 2048, head_dim: int = 64, theta: float = 100000.0) -> dict[str, np.ndarray]:
    """The shipped tables, computed in float64 (run once; the package ships
    their integers in :data:`TABLES_FILE`, since a libm's cos or exp may
    differ in the last bit between machines)."""
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(ctx, dtype=np.float64)[:, None] * inv[None]
    one = 1 << ROPE_BITS
    n = 2 * SILU_HALF // (1 << SILU_STEP) + 1
    gx = (np.arange(n, dtype=np.float64) - n // 2) / (1 << (UNIT - SILU_STEP))
    expa = np.rint(EXPA_ONE * np.exp(-np.arange(2048) / 64.0))
    expl = np.rint(EXPL_ONE * np.exp(-np.arange(4096) / 64.0))
    return {
        "rope_cos": np.rint(np.cos(ang) * one).astype(np.int16),
        "rope_sin": np.rint(np.sin(ang) * one).astype(np.int16),
        "silu": np.rint(gx / (1 + np.exp(-gx)) * (1 << UNIT)).astype(np.int32),
        "expa": np.append(expa[expa > 0], 0).astype(np.int32),
        "expl": np.append(expl[expl > 0], 0).astype(np.int32),
        "theta": np.float64(theta),
    }


def load_tables(path: Path | None = None) -> dict[str, np.ndarray]:
    """The shipped tables, validated (ValueError naming the table)."""
    with np.load(path or TABLES_FILE, allow_pickle=False) as z:
        t = {k: z[k] for k in z.files}
    n = 2 * SILU_HALF // (1 << SILU_STEP) + 1
    if t["silu"].shape != (n,) or t["silu"].dtype != np.int32:
        raise ValueError("table 'silu' has the wrong shape or type")
    for name, one in (("expa", EXPA_ONE), ("expl", EXPL_ONE)):
        a = t[name].astype(np.int64)
        if a.ndim != 1 or a[0] != one or a[-1] != 0 or (np.diff(a) > 0).any() or (a < 0).any():
            raise ValueError(f"table {name!r} is not a non-increasing table from {one} down to 0")
    c, s = t["rope_cos"], t["rope_sin"]
    if c.dtype != np.int16 or s.shape != c.shape or c.ndim != 2:
        raise ValueError("tables 'rope_cos'/'rope_sin' have the wrong shape or type")
    return t


# ------------------------------------------------------------------ the model from arrays

def from_arrays(arrs: Any, tables: dict[str, np.ndarray] | None = None, *, unpack: bool = True) -> IntLlama:
    """An :class:`IntLlama` from the flat arrays of a converted bundle
    (:func:`pyllmcodec.models.smollm2.int_arrays`), validated: ValueError
    naming the first array that breaks a bound the arithmetic relies on.
    ``unpack=False`` validates only: the layers keep their packed nibbles
    (the native step's loader; :func:`ref_step` needs them unpacked)."""
    tables = tables or load_tables()

    def get(name: str, dtype: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
        try:
            a = np.asarray(arrs[name])
        except KeyError:
            raise ValueError(f"the exact Llama lacks the array {name!r}") from None
        if a.dtype != np.dtype(dtype):
            raise ValueError(f"array {name!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        if shape is not None and a.shape != shape:
            raise ValueError(f"array {name!r} has shape {a.shape}, expected {shape}")
        return a

    def scalar(name: str, lo: int, hi: int) -> int:
        v = int(get(name, np.int64, ()))
        if not lo <= v <= hi:
            raise ValueError(f"{name} = {v} is outside [{lo}, {hi}]")
        return v

    L = scalar("n_layer", 1, 128)
    d = scalar("d_model", BLOCK, 8192)
    H = scalar("n_head", 1, 64)
    KV = scalar("n_kv_head", 1, H)
    f = scalar("d_mlp", BLOCK, 32768)
    V = scalar("vocab", 2, 1 << 20)
    ctx = scalar("ctx", 1, len(tables["rope_cos"]))
    eps = scalar("eps", 0, 1 << 40)
    if d % BLOCK or f % BLOCK or d % H or H % KV or (d // H) % BLOCK or d // H != 2 * tables["rope_cos"].shape[1]:
        raise ValueError(f"unsupported shape: d_model {d}, n_head {H}, n_kv_head {KV}, d_mlp {f} "
                         f"(blocks of {BLOCK}, head_dim {2 * tables['rope_cos'].shape[1]})")
    if d > 64 * BLOCK or f > 64 * BLOCK:
        raise ValueError("an input longer than 64 blocks would break the int64 bound of the products")
    hd = d // H

    def lin(name: str, n_out: int, n_in: int) -> QLinear:
        qp = get(name + ".q", np.uint8, (n_out, n_in // 2))
        q = qp
        if unpack:
            q = np.empty((n_out, n_in), np.uint8)
            q[:, 0::2], q[:, 1::2] = qp & 15, qp >> 4
        dd = get(name + ".d", np.int16, (n_out, n_in // BLOCK)).astype(np.int64)
        mm = get(name + ".m", np.int16, (n_out, n_in // BLOCK)).astype(np.int64)
        e = get(name + ".e", np.int16, (n_out,)).astype(np.int64)
        if (np.abs(dd) >= 1 << 14).any() or (np.abs(mm) >= 1 << 14).any() or (np.abs(e) > 62).any():
            raise ValueError(f"array {name!r}: scales beyond 2**14 or exponents beyond 62")
        return QLinear(q=q, d=dd, m=mm, e=e)

    def gain(name: str) -> np.ndarray:
        g = get(name, np.int32, (d,)).astype(np.int64)
        if (np.abs(g) >= 1 << 20).any():
            raise ValueError(f"array {name!r}: gains beyond 2**20")
        return g

    shapes = {"q": (d, d), "k": (KV * hd, d), "v": (KV * hd, d), "o": (d, d), "gate": (f, d), "up": (f, d),
              "down": (d, f)}
    layers, norms = [], []
    for i in range(L):
        layers.append({k: lin(f"l{i}.{k}", *shapes[k]) for k in MATRICES})
        norms.append((gain(f"l{i}.attn_norm"), gain(f"l{i}.mlp_norm")))
    eq = get("embed.q", np.int8, (V, d))
    ed = get("embed.d", np.int16, (V, d // BLOCK)).astype(np.int64)
    ee = get("embed.e", np.int16, (V,)).astype(np.int64)
    if (np.abs(ed) >= 1 << 14).any() or (ee < UNIT - 40).any() or (ee > 62).any():
        raise ValueError("array 'embed.d'/'embed.e': scales beyond 2**14 or exponents out of range")
    embed = QLinear(q=eq, d=ed, m=None, e=ee)
    return IntLlama(n_layer=L, d_model=d, n_head=H, n_kv_head=KV, d_mlp=f, vocab=V, ctx=ctx, eps=eps,
                    embed=embed, norms=norms, layers=layers, norm=gain("norm"),
                    rope_cos=tables["rope_cos"].astype(np.int64), rope_sin=tables["rope_sin"].astype(np.int64),
                    silu=tables["silu"].astype(np.int64), expa=tables["expa"].astype(np.int64),
                    expl=tables["expl"].astype(np.int64))


def random_arrays(seed: int = 0, *, n_layer: int = 2, n_head: int = 2, n_kv_head: int = 1, d_mlp: int = 128,
                  vocab: int = 300, ctx: int = 64, scale_exp: int = 27) -> dict[str, np.ndarray]:
    """A random exact Llama's arrays (head_dim 64, the shipped rotary table's):
    for tests of any implementation against :func:`ref_step`.  Scales are
    drawn so that activations grow and shrink as a trained model's do,
    with a few large ones (SmolLM2 has residual values near 25,000)."""
    rng = np.random.default_rng(seed)
    d = 64 * n_head
    hd = 64
    out: dict[str, np.ndarray] = {"n_layer": np.int64(n_layer), "d_model": np.int64(d), "n_head": np.int64(n_head),
                                  "n_kv_head": np.int64(n_kv_head), "d_mlp": np.int64(d_mlp),
                                  "vocab": np.int64(vocab), "ctx": np.int64(ctx), "eps": np.int64(42950)}

    def mat(name: str, n_out: int, n_in: int) -> None:
        out[name + ".q"] = rng.integers(0, 256, (n_out, n_in // 2), dtype=np.uint8)
        out[name + ".d"] = rng.integers(1 << 12, 1 << 14, (n_out, n_in // BLOCK)).astype(np.int16)
        out[name + ".m"] = (-rng.integers(0, 8, (n_out, n_in // BLOCK)) * out[name + ".d"].astype(np.int64)
                            ).clip(-(1 << 14) + 1, (1 << 14) - 1).astype(np.int16)
        out[name + ".e"] = rng.integers(scale_exp - 2, scale_exp + 3, n_out).astype(np.int16)

    for i in range(n_layer):
        out[f"l{i}.attn_norm"] = rng.integers(1 << 13, 1 << 17, d).astype(np.int32)
        out[f"l{i}.mlp_norm"] = rng.integers(1 << 13, 1 << 17, d).astype(np.int32)
        for k, (o, n) in {"q": (d, d), "k": (n_kv_head * hd, d), "v": (n_kv_head * hd, d), "o": (d, d),
                          "gate": (d_mlp, d), "up": (d_mlp, d), "down": (d, d_mlp)}.items():
            mat(f"l{i}.{k}", o, n)
    out["norm"] = rng.integers(1 << 14, 1 << 17, d).astype(np.int32)
    out["embed.q"] = rng.integers(-127, 128, (vocab, d)).astype(np.int8)
    out["embed.d"] = rng.integers(1 << 12, 1 << 14, (vocab, d // BLOCK)).astype(np.int16)
    out["embed.e"] = rng.integers(scale_exp - 1, scale_exp + 2, vocab).astype(np.int16)
    out["embed.e"][: max(1, vocab // 50)] = scale_exp - 5  # a few tokens with large embeddings
    return out
