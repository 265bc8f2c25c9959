"""The exact integer byte model: its arithmetic, written down once, and a
plain numpy reference of it.

This is the *exact* execution path of the default model's architecture
(:mod:`pyllmcodec.nets.bytelm`: pre-LayerNorm transformer, multi-query
attention, tanh-GELU MLP, learned absolute positions).  Every number that
reaches the coder is computed with integers and lookup tables that ship in the
bundle, so that every machine -- any x86-64 class, ARM, any thread count, CPU
or GPU -- computes the same bits.  The rule, for this module, for the native
step (``csrc/intlm.hpp``) and for any other implementation:

* every reduction is an integer sum (int32 where the bounds below prove it
  cannot overflow, int64 elsewhere); an implementation may sum in any order,
  vectorise, split over threads -- integer addition is associative;
* every nonlinearity (exp of the softmaxes, GELU) is a table lookup, and the
  tables are data in the bundle (a libm's tanh or exp differs between
  machines in the last bit; a table cannot);
* every rescale is ``floor((acc * M + Bias) / 2**SH)`` in int64 with integer
  ``M``, ``Bias`` and ``SH`` from the bundle, then a clamp;
* LayerNorm divides by an exact integer square root (floor), rounds with
  ``rdiv(a, b) = floor((2a + b) / 2b)``;
* no floats at all -- except as an *exact* carrier: a float64 matrix product
  of integers whose every partial sum is an integer below 2**53 is exact in
  any order and with or without FMA, so :func:`imatmul` may use BLAS.

Units (all fixed point; ``real = int * unit``):

* residual stream ``X``: int32, unit 2**-12, clamped to [-2**24, 2**24]
  after every addition;
* LayerNorm output ``N``: int16, unit 2**-11 (|N| <= sqrt(d) * 2**11 <
  2**15); gamma and beta are folded into the linear layer that follows;
* linear weights: int8 in [-127, 127], one scale per output channel (folded
  into ``M``); the accumulator is int32: the converter and the loader check
  ``max_input * max_o sum_i |W[o, i]| < 2**31`` for every layer;
* queries: int16 (|Q| <= 32767) whose unit absorbs the key scale; keys and
  values: 11-bit integers in [-1023, 1023] with one scale per channel (the
  value scale is folded into the output projection's weights), stored as
  int16 in the KV cache (8-bit keys and values cost +0.013 bits/byte, 11-bit
  +0.0003, on linux-doc windows);
* attention: ``S_j = sum_d Q_d K_jd`` (int32: 64 * 32767 * 1023 =
  2145321024 < 2**31 - 1, with head_dim <= 64), ``e_j = EXPA[(max S - S_j)
  >> att_shift]`` (0 past the table; a step of the index is 1/64 nat),
  ``Z = sum e_j``, ``A_d = sum_j e_j V_jd`` (int64; an implementation may
  sum blocks of up to 64 positions in int32: 64 * 16384 * 1023 < 2**31),
  ``a_d = rdiv(32 A_d, Z)`` (|a| <= 1023 * 32 = 32736: int16);
* MLP: ``fc1`` output clamped to [-16383, 16383] (unit 2**-Tg), GELU by the
  layer's table of 32767 int16 entries (|value| <= 16383), then ``fc2``;
* logits: int32 in units of 1/64 nat, clamped to [-2**24, 2**24]; the
  probabilities are ``EXPL[min(max L - L_v, len(EXPL) - 1)]`` (EXPL[0] =
  2**24, non-increasing, last entry 0), unnormalised integers that the core's
  quantizer turns into the coded table (they are exact in float32).

Importing this module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the numerics' name, recorded in the bundle and in archive fingerprints
NUMERICS = "exact-int/1"

RES_SHIFT = 12  # residual unit 2**-12
LN_SHIFT = 11  # LayerNorm output unit 2**-11
RES_CLAMP = 1 << 24
LOGIT_CLAMP = 1 << 24
ACT16 = 32767
GELU_CLAMP = 16383
KV_CLAMP = 1023
EXPA_ONE = 1 << 14  # EXPA[0] <= this
EXPL_ONE = 1 << 24  # EXPL[0] == this
ATT_OUT_SHIFT = 5  # a_d = rdiv(A_d << 5, Z)
MAX_CTX = 1024  # contexts up to here
MAX_HEAD_DIM = 64  # the score bound above holds up to here
MAX_SH = 62


def floor_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Floor division of int64 arrays (numpy's // floors, as Python's)."""
    return np.floor_divide(a, b)


