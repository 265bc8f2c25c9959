"""A slow, pure-Python reference of the quantizer and the range coder.

Used only as the tests' oracle: it follows the contract written in
``csrc/quantizer.hpp``, ``csrc/quantizer_int.hpp``, ``csrc/range_coder.hpp``
and ``csrc/mixer.hpp`` line by line with Python ints (and numpy float32
scalars where the contract says float32), and must give bit-identical tables and bytes.  Never import it on a hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pyllmcodec.errors import CodecError

__all__ = [
    "DEFAULT_PRECISION",
    "Decoder",
    "Encoder",
    "MatchMixerRow",
    "decode",
    "encode",
    "quantize",
    "quantize_int",
    "quantize_int_row",
    "quantize_row",
]

DEFAULT_PRECISION = 30
MAX_SYMBOLS = 1 << 21
SUM_BLOCK = 32
SUM_LANES = 8
TINY_SUM = 2.0**-64
TINY_PRE = np.float32(2.0**100)
HUGE_SUM = 2.0**100
SLACK_SHIFT = 20

WINDOW_BITS = 56
TOP = 1 << WINDOW_BITS
BOT = 1 << 48
FF_TOP = 0xFF << 48
WINDOW_BYTES = WINDOW_BITS // 8


def _check_shape(V: int, precision: int) -> None:
    if not 2 <= precision <= 31:
        raise ValueError(f"precision must be in [2, 31], got {precision}")
    if V < 2:
        raise ValueError(f"the alphabet needs at least 2 symbols, got V = {V}")
    if V > min(MAX_SYMBOLS, 1 << (precision - 1)):
        raise ValueError(f"V = {V} symbols is too many for precision {precision}")


def _row_scale(
    p: np.ndarray, precision: int, row: int
) -> tuple[np.float32, np.float32]:
    """Steps 1-2: the fixed-order row sum, then (pre, s32)."""
    V = len(p)
    for i, x in enumerate(p):
        if np.isnan(x):
            raise ValueError(f"probs row {row} has a NaN at index {i}")
        if np.isinf(x):
            raise ValueError(f"probs row {row} has an infinity at index {i}")
        if x < 0:
            raise ValueError(f"probs row {row} has a negative value at index {i}")
    lanes = [0.0] * SUM_LANES
    i = 0
    with np.errstate(over="ignore"):
        while i + SUM_BLOCK <= V:
            for j in range(SUM_LANES):
                q = (p[i + j] + p[i + 8 + j]) + (
                    p[i + 16 + j] + p[i + 24 + j]
                )  # float32 ops
                lanes[j] += float(q)
            i += SUM_BLOCK
    for t in range(V - i):
        lanes[t % SUM_LANES] += float(p[i + t])
    s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + (
        (lanes[4] + lanes[5]) + (lanes[6] + lanes[7])
    )
    if not s > 0.0:
        raise ValueError(f"probs row {row} sums to zero")
    if not s < HUGE_SUM:
        raise ValueError(f"probs row {row} has values too large")
    total = 1 << precision
    c = total - V - (total >> SLACK_SHIFT)
    pre = TINY_PRE if s < TINY_SUM else np.float32(1.0)
    s32 = np.float32(float(c) / (s * float(pre)))
    return pre, s32


def _floor(x: np.float32, pre: np.float32, s32: np.float32) -> int:
    """Step 3: trunc(float32(float32(p * pre) * s32))."""
    return int((x * pre) * s32)


def quantize_row(
    p: np.ndarray, precision: int = DEFAULT_PRECISION, row: int = 0
) -> list[int]:
    """The cumulative table [0, ..., 2**precision] of one float32 row."""
    p = np.asarray(p, dtype=np.float32)
    V = len(p)
    _check_shape(V, precision)
    pre, s32 = _row_scale(p, precision, row)
    cdf = [0]
    for i in range(V - 1):
        cdf.append(cdf[-1] + 1 + _floor(p[i], pre, s32))
    total = 1 << precision
    assert cdf[-1] < total, "proof broken"  # step 4 leaves the last freq >= 1
    cdf.append(total)
    return cdf


def quantize(probs: np.ndarray, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Reference of pyllmcodec.core.quantize."""
    probs = np.asarray(probs, dtype=np.float32)
    _check_shape(probs.shape[1], precision)
    return np.array(
        [quantize_row(r, precision, k) for k, r in enumerate(probs)], dtype=np.uint32
    ).reshape(len(probs), probs.shape[1] + 1)


