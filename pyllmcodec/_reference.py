"""A slow, pure-Python reference of the quantizer and the range coder.

Used only as the tests' oracle: it follows the contract written in
``csrc/quantizer.hpp``, ``csrc/quantizer_int.hpp``, ``csrc/range_coder.hpp``
and ``csrc/mixer.hpp`` line by line with Python ints (and numpy float32
scalars where the contract says float32), and must give bit-identical tables and bytes.  Never import it on a hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyllmcodec.errors import CodecError

__all__ = [
    "CM_SQUASH_KNOTS",
    "DEFAULT_PRECISION",
    "CmModel",
    "CmRowCtx",
    "Decoder",
    "Encoder",
    "MatchMixerRow",
    "cm_lm_bit",
    "cm_squash",
    "cm_stretch",
    "cm_stretch12",
    "cm_stretch_table",
    "cm_trace_ref",
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


# ---------------------------------------------------------------------------
# The context-mixing stage (csrc/cm.hpp, docs/FORMAT.md section 4f), step by
# step as its "READ ME FIRST" contract states it, with Python ints only.
#
# C++ `>>` of a negative int64 is an arithmetic shift (floor division by a
# power of two), which is what Python's `>>` does.  Every C++ `/` and `%` of
# the stage has nonnegative operands (asserted below where it is not obvious),
# so `//` and `%` are exact mirrors.  uint64 arithmetic wraps with _M64.
# ---------------------------------------------------------------------------

CM_LIM = 3071
CM_CTX = 9  # hashed contexts
CM_IN = CM_CTX + 3  # the model, order 0, the hashed contexts, the bias
CM_SETS = 16
CM_MIN_LEN = 8  # cm2: a match is looked up by the row's last 8 bytes
CM_MATCH_CHECK = 32  # cm2: a candidate is verified over up to 32 bytes back
CM_APM_KNOTS = 33
CM_SETS3 = (CM_CTX + 1) * 8  # cm3: mixer 3's sets, by contexts found x bits known
CM_MAP_RATE = 7  # cm3: the counter maps learn at rate 2^-7
CM_C1 = 0xFF51AFD7ED558CCD
CM_C2 = 0xC4CEB9FE1A85EC53
CM_C3 = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_CM_SLOT0 = 0x80000000  # p22 = 2^21, n = 0

# K[i] = round(65536 / (1 + exp(-(i - 48) / 4))), clamped to 1..65535 (the
# integers of csrc/cm.hpp; tests/test_cm_core.py checks them against the formula).
CM_SQUASH_KNOTS = (
    1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 13,
    17, 22, 28, 36, 47, 60, 77, 98, 126, 162, 208, 267, 342, 439, 562,
    720, 922, 1179, 1506, 1921, 2446, 3108, 3938, 4971, 6249, 7812, 9702, 11955, 14595, 17625,
    21025, 24743, 28693, 32768, 36843, 40793, 44511, 47911, 50941, 53581, 55834, 57724, 59287, 60565, 61598,
    62428, 63090, 63615, 64030, 64357, 64614, 64816, 64974, 65097, 65194, 65269, 65328, 65374, 65410, 65438,
    65459, 65476, 65489, 65500, 65508, 65514, 65519, 65523, 65526, 65528, 65530, 65531, 65532, 65533, 65534,
    65534, 65535, 65535, 65535, 65535, 65535, 65535,
)  # fmt: skip


def cm_squash(d: int) -> int:
    """p16 = squash(d): the knots interpolated at d / 64 (d clamped to +-3072)."""
    d = max(-3072, min(3072, int(d)))
    u = d + 3072
    i, f = u >> 6, u & 63
    K = CM_SQUASH_KNOTS
    if i >= 96:  # d = 3072: f = 0, the formula's K[96] (there is no K[97])
        return K[96]
    return (K[i] * (64 - f) + K[i + 1] * f + 32) >> 6


_cm_stretch_table: list[int] | None = None


def cm_stretch_table() -> list[int]:
    """The 65536-entry stretch table, by the contract's integer scan (built once)."""
    global _cm_stretch_table
    if _cm_stretch_table is None:
        t = [CM_LIM] * 65536
        nxt = 0  # smallest p16 not yet assigned
        for d in range(-CM_LIM, CM_LIM + 1):
            if nxt >= 65536:
                break
            p = cm_squash(d)
            while nxt <= p and nxt < 65536:
                t[nxt] = d
                nxt += 1
        _cm_stretch_table = t
    return _cm_stretch_table