def rdiv(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Round-half-up division for positive ``b``: floor((2a + b) / (2b))."""
    return np.floor_divide(2 * a + b, 2 * np.asarray(b, dtype=np.int64))


def isqrt(d: np.ndarray) -> np.ndarray:
    """Exact floor square root of non-negative int64 values (< 2**62): a
    float64 estimate, then integer corrections, so the result is exact."""
    d = np.asarray(d, dtype=np.int64)
    r = np.sqrt(d.astype(np.float64)).astype(np.int64)
    for _ in range(2):
        r = np.where(r * r > d, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= d, r + 1, r)
    return r


def imatmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` for integer arrays whose every partial sum is below 2**53
    in magnitude (the layers' bounds give < 2**32): computed in float64 and
    exact, since every intermediate is an integer float64 represents."""
    return np.rint(x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)


@dataclass
class IntLinear:
    """``y[o] = clamp(floor((sum_i x[i] W[o, i] * M[o] + B[o]) / 2**SH), lo, hi)``"""

    w: np.ndarray  # int8 [out, in]
    m: np.ndarray  # int64 [out], 0 <= M < 2**31
    b: np.ndarray  # int64 [out], |B| < 2**61
    sh: int
    lo: int
    hi: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        acc = imatmul(x, self.w)
        y = floor_div(acc * self.m + self.b, np.int64(1) << np.int64(self.sh))
        return np.clip(y, self.lo, self.hi)


@dataclass
class IntLayer:
    q: IntLinear
    kv: IntLinear
    o: IntLinear
    fc1: IntLinear
    fc2: IntLinear
    att_shift: int
    gelu: np.ndarray  # int16 [2 * GELU_CLAMP + 1]


@dataclass
class IntModel:
    """Every integer of the exact model (see the module docstring)."""

    d_model: int
    n_head: int
    head_dim: int
    ctx: int
    tok: np.ndarray  # int32 [257, d]
    pos: np.ndarray  # int32 [ctx, d]
    ln_eps: int
    ln_k: int
    layers: list[IntLayer]
    head: IntLinear
    expa: np.ndarray  # int32
    expl: np.ndarray  # int64 (values <= 2**24)
    extra: dict[str, Any] = field(default_factory=dict)


def layer_norm(x: np.ndarray, eps: int, k: int) -> np.ndarray:
    """Integer LayerNorm of int64 rows ``x`` [B, d] -> int64 in LN units."""
    d = x.shape[-1]
    s = x.sum(axis=-1, keepdims=True)
    c = x - floor_div(s, d)
    q = (c * c).sum(axis=-1, keepdims=True) + eps
    r = isqrt(q)
    return np.clip(rdiv(c * k, r), -ACT16, ACT16)


class RefState:
    """The reference's KV cache: keys and values (11-bit integers) per layer."""

    def __init__(self, model: IntModel, batch_size: int):
        L = len(model.layers)
        self.batch_size = batch_size
        self.position = 0
        self.k = np.zeros((L, batch_size, model.ctx, model.head_dim), np.int64)
        self.v = np.zeros((L, batch_size, model.ctx, model.head_dim), np.int64)


def _attend(model: IntModel, layer: IntLayer, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """q [B, H, hd]; k, v [B, T, hd] -> int64 [B, H * hd]."""
    B = q.shape[0]
    s = np.einsum("bhd,btd->bht", q.astype(np.float64), k.astype(np.float64))  # exact: |s| < 2**31
    s = np.rint(s).astype(np.int64)
    idx = (s.max(axis=-1, keepdims=True) - s) >> layer.att_shift
    e = np.where(idx < len(model.expa), model.expa[np.minimum(idx, len(model.expa) - 1)], 0).astype(np.int64)
    z = e.sum(axis=-1, keepdims=True)
    a = np.rint(np.einsum("bht,btd->bhd", e.astype(np.float64), v.astype(np.float64))).astype(np.int64)
    return rdiv(a << ATT_OUT_SHIFT, z).reshape(B, -1)


def ref_step(model: IntModel, state: RefState, tokens: np.ndarray) -> np.ndarray:
    """One step for every row: tokens int [B] -> int64 [B, 256] unnormalised
    probabilities (EXPL values)."""
    t = state.position
    if t >= model.ctx:
        raise ValueError("state is full")
    x = model.tok[np.asarray(tokens, dtype=np.int64)].astype(np.int64) + model.pos[t].astype(np.int64)
    x = np.clip(x, -RES_CLAMP, RES_CLAMP)
    B = x.shape[0]
    hd = model.head_dim
    for i, ly in enumerate(model.layers):
        n = layer_norm(x, model.ln_eps, model.ln_k)
        q = ly.q(n).reshape(B, model.n_head, hd)
        kv = ly.kv(n)
        state.k[i, :, t] = kv[:, :hd]
        state.v[i, :, t] = kv[:, hd:]
        a = _attend(model, ly, q, state.k[i, :, : t + 1], state.v[i, :, : t + 1])
        x = np.clip(x + ly.o(a), -RES_CLAMP, RES_CLAMP)
        g = ly.fc1(layer_norm(x, model.ln_eps, model.ln_k))
        h = ly.gelu[g + GELU_CLAMP].astype(np.int64)
        x = np.clip(x + ly.fc2(h), -RES_CLAMP, RES_CLAMP)
    logits = model.head(layer_norm(x, model.ln_eps, model.ln_k))
    state.position = t + 1
    return expl_probs(model.expl, logits)


def expl_probs(expl: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Integer logits [B, V] (1/64 nat) -> EXPL values [B, V]."""
    idx = np.minimum(logits.max(axis=-1, keepdims=True) - logits, len(expl) - 1)
    return expl[idx].astype(np.int64)


def ref_forward(model: IntModel, tokens: np.ndarray) -> np.ndarray:
    """Teacher-forced EXPL values [B, T, 256] for token rows [B, T] (each row
    starts with its BOS): ``T`` reference steps."""
    tokens = np.asarray(tokens, dtype=np.int64)
    B, T = tokens.shape
    st = RefState(model, B)
    out = np.empty((B, T, model.head.w.shape[0]), np.int64)
    for t in range(T):
        out[:, t] = ref_step(model, st, tokens[:, t])
    return out


#: the clamp range every linear layer of a kind must have (the bounds above rely on them)
LINEAR_RANGES = {"q": ACT16, "kv": KV_CLAMP, "o": RES_CLAMP, "fc1": GELU_CLAMP, "fc2": RES_CLAMP,
                 "head": LOGIT_CLAMP}
#: the largest input each kind of linear layer receives
LINEAR_INPUTS = {"q": ACT16, "kv": ACT16, "o": KV_CLAMP << ATT_OUT_SHIFT, "fc1": ACT16, "fc2": GELU_CLAMP,
                 "head": ACT16}


def to_arrays(model: IntModel) -> dict[str, np.ndarray]:
    """The flat name -> array form the bundle stores (``intlm.npz``)."""
    out: dict[str, np.ndarray] = {
        "d_model": np.int64(model.d_model), "n_head": np.int64(model.n_head),
        "head_dim": np.int64(model.head_dim), "ctx": np.int64(model.ctx), "n_layer": np.int64(len(model.layers)),
        "ln_eps": np.int64(model.ln_eps), "ln_k": np.int64(model.ln_k),
        "tok": model.tok.astype(np.int32), "pos": model.pos.astype(np.int32),
        "expa": model.expa.astype(np.int32), "expl": model.expl.astype(np.int32),
    }

    def lin(prefix: str, x: IntLinear) -> None:
        out[f"{prefix}.w"] = x.w.astype(np.int8)
        out[f"{prefix}.m"] = x.m.astype(np.int64)
        out[f"{prefix}.b"] = x.b.astype(np.int64)
        out[f"{prefix}.sh"] = np.int64(x.sh)

    for i, ly in enumerate(model.layers):
        for k in ("q", "kv", "o", "fc1", "fc2"):
            lin(f"layer{i}.{k}", getattr(ly, k))
        out[f"layer{i}.att_shift"] = np.int64(ly.att_shift)
        out[f"layer{i}.gelu"] = ly.gelu.astype(np.int16)
    lin("head", model.head)
    return out


def from_arrays(arrs: Any) -> IntModel:
    """Rebuild and validate an :class:`IntModel` from :func:`to_arrays`'s
    form (a dict or an ``np.load`` result).  Raises ValueError naming the
    first array that breaks a bound the arithmetic relies on."""

    def get(name: str, dtype: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
        try:
            a = np.asarray(arrs[name])
        except KeyError:
            raise ValueError(f"the exact model lacks the array {name!r}") from None
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

    d = scalar("d_model", 1, 4096)
    H = scalar("n_head", 1, 64)
    hd = scalar("head_dim", 1, MAX_HEAD_DIM)
    if H * hd != d:
        raise ValueError(f"n_head * head_dim = {H * hd} != d_model = {d}")
    ctx = scalar("ctx", 1, MAX_CTX)
    n_layer = scalar("n_layer", 1, 64)
    ln_eps = scalar("ln_eps", 1, 1 << 40)
    ln_k = scalar("ln_k", 1, 1 << 15)

    def table(name: str, dtype: Any, first_max: int, max_len: int) -> np.ndarray:
        t = get(name, dtype)
        if t.ndim != 1 or not 1 <= len(t) <= max_len:
            raise ValueError(f"table {name!r} must be 1-D with 1..{max_len} entries")
        t = t.astype(np.int64)
        if t[0] > first_max or t[-1] != 0 or (t < 0).any() or (np.diff(t) > 0).any():
            raise ValueError(f"table {name!r} is not a non-increasing table from <= {first_max} down to 0")
        return t

    expa = table("expa", np.int32, EXPA_ONE, 1 << 16)
    if expa[0] < 1:
        raise ValueError("table 'expa' must start above 0 (the softmax divides by its sum)")
    expl = table("expl", np.int32, EXPL_ONE, 1 << 20)
    if expl[0] != EXPL_ONE:
        raise ValueError(f"table 'expl' must start at {EXPL_ONE}")

    def emb(name: str, rows: int) -> np.ndarray:
        e = get(name, np.int32, (rows, d))
        if np.abs(e.astype(np.int64)).max(initial=0) > RES_CLAMP:
            raise ValueError(f"array {name!r} has entries beyond +-{RES_CLAMP}")
        return e

    def lin(prefix: str, kind: str, n_out: int, n_in: int) -> IntLinear:
        w = get(f"{prefix}.w", np.int8, (n_out, n_in))
        m = get(f"{prefix}.m", np.int64, (n_out,))
        b = get(f"{prefix}.b", np.int64, (n_out,))
        sh = scalar(f"{prefix}.sh", 1, MAX_SH)
        if (w == -128).any():
            raise ValueError(f"array '{prefix}.w' holds -128 (weights are in [-127, 127])")
        if (m < 0).any() or (m >= 1 << 31).any():
            raise ValueError(f"array '{prefix}.m' has multipliers outside [0, 2**31)")
        if (np.abs(b) >= 1 << 61).any():
            raise ValueError(f"array '{prefix}.b' has offsets beyond 2**61")
        if LINEAR_INPUTS[kind] * int(np.abs(w.astype(np.int64)).sum(axis=1).max()) >= 1 << 31:
            raise ValueError(f"layer {prefix!r}: its int32 accumulator could overflow")
        r = LINEAR_RANGES[kind]
        return IntLinear(w=w, m=m, b=b, sh=sh, lo=-r, hi=r)

    layers = []
    kvw: int | None = None
    for i in range(n_layer):
        p = f"layer{i}"
        q = lin(f"{p}.q", "q", d, d)
        kv = lin(f"{p}.kv", "kv", 2 * hd, d)
        o = lin(f"{p}.o", "o", d, d)
        fc1w = get(f"{p}.fc1.w", np.int8)
        if fc1w.ndim != 2:
            raise ValueError(f"array '{p}.fc1.w' must be 2-D")
        f = fc1w.shape[0]
        if kvw is not None and f != kvw:
            raise ValueError(f"array '{p}.fc1.w': every layer needs the same d_mlp ({kvw}), not {f}")
        kvw = f
        fc1 = lin(f"{p}.fc1", "fc1", f, d)
        fc2 = lin(f"{p}.fc2", "fc2", d, f)
        att_shift = scalar(f"{p}.att_shift", 0, 40)
        gelu = get(f"{p}.gelu", np.int16, (2 * GELU_CLAMP + 1,))
        if np.abs(gelu.astype(np.int64)).max() > GELU_CLAMP:
            raise ValueError(f"table '{p}.gelu' has entries beyond +-{GELU_CLAMP}")
        layers.append(IntLayer(q=q, kv=kv, o=o, fc1=fc1, fc2=fc2, att_shift=att_shift, gelu=gelu))
    headw = get("head.w", np.int8)
    if headw.ndim != 2 or headw.shape[1] != d or not 2 <= headw.shape[0] <= 1 << 16:
        raise ValueError(f"array 'head.w' has shape {headw.shape}, expected (V, {d})")
    head = lin("head", "head", headw.shape[0], d)
    tok = get("tok", np.int32)
    if tok.ndim != 2 or tok.shape[0] < 2:
        raise ValueError(f"array 'tok' has shape {tok.shape}")
    return IntModel(d_model=d, n_head=H, head_dim=hd, ctx=ctx, tok=emb("tok", tok.shape[0]), pos=emb("pos", ctx),
                    ln_eps=ln_eps, ln_k=ln_k, layers=layers, head=head, expa=expa, expl=expl)


def load(path: Any) -> IntModel:
    """:func:`from_arrays` of an ``.npz`` file (never unpickles)."""
    with np.load(path, allow_pickle=False) as z:
        return from_arrays({k: z[k] for k in z.files})