def quantize_int_row(w: Sequence[int], precision: int = DEFAULT_PRECISION, match: int = -1, q: int = 0,
                     row: int = 0) -> list[int]:
    """The cumulative table of one row of integer weights, as
    ``csrc/quantizer_int.hpp`` states it (Python ints)."""
    w = [int(v) for v in w]
    V = len(w)
    _check_shape(V, precision)
    if not -1 <= match < V:
        raise ValueError(f"match[{row}] = {match} is neither -1 nor a symbol")
    if match >= 0 and not 1 <= q <= 65535:
        raise ValueError(f"q[{row}] = {q} must be in 1..65535")
    S = sum(w)
    if S == 0:
        raise ValueError(f"weights row {row} sums to zero")
    c = (1 << precision) - V
    k = 62 - precision
    cm, R, cp = 0, S, c
    if match >= 0:
        cm = (c * q) >> 16
        R, cp = S - w[match], c - cm
    r = (cp << k) // R if R > 0 else 0
    cdf = [0]
    for x in range(V - 1):
        cdf.append(cdf[-1] + 1 + (cm if x == match else (w[x] * r) >> k))
    total = 1 << precision
    assert cdf[-1] < total, "proof broken"
    cdf.append(total)
    return cdf


def quantize_int(weights: np.ndarray, precision: int = DEFAULT_PRECISION, match: Sequence[int] | None = None,
                 q: Sequence[int] | None = None) -> np.ndarray:
    """Reference of pyllmcodec.core.quantize_int."""
    weights = np.asarray(weights)
    n, V = weights.shape
    ms = [-1] * n if match is None else [int(v) for v in match]
    qs = [0] * n if q is None else [int(v) for v in q]
    return np.array([quantize_int_row(weights[k].tolist(), precision, ms[k], qs[k], k) for k in range(n)],
                    dtype=np.uint32).reshape(n, V + 1)


class Encoder:
    """One range-coder stream (56-bit window in a 64-bit low, LZMA-style carry)."""

    def __init__(self, precision: int = DEFAULT_PRECISION) -> None:
        self.precision = precision
        self.low = 0
        self.range = TOP
        self.pending = 0
        self.cache = 0
        self.has_cache = False
        self.out = bytearray()

    def _shift_low(self) -> None:
        if self.low < FF_TOP or self.low >= TOP:
            carry = self.low >> WINDOW_BITS
            if self.has_cache:
                self.out.append((self.cache + carry) & 0xFF)
            else:
                assert carry == 0
            for _ in range(self.pending):
                self.out.append((0xFF + carry) & 0xFF)
            self.pending = 0
            self.cache = (self.low >> 48) & 0xFF
            self.has_cache = True
        else:
            self.pending += 1
        self.low = (self.low & (BOT - 1)) << 8

    def put(self, cum_low: int, freq: int) -> None:
        assert freq >= 1 and cum_low + freq <= 1 << self.precision
        r = self.range >> self.precision
        self.low += r * cum_low
        self.range = r * freq
        while self.range < BOT:
            self._shift_low()
            self.range <<= 8

    def finish(self) -> bytes:
        hi = self.low + self.range
        for k in range(WINDOW_BITS + 1, -1, -1):
            m = 1 << k
            v = (self.low + m - 1) & ~(m - 1)
            if v < hi:
                self.low = v
                break
        for _ in range(WINDOW_BYTES + 1):
            self._shift_low()
        return bytes(self.out).rstrip(b"\x00")