def cm_stretch(p16: int) -> int:
    """The smallest d in [-3071, 3071] with squash(d) >= p16 (3071 if none); p16 in 0..65535."""
    return cm_stretch_table()[p16]


def cm_stretch12(q: int) -> int:
    """A counter's stretch from its top 12 bits: stretch(16 q + 8)."""
    return cm_stretch(16 * q + 8)


class WaveMatchRef:
    """The wave match (``csrc/wavematch.hpp``, FORMAT.md section 4g), step by
    step as its contract states it: one state for ``n_rows`` rows."""

    def __init__(self, n_rows: int, max_len: int, long_len: int = 4, min_len: int = 2, hash_bits: int = 18,
                 rate: int = 5) -> None:
        self.n_rows, self.max_len, self.stride = n_rows, max_len, max_len + 1
        self.lens, self.hash_bits, self.rate = (long_len, min_len), hash_bits, rate
        self.hist: list[list[int]] = [[] for _ in range(n_rows)]
        self.table: list[dict[int, int]] = [{}, {}]
        self.ptr = [[0, 0] for _ in range(n_rows)]
        self.len = [[0, 0] for _ in range(n_rows)]
        self.guess = [0] * n_rows
        self.cell = [-1] * n_rows
        self.apm = [cm_squash(192 * j - 3072) for _ in range(16) for j in range(33)]

    @staticmethod
    def len_bucket(n: int) -> int:
        return n if n <= 4 else 5 if n < 8 else 6 if n < 16 else 7

    def mix_int(self, w: Sequence[int], r: int) -> tuple[int, int]:
        """Row ``r``'s override (match, q) for its integer row ``w``: (-1, 0) for none."""
        w = [int(v) for v in w]
        self.cell[r] = -1
        b, g = -1, 0
        for c in (0, 1):
            if self.len[r][c] == 0:
                continue
            src, i = divmod(self.ptr[r][c], self.stride)
            if i >= len(self.hist[src]):
                self.len[r][c] = 0
            elif b < 0:
                g, b = self.hist[src][i], 8 * c + self.len_bucket(self.len[r][c])
        if b < 0 or g >= len(w):
            return -1, 0
        S = sum(w)
        if S == w[g]:
            return -1, 0
        p = min(65535, max(1, (w[g] << 16) // S))
        u = cm_stretch(p) + 3072
        j, f = divmod(u, 192)
        h = (self.apm[b * 33 + j] * (192 - f) + self.apm[b * 33 + j + 1] * f) // 192
        self.cell[r] = b * 33 + j + (1 if f >= 96 else 0)
        self.guess[r] = g
        return g, min(max(h, 32), 65504)

    def push(self, s: int, r: int) -> None:
        """Row ``r``'s coded symbol after its mix (``feed``: without one)."""
        c = self.cell[r]
        if c >= 0:
            a = self.apm[c]
            self.apm[c] = a + (((65536 if s == self.guess[r] else 0) - a) >> self.rate)
            self.cell[r] = -1
        self.feed(s, r)

    def feed(self, s: int, r: int) -> None:
        for c in (0, 1):
            if self.len[r][c] > 0:
                src, i = divmod(self.ptr[r][c], self.stride)
                if i < len(self.hist[src]) and self.hist[src][i] == s:
                    self.len[r][c] = min(self.len[r][c] + 1, 65535)
                    self.ptr[r][c] += 1
                else:
                    self.len[r][c] = 0
        h = self.hist[r]
        h.append(int(s))
        n = len(h)
        for c, L in enumerate(self.lens):
            if n < L:
                continue
            x = 0
            for v in h[n - L:]:
                x = ((x + v + 1) * 0x9E3779B1) & 0xFFFFFFFF
            k = x >> (32 - self.hash_bits)
            t = self.table[c].get(k, 0)
            if self.len[r][c] == 0 and t:
                src, i = divmod(t, self.stride)
                if self.hist[src][i - L:i] == h[n - L:]:
                    self.ptr[r][c], self.len[r][c] = t, L
            self.table[c][k] = r * self.stride + n


def _cm_hash(x: int, k: int) -> int:
    x = ((x + k + 1) * CM_C3) & _M64
    return x ^ (x >> 29)


def _cm_is_letter(b: int) -> bool:
    return 0 <= (b | 32) - ord("a") < 26


class CmRowCtx:
    """A row's own byte history and its 9 context hashes (RowCtx)."""

    def __init__(self) -> None:
        self.h = [0] * CM_CTX
        self.hist = self.hist2 = self.word = self.word1 = 0
        self.c0 = 1
        # cm2: the row's next place in its group's ring, and its match (mlen 0: none)
        self.pos = self.mptr = self.mlen = self.nbytes = 0
        # cm3: each context's bucket for the current nibble, and how many were found
        self.bucket = [0] * CM_CTX
        self.found = 0
        self.rehash()

    def next_bit(self, y: int) -> None:
        """c0 = 2 c0 + y; a finished byte enters the history and the contexts."""
        self.c0 = 2 * self.c0 + y
        if self.c0 >= 256:
            b = self.c0 - 256
            self.hist2 = ((self.hist2 << 8) | (self.hist >> 56)) & _M64
            self.hist = ((self.hist << 8) | b) & _M64
            if _cm_is_letter(b):
                self.word = ((self.word + (b | 32) + 1) * CM_C3) & _M64
            elif self.word:
                self.word1, self.word = self.word, 0
            self.c0 = 1
            self.rehash()

    def rehash(self) -> None:
        H, hist = _cm_hash, self.hist
        self.h = [
            H(hist & 0xFF, 1),
            H(hist & 0xFFFF, 2),
            H(hist & 0xFFFFFF, 3),
            H(hist & 0xFFFFFFFF, 4),
            H(hist & 0xFFFFFFFFFFFF, 6),
            H(self.word, 7) if self.word else H(hist & 0xFF, 8),
            H(hist & 0xFFFFFFFFFF, 5),
            H(hist, 9) ^ H(self.hist2 & 0xFFFF, 10),
            H((self.word1 + self.word * 3) & _M64, 11),
        ]


class CmModel:
    """The learned state (Model): counters, two mixers, two APMs.

    Sparse: a counter or APM knot never written holds its initial value.
    A mixer weight that would leave the int32 range raises OverflowError
    (signed overflow is undefined in the C++, so no answer would be right).
    """

    def __init__(self, table_bits: int, limit: int = 255, lr: int = 8, kind: int = 1,
                 priors: Sequence[int] | None = None) -> None:
        if kind not in (1, 2, 3):
            raise ValueError("context-mixing spec: kind must be 1 (cm1), 2 (cm2) or 3 (cm3)")
        if not 10 <= table_bits <= 24:
            raise ValueError("context-mixing spec: table_bits must be in 10..24")
        if not 1 <= limit <= 1023:
            raise ValueError("context-mixing spec: limit must be in 1..1023")
        if not 1 <= lr <= 128:
            raise ValueError("context-mixing spec: lr must be in 1..128")
        self.table_bits, self.limit, self.lr, self.kind = table_bits, limit, lr, kind
        # cm2's match model: the ring (sparse: an unwritten place holds 0), its
        # table of places (absent: 0), the counters by (length, expected bit)
        self.ring_size = 1 << (table_bits + 2)
        self.ring: dict[int, int] = {}
        self.mtab: dict[int, int] = {}
        self.mcount = [_CM_SLOT0] * 64
        self.next_place = 1
        self.mslot = -1
        self.t: dict[int, int] = {}  # (i << table_bits) + slot -> counter
        self.o0 = [_CM_SLOT0] * 256
        # cm2: the match model's input after the bias; cm3: the maps' after it
        self.n_x = nx = {1: CM_IN, 2: CM_IN + 1, 3: CM_IN + 1 + CM_CTX}[kind]
        # cm3: bucket checks (bucket start -> check; absent: 0), mixer 3, the maps
        self.check: dict[int, int] = {}
        self.w3 = [0] * (CM_SETS3 * nx)
        for s in range(CM_SETS3):
            self.w3[s * nx] = 65536
        self.maps = [cm_squash(96 * (k % 64) - 3024) for k in range(CM_CTX * 16 * 64)] if kind == 3 else []
        self.map_k = [0] * CM_CTX
        self.set3 = 0
        self.pm3 = 32768
        self.w = [0] * (3 * CM_SETS * nx)  # cm2: 3 x the sets, by match length (cm1 uses the first 16)
        self.w2 = [0] * (256 * nx)
        for s in range(3 * CM_SETS):
            self.w[s * nx] = 65536
        for s in range(256):
            self.w2[s * nx] = 65536
        if priors is not None:  # cm3: the three mixers' initial weights, in that order
            if kind != 3:
                raise ValueError("context-mixing spec: priors are mixer weights of kind 3 (cm3)")
            q = [int(v) for v in priors]
            if len(q) != len(self.w) + len(self.w2) + len(self.w3):
                raise ValueError(f"context-mixing spec: priors must be {len(self.w) + len(self.w2) + len(self.w3)} "
                                 f"weights, got {len(q)}")
            if any(not -(1 << 24) <= v <= 1 << 24 for v in q):
                raise ValueError("context-mixing spec: priors outside -2^24..2^24")
            n1, n2 = len(self.w), len(self.w) + len(self.w2)
            self.w, self.w2, self.w3 = q[:n1], q[n1:n2], q[n2:]
        self.apm_init = [cm_squash(192 * j - 3072) for j in range(CM_APM_KNOTS)]
        self.apm = self.apm_init * 256
        # APM 2: 2^apm2_bits contexts, c0 | last byte << 8, hashed
        self.apm2_bits = min(table_bits - 2, 12)
        self.apm2: dict[int, int] = {}  # context * 33 + j -> knot
        self.rate = [131072 // (2 * n + 3) for n in range(1024)]
        # the last predict's state, for update
        self.x = [0] * self.n_x
        self.slots = [0] * CM_CTX
        self.c0 = 1
        self.set = 0
        self.pm = self.pm1 = self.pm2 = 32768
        self.apm_j = self.apm_f = 0
        self.a2 = 0

    def index(self, i: int, h: int, c0: int) -> int:
        """Context i's counter for bit c0: buckets of 16, one per (h, first
        nibble), the slot in it by the nibble's bits so far behind a 1."""
        b = c0.bit_length() - 1  # bits known, 0..7
        key = 0 if b < 4 else c0 >> (b - 4)  # 0, or the first nibble behind its 1 (16..31)
        return self.line(i, h, key)[0] + self.nibble(c0)

    def line(self, i: int, h: int, key: int) -> tuple[int, int]:
        """(the first slot of context i's line of 16 for hash h and nibble
        key (0, or the first nibble behind its 1), the mixed hash z)."""
        z = ((h ^ (((key + 1) * CM_C1) & _M64)) * CM_C2) & _M64
        return (i << self.table_bits) + ((z >> (64 - self.table_bits)) & ~15), z

    def find_all(self, ctx: CmRowCtx, count: bool) -> None:
        """cm3, at a nibble's first bit: each context's bucket, one of two
        lines by a 32-bit check; a miss clears the line whose first counter
        saw fewer visits (the first of the two on a tie)."""
        if count:
            ctx.found = 0
        key = 0 if ctx.c0 == 1 else ctx.c0
        for i in range(CM_CTX):
            a, z = self.line(i, ctx.h[i], key)
            b = a ^ 16
            check = (z & _M32) | 1
            if self.check.get(a, 0) == check or self.check.get(b, 0) == check:
                ctx.bucket[i] = a if self.check.get(a, 0) == check else b
                ctx.found += 1 if count else 0
                continue
            na = self.t.get(a + 1, _CM_SLOT0) & 1023
            nb = self.t.get(b + 1, _CM_SLOT0) & 1023
            v = b if nb < na else a
            self.check[v] = check
            for k in range(1, 16):
                self.t.pop(v + k, None)
            ctx.bucket[i] = v

    @staticmethod
    def nibble(c0: int) -> int:
        """The slot within a line: the nibble's bits so far behind a 1 (1..15)."""
        b = c0.bit_length() - 1
        return c0 if b < 4 else (c0 & ((1 << (b - 4)) - 1)) | (1 << (b - 4))

    def attach(self, ctx: CmRowCtx, n: int) -> None:
        """cm2: a row of at most ``n`` bytes takes the group's next ``n`` places."""
        ctx.pos = self.next_place
        self.next_place = (self.next_place + n) & _M32

    def _ring(self, place: int) -> int:
        return self.ring.get(place % self.ring_size, 0)

    def match_input(self, ctx: CmRowCtx) -> int:
        """cm2: the match's input before a bit (0 without a match that agrees)."""
        self.mslot = -1
        if ctx.mlen == 0:
            return 0
        b = ctx.c0.bit_length() - 1
        pb = self._ring(ctx.mptr) | 256
        if pb >> (8 - b) != ctx.c0:
            return 0
        e = (pb >> (7 - b)) & 1
        self.mslot = 2 * min(ctx.mlen, 31) + e
        return cm_stretch12(self.mcount[self.mslot] >> 20)

    def match_byte(self, ctx: CmRowCtx) -> None:
        """cm2: after a byte of the row (its newest, hist & 0xff)."""
        byte = ctx.hist & 0xFF
        self.ring[ctx.pos % self.ring_size] = byte
        ctx.pos = (ctx.pos + 1) & _M32
        ctx.nbytes = min(ctx.nbytes + 1, CM_MATCH_CHECK)
        if ctx.mlen > 0:
            if self._ring(ctx.mptr) == byte:
                ctx.mlen = min(ctx.mlen + 1, 65535)
                ctx.mptr = (ctx.mptr + 1) & _M32
            else:
                ctx.mlen = 0
        if ctx.nbytes < CM_MIN_LEN:
            return
        h = _cm_hash(ctx.hist, 12) >> (64 - self.table_bits)
        cand = self.mtab.get(h, 0)
        if ctx.mlen == 0 and cand:
            back = (ctx.pos - cand) & _M32
            if 0 < back < self.ring_size - 1:
                n = 0
                while (n < min(ctx.nbytes, CM_MATCH_CHECK)
                       and self._ring(cand - 1 - n) == self._ring(ctx.pos - 1 - n)):
                    n += 1
                if n >= CM_MIN_LEN:
                    ctx.mlen, ctx.mptr = n, cand
        self.mtab[h] = ctx.pos

    def _apm2(self, k: int) -> int:
        return self.apm2.get(k, self.apm_init[k % CM_APM_KNOTS])

    def predict(self, ctx: CmRowCtx, p_lm: int) -> int:
        """P(bit = 1) in 1..65535 for ctx's next bit, from the model's p_lm (1..65535)."""
        x0 = cm_stretch(p_lm)
        self.c0 = c0 = ctx.c0
        x = self.x
        x[0] = x0
        x[1] = cm_stretch12(self.o0[c0] >> 20)
        if self.kind == 3 and (c0 == 1 or 16 <= c0 < 32):
            self.find_all(ctx, True)
        for i in range(CM_CTX):
            self.slots[i] = k = (ctx.bucket[i] + self.nibble(c0) if self.kind == 3
                                 else self.index(i, ctx.h[i], c0))
            x[2 + i] = cm_stretch12(self.t.get(k, _CM_SLOT0) >> 20)
        x[CM_IN - 1] = 256
        if self.kind >= 2:
            x[CM_IN] = self.match_input(ctx)
        if self.kind == 3:
            for i in range(CM_CTX):
                n = self.t.get(self.slots[i], _CM_SLOT0) & 1023
                nq = n if n < 8 else min(12, 8 + (n >> 3).bit_length() - 1)
                self.map_k[i] = k = (i * 16 + nq) * 64 + (x[2 + i] + 3072) // 96
                x[CM_IN + 1 + i] = cm_stretch(self.maps[k])
        assert x0 + 3072 >= 0
        self.set = min(CM_SETS - 1, (x0 + 3072) * 16 // 6144)
        if self.mslot >= 0:
            self.set += CM_SETS * (1 if ctx.mlen < 16 else 2)
        nx = self.n_x
        w1 = self.w[self.set * nx : (self.set + 1) * nx]
        w2 = self.w2[c0 * nx : (c0 + 1) * nx]
        d1 = max(-CM_LIM, min(CM_LIM, sum(a * b for a, b in zip(w1, x)) >> 16))
        d2 = max(-CM_LIM, min(CM_LIM, sum(a * b for a, b in zip(w2, x)) >> 16))
        self.pm1, self.pm2 = cm_squash(d1), cm_squash(d2)
        dot = (d1 + d2) >> 1
        if self.kind == 3:
            self.set3 = ctx.found * 8 + c0.bit_length() - 1
            w3 = self.w3[self.set3 * nx : (self.set3 + 1) * nx]
            d3 = max(-CM_LIM, min(CM_LIM, sum(a * b for a, b in zip(w3, x)) >> 16))
            self.pm3 = cm_squash(d3)
            dot = max(-CM_LIM, min(CM_LIM, ((d1 + d2 + d3) * 21846) >> 16))
        self.pm = cm_squash(dot)
        pos = dot + 3072
        assert pos >= 0
        j, f = pos // 192, pos % 192
        self.apm_j, self.apm_f = j, f
        a0, a1 = self.apm[c0 * CM_APM_KNOTS + j], self.apm[c0 * CM_APM_KNOTS + j + 1]
        pa = (a0 * (192 - f) + a1 * f) // 192
        c01 = c0 | ((ctx.hist & 0xFF) << 8)
        a2 = ((c01 * 0x9E3779B1) & _M32) >> (32 - self.apm2_bits)
        self.a2 = a2 * CM_APM_KNOTS + j
        b0, b1 = self._apm2(self.a2), self._apm2(self.a2 + 1)
        pb = (b0 * (192 - f) + b1 * f) // 192
        return max(1, min(65535, (2 * self.pm + 3 * pa + 3 * pb) >> 3))

    def _learn(self, s: int, y: int) -> int:
        n, p22 = s & 1023, s >> 10
        np_ = p22 + ((((y << 22) - p22) * self.rate[n]) >> 16)
        assert 0 <= np_ < 1 << 22
        return (np_ << 10) | (n + 1 if n < self.limit else n)

    def update(self, ctx: CmRowCtx, y: int) -> None:
        """Learns bit y of the last predict, and moves ctx on by it."""
        err1, err2 = (y << 16) - self.pm1, (y << 16) - self.pm2
        b1, b2 = self.set * self.n_x, self.c0 * self.n_x
        mixers = [(self.w, b1, err1), (self.w2, b2, err2)]
        if self.kind == 3:
            mixers.insert(0, (self.w3, self.set3 * self.n_x, (y << 16) - self.pm3))
            for k in self.map_k:
                m = self.maps[k]
                self.maps[k] = m + (((y << 16) - m) >> CM_MAP_RATE)
        for k in range(self.n_x):
            xk = self.x[k]
            for w, base, err in mixers:
                v = w[base + k] + ((xk * err * self.lr + (1 << 19)) >> 20)
                if not _I32_MIN <= v <= _I32_MAX:
                    raise OverflowError("a mixer weight left the int32 range (undefined in the C++)")
                w[base + k] = v
        up = 1 if self.apm_f >= 96 else 0
        ka = self.c0 * CM_APM_KNOTS + self.apm_j + up
        a = self.apm[ka]
        self.apm[ka] = a + (((y << 16) - a) >> 6)
        kb = self.a2 + up
        b = self._apm2(kb)
        self.apm2[kb] = b + (((y << 16) - b) >> 6)
        self.o0[self.c0] = self._learn(self.o0[self.c0], y)
        for k in self.slots:
            self.t[k] = self._learn(self.t.get(k, _CM_SLOT0), y)
        if self.mslot >= 0:
            self.mcount[self.mslot] = self._learn(self.mcount[self.mslot], y)
        ctx.next_bit(y)
        if self.kind >= 2 and ctx.c0 == 1:
            self.match_byte(ctx)

    def feed(self, ctx: CmRowCtx, b: int) -> None:
        """A byte read without coding (a dictionary): counters and ctx only."""
        for j in range(7, -1, -1):
            y = (b >> j) & 1
            self.o0[ctx.c0] = self._learn(self.o0[ctx.c0], y)
            if self.kind == 3 and (ctx.c0 == 1 or 16 <= ctx.c0 < 32):
                self.find_all(ctx, False)
            for i in range(CM_CTX):
                k = ctx.bucket[i] + self.nibble(ctx.c0) if self.kind == 3 else self.index(i, ctx.h[i], ctx.c0)
                self.t[k] = self._learn(self.t.get(k, _CM_SLOT0), y)
            ctx.next_bit(y)
        if self.kind >= 2:
            self.match_byte(ctx)


def cm_lm_bit(cdf: Sequence[int], lo: int, hi: int) -> int:
    """The model's P(bit = 1) in 1..65535 for the symbols [lo, hi) of a frequency
    table cdf: the share of the upper half [mid, hi)."""
    mid = (lo + hi) >> 1
    n = int(cdf[hi]) - int(cdf[lo])
    n1 = int(cdf[hi]) - int(cdf[mid])
    return max(1, min(65535, (n1 << 16) // n))


def cm_trace_ref(p_lm_rows: Sequence[Sequence[int]], symbols: Sequence[int], offsets: Sequence[int] | None = None,
                 shared: bool = False, table_bits: int = 16, limit: int = 255, lr: int = 8, wave: int = 0,
                 keep: bool = False, kind: int = 1, priors: Sequence[int] | None = None,
                 weights: bool = False) -> Any:
    """Reference of ``_core.cm_trace``: the stage's P(bit = 1) for each bit of
    each byte (a list of 8 per byte), step t coding every chunk's byte t in
    chunk order, with one state per chunk or one for all (shared); in waves
    of ``wave`` chunks (0: one), each with fresh states or (keep) the shared
    one carried on; ``kind`` 1 (cm1), 2 (cm2) or 3 (cm3); ``priors`` (cm3)
    the fresh states' initial mixer weights.  With ``weights`` (cm3) returns
    (the probabilities, the mixers' final weights of the state that coded the
    last chunk)."""
    p = [[int(v) for v in r] for r in p_lm_rows]
    s = [int(v) for v in symbols]
    n = len(p)
    if any(len(r) != 8 for r in p):
        raise ValueError("p_lm must be [n, 8]: the model's P(bit = 1) per bit, MSB first")
    if len(s) != n:
        raise ValueError(f"symbols has {len(s)} entries but p_lm has {n} rows")
    off = [0, n] if offsets is None else [int(v) for v in offsets]
    if len(off) < 2 or off[0] != 0 or off[-1] != n:
        raise ValueError("offsets must run from 0 to n")
    if any(off[i] < off[i - 1] for i in range(1, len(off))):
        raise ValueError("offsets must not decrease")
    CmModel(table_bits, limit, lr, kind, priors)  # validates the parameters
    if weights and kind != 3:
        raise ValueError("weights=True needs kind 3 (cm3)")
    if wave < 0:
        raise ValueError("wave must be >= 0 (0: all chunks in one wave)")
    if any(not 0 <= v <= 255 for v in s):
        raise ValueError("symbols must be bytes (0..255)")
    if any(not 1 <= v <= 65535 for r in p for v in r):
        raise ValueError("p_lm entries must be in 1..65535")
    n_chunks = len(off) - 1
    per = wave or max(n_chunks, 1)
    models: list[CmModel | None] = [None] * (1 if shared else n_chunks)
    ctx = [CmRowCtx() for _ in range(n_chunks)]
    out: list[list[int]] = [[] for _ in range(n)]
    for w0 in range(0, n_chunks, per):
        w1 = min(n_chunks, w0 + per)
        for c in (range(1) if shared else range(w0, w1)):
            if models[c] is None or not keep:
                models[c] = CmModel(table_bits, limit, lr, kind, priors)
        longest = max((off[c + 1] - off[c] for c in range(w0, w1)), default=0)
        for c in range(w0, w1):
            md = models[0 if shared else c]
            assert md is not None
            md.attach(ctx[c], longest)
        for t in range(longest):
            for c in range(w0, w1):
                k = off[c] + t
                if k >= off[c + 1]:
                    continue
                md = models[0 if shared else c]
                assert md is not None
                for j in range(8):
                    out[k].append(md.predict(ctx[c], p[k][j]))
                    md.update(ctx[c], (s[k] >> (7 - j)) & 1)
    if not weights:
        return out
    last = models[-1]
    return out, ([] if last is None else last.w + last.w2 + last.w3)