class Decoder:
    """The mirror of Encoder; reads zeros past the end of its input."""

    def __init__(self, data: bytes, precision: int = DEFAULT_PRECISION) -> None:
        self.precision = precision
        self.data = bytes(data)
        self.pos = 0
        self.range = TOP
        self.code = 0
        for _ in range(WINDOW_BYTES):
            self.code = (self.code << 8) | self._next()

    def _next(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def target(self) -> int:
        t = self.code // (self.range >> self.precision)
        if t >> self.precision:
            raise CodecError("target out of range")
        return t

    def advance(self, cum_low: int, freq: int) -> None:
        r = self.range >> self.precision
        t = self.code // r
        if not cum_low <= t < cum_low + freq:
            raise CodecError("range does not contain the target")
        self.code -= r * cum_low
        self.range = r * freq
        while self.range < BOT:
            self.code = ((self.code << 8) | self._next()) & ((1 << 64) - 1)
            self.range <<= 8


def encode(
    cdfs: Sequence[Sequence[int]],
    symbols: Sequence[int],
    precision: int = DEFAULT_PRECISION,
) -> bytes:
    """One stream: symbols[t] coded with table cdfs[t]."""
    enc = Encoder(precision)
    for cdf, s in zip(cdfs, symbols):
        enc.put(int(cdf[s]), int(cdf[s + 1]) - int(cdf[s]))
    return enc.finish()


def decode(
    data: bytes, cdfs: Sequence[Sequence[int]], precision: int = DEFAULT_PRECISION
) -> list[int]:
    """One stream: one symbol per table in cdfs."""
    dec = Decoder(data, precision)
    out = []
    for cdf in cdfs:
        t = dec.target()
        s = max(i for i in range(len(cdf) - 1) if int(cdf[i]) <= t)
        dec.advance(int(cdf[s]), int(cdf[s + 1]) - int(cdf[s]))
        out.append(s)
    return out


class MatchMixerRow:
    """One row of the match model, step by step as ``csrc/mixer.hpp`` states
    it (Python ints; Python floats are IEEE binary64, numpy float32 where the
    contract says float32)."""

    def __init__(self, prior: Sequence[int], min_len: int = 4, hash_bits: int = 16, init_count: int = 30,
                 limit: int = 127) -> None:
        self.q = [int(v) << 12 for v in prior]
        self.k = [init_count] * 256
        self.min_len, self.hash_bits, self.limit = min_len, hash_bits, limit
        self.hist: list[int] = []
        self.table: dict[int, int] = {}
        self.ptr = self.len = 0
        self.cell = -1
        self.pred = 0

    @staticmethod
    def len_bucket(n: int) -> int:
        e = n.bit_length() - 1
        return min(15, 2 * e + (1 if n * n >= 1 << (2 * e + 1) else 0))

    def mix(self, p: np.ndarray) -> np.ndarray:
        """The row after the match model (a float32 copy of ``p``)."""
        p = np.array(p, dtype=np.float32)
        self.cell = -1
        if self.len == 0:
            return p
        m = self.hist[self.ptr]
        if m >= len(p):
            return p
        R = 0.0
        for x in range(len(p)):
            if x != m:
                R += float(p[x])
        pm = float(p[m])
        S = R + pm
        if not (R > 0.0 and pm >= 0.0 and S < 2.0**100):
            return p
        pb = min(15, int(16.0 * pm / S))
        c = 16 * self.len_bucket(self.len) + pb
        q16 = min(max(self.q[c] >> 12, 32), 65504)
        p[m] = np.float32(R * (float(q16) / float(65536 - q16)))
        self.cell, self.pred = c, m
        return p

    def mix_int(self, w: Sequence[int]) -> tuple[int, int]:
        """The override (match, q) of an integer row (mixer.hpp's mix_int)."""
        w = [int(v) for v in w]
        self.cell = -1
        if self.len == 0:
            return -1, 0
        m = self.hist[self.ptr]
        if m >= len(w):
            return -1, 0
        S = sum(w)
        if S == w[m]:
            return -1, 0
        c = 16 * self.len_bucket(self.len) + min(15, 16 * w[m] // S)
        self.cell, self.pred = c, m
        return m, min(max(self.q[c] >> 12, 32), 65504)

    def feed(self, s: int) -> None:
        """``s`` appended without a mix (a dictionary symbol): nothing learned."""
        self.cell = -1
        self.push(s)

    def push(self, s: int) -> None:
        if self.cell >= 0:
            c = self.cell
            t = 1 << 28 if s == self.pred else 0
            num = (t - self.q[c]) * 2
            den = 2 * self.k[c] + 3
            self.q[c] += abs(num) // den * (1 if num >= 0 else -1)  # C++ division truncates toward zero
            self.k[c] = min(self.k[c] + 1, self.limit)
            self.cell = -1
        if self.len > 0:
            if self.hist[self.ptr] == s:
                self.len = min(self.len + 1, 65535)
                self.ptr += 1
            else:
                self.len = 0
        self.hist.append(s)
        n, L = len(self.hist), self.min_len
        if n < L:
            return
        h = 0
        for v in self.hist[n - L :]:
            h = ((h + v + 1) * 0x9E3779B1) & 0xFFFFFFFF
        idx = h >> (32 - self.hash_bits)
        j = self.table.get(idx, 0)
        if self.len == 0 and j and self.hist[j - L : j] == self.hist[n - L :]:
            self.ptr, self.len = j, L
        self.table[idx] = n
