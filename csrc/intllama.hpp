// intllama.hpp -- one step of the exact integer Llama (issue 20: SmolLM2-135M
// at CPU speed): the native implementation of pyllmcodec/nets/intllama.py,
// whose module docstring is the specification and whose numpy reference
// (ref_step) this file matches bit for bit (tests/test_intllama_native.py).
//
// The rule: integers and tables only, no float anywhere.
//   * integer sums may run in any order (vectorised, blocked, split over
//     threads): the bounds below prove that no partial sum overflows, so the
//     generic, AVX2 and AVX-512 VNNI copies of the kernels give identical
//     integers, and so does any thread count;
//   * every shift, division and rounding is the reference's, with numpy's
//     int64 semantics where they matter (np_shl / np_shr / np_add below: a
//     shift by 64 or more gives 0 (left) or the sign (right), additions wrap);
//   * floor divisions by a per-block value go through an exact 128-bit
//     reciprocal with one correction step (rdiv127), never a float.
// Bounds (checked when a model is built, see Model::build):
//   Q4_1 layers: q in 0..15, |d|, |m| < 2^14, xq in [-127, 127], 32 per
//     block: S = sum q xq < 2^16, A < 2^15: A S < 2^31 (int32), U = A T <
//     2^27; P = sum_b (A S) d + U m < 64 * 2^46 (int64);
//   the head (Q8_0): |S| <= 32 * 127 * 128 < 2^20 (int32, computed as the
//     unsigned (xq + 128) x signed q product minus 128 sum q), A d < 2^29;
//   attention: |q16| <= 32767, |k8| <= 127, head_dim 64: scores < 2^28
//     (int32), times kmax < 2^29 in int64; value weights w < 2^15, |v8| <=
//     127: int32 sums over blocks of 256 positions (< 2^31), int64 across.
//
// The key/value cache (State) is int8, laid out for the kernels (internal):
// per (layer, row, KV head), keys in blocks of 16 positions, per channel pair
// p the 16 positions' (k[2p], k[2p+1]) (1 KiB a block); values per pair of
// positions (2i, 2i+1), per channel c, (v_2i[c], v_2i+1[c]) (128 bytes a
// pair); the per-position scales kmax, vmax as int32.  The buffers come from
// calloc, so the pages a state really touches grow with its position.
//
// The per-row work (block quantization, RMSNorm, rotary, SiLU, residuals)
// goes through RowOps: scalar loops, or AVX-512 integer code on the CPUs
// that take the AVX-512 kernels; the same integers either way.
//
// Threads: every thread runs the whole step; matrix products split their
// output blocks between threads (the weights are read once per step), the
// per-row work (normalisation, rotary, attention, quantization) splits the
// rows; a spin barrier separates the phases.
//
// Plain C++17; knows nothing of Python.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "quantizer.hpp"  // InvalidInput, PYLLMCODEC_DISPATCH

#if PYLLMCODEC_DISPATCH
#include <immintrin.h>
#endif

namespace pyllmcodec {
namespace llama {

static_assert((-1 >> 1) == -1, "arithmetic right shift of negative values is required");

constexpr std::size_t kBlock = 32;
constexpr std::int64_t kUnit = 16;
constexpr std::int64_t kLogitUnit = 6;
constexpr int kABits = 15;
constexpr int kSSBits = 26;
constexpr std::int64_t kResClamp = std::int64_t{1} << 40;
constexpr std::int64_t kQKVClamp = std::int64_t{1} << 27;
constexpr std::int64_t kLogitClamp = std::int64_t{1} << 31;
constexpr int kRopeBits = 14;
constexpr std::int64_t kExpaOne = 1 << 14;
constexpr std::int64_t kExplOne = 1 << 24;
constexpr std::int64_t kMaxExp = 64;
constexpr std::size_t kHd = 64;         // head_dim (the shipped rotary table's)
constexpr std::size_t kKeyBlock = 16;   // positions per key block
constexpr std::size_t kKeyBytes = kKeyBlock * kHd;  // 1 KiB
constexpr std::size_t kValBlock = 256;  // positions per int32 block of the value sums
constexpr std::size_t kMaxExpa = 4096;  // rdiv by 127 through a multiply is exact below 127 * 4096 < 2^19

// ---------------------------------------------------------------------------
// numpy's int64 arithmetic (the reference's), and the exact helpers.
// ---------------------------------------------------------------------------
inline std::int64_t np_shl(std::int64_t a, std::int64_t b) {  // b >= 0
  return b < 64 ? static_cast<std::int64_t>(static_cast<std::uint64_t>(a) << b) : 0;
}
inline std::int64_t np_shr(std::int64_t a, std::int64_t b) {  // b >= 0
  return b < 64 ? (a >> b) : (a < 0 ? -1 : 0);
}
inline std::int64_t np_add(std::int64_t a, std::int64_t b) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
}
// intllama.rsr, elementwise, as numpy evaluates it
inline std::int64_t rsr(std::int64_t p, std::int64_t s) {
  if (s > 0) return np_shr(np_add(p, np_shl(1, s - 1)), s);
  return np_shl(p, -s);
}
inline std::int64_t clamp64(std::int64_t v, std::int64_t lim) { return v < -lim ? -lim : (v > lim ? lim : v); }
inline int bitlen(std::uint64_t v) { return v == 0 ? 0 : 64 - __builtin_clzll(v); }
inline std::uint64_t uabs(std::int64_t v) { return v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v); }
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {  // b > 0
  std::int64_t q = a / b;
  if ((a % b) != 0 && a < 0) --q;
  return q;
}
// floor square root, integers only (Newton from above)
inline std::uint64_t isqrt(std::uint64_t n) {
  if (n < 2) return n;
  std::uint64_t x = std::uint64_t{1} << ((bitlen(n) + 1) / 2);  // >= sqrt(n)
  for (;;) {
    const std::uint64_t y = (x + n / x) >> 1;
    if (y >= x) return x;
    x = y;
  }
}

// rdiv(127 y, Y) = floor((254 y + Y) / 2Y) for |y| <= Y < 2^55, Y > 0, by a
// reciprocal: num = 254 y + 257 Y lies in [3Y, 511Y] (< 2^64), the quotient
// by 2Y is the result + 128.  recip = floor((2^64 - 1) / 2Y): the estimate
// mulhi(num, recip) is the quotient or one less; one correction.
struct Rdiv127 {
  std::uint64_t D2, recip, base;
  explicit Rdiv127(std::uint64_t Y) : D2(2 * Y), recip(~std::uint64_t{0} / (2 * Y)), base(257 * Y) {}
  int operator()(std::int64_t y) const {
    const std::uint64_t num = static_cast<std::uint64_t>(y) * 254u + base;  // mod 2^64: the true value fits
    std::uint64_t q = static_cast<std::uint64_t>((static_cast<unsigned __int128>(num) * recip) >> 64);
    if (num - q * D2 >= D2) ++q;
    return static_cast<int>(q) - 128;
  }
};

// ---------------------------------------------------------------------------
// Block quantization (the module docstring): per row, int64 y[n] with per
// block x = 127 D_b and sh_b -> xq (int8), A (int32), U = A T (int64), eA.
// ---------------------------------------------------------------------------
// y 2^k < x 2^15 (y > 0, x > 0), in 128 bits
inline bool below(std::uint64_t y, int k, std::uint64_t x) {
  using u128 = unsigned __int128;
  if (k >= 0) {
    if (k >= 70) return false;  // y >= 1: y 2^k >= 2^70 > x 2^15 (x < 2^55)
    return (static_cast<u128>(y) << k) < (static_cast<u128>(x) << kABits);
  }
  const int j = kABits - k;  // > 15
  if (j >= 100) return true;
  return static_cast<u128>(y) < (static_cast<u128>(x) << j);
}
// the largest k with floor(y 2^k / x) < 2^15 (y > 0)
inline int top_exponent(std::uint64_t y, std::uint64_t x) {
  const int k1 = kABits + bitlen(x) - bitlen(y);
  return below(y, k1, x) ? k1 : k1 - 1;
}
// floor(y 2^k / x), known to be < 2^15
inline std::int32_t floor_pow(std::uint64_t y, std::int64_t k, std::uint64_t x) {
  if (k >= 0) return static_cast<std::int32_t>((y << k) / x);  // y 2^k < x 2^15 < 2^61
  if (k <= -64) return 0;
  return static_cast<std::int32_t>((y >> -k) / x);
}

struct Act {  // one quantized input per row
  std::size_t n = 0, nb = 0;
  std::vector<std::int8_t> xq;   // [B][n]
  std::vector<std::uint8_t> xu;  // [B][n]: xq + 128 (the head's unsigned operand)
  std::vector<std::int32_t> A;   // [B][nb]
  std::vector<std::int64_t> U;   // [B][nb]: A T
  std::vector<std::int32_t> T;   // [B][nb]: sum of the block's xq
  std::vector<std::int64_t> eA;  // [B]
  void resize(std::size_t B, std::size_t n_, bool unsigned_copy) {
    n = n_;
    nb = n_ / kBlock;
    xq.resize(B * n);
    if (unsigned_copy) xu.resize(B * n);
    A.resize(B * nb);
    U.resize(B * nb);
    T.resize(B * nb);
    eA.resize(B);
  }
};

// ---------------------------------------------------------------------------
// The per-row integer work, one copy per instruction set (row_ops() below
// chooses): every copy computes the same integers, in any order (sums of
// integers below their bounds).
// ---------------------------------------------------------------------------
struct RowOps {
  // ymax[b] = max |y| over block b of 32 (nb blocks)
  void (*absmax)(const std::int64_t* y, std::size_t nb, std::uint64_t* ymax);
  // q[i] = rdiv(127 y[i], Y) (Rdiv127) for i < n (a multiple of 8), |y| <= Y < 2^55, Y > 0; returns sum q
  std::int64_t (*div127)(const std::int64_t* y, std::size_t n, std::uint64_t Y, std::int8_t* q);
  // z = x >> s, y = z g (|z| < 2^26, |g| < 2^20); returns sum z^2 (< d 2^52)
  std::int64_t (*rms)(const std::int64_t* x, const std::int64_t* g, std::size_t d, int s, std::int64_t* y);
  // x = clamp(x + o, +-lim) (|x|, |o| <= 2^40)
  void (*add_clamp)(std::int64_t* x, const std::int64_t* o, std::size_t d, std::int64_t lim);
  // y[i] = silu(gp[i]) gp[f + i] through the table (|gp| <= 2^27)
  void (*silu_mul)(const std::int64_t* gp, std::size_t f, const std::int64_t* silu, std::int64_t* y);
  // the rotary of `heads` heads of 64 (|v| <= 2^27, |cs|, |sn| <= 2^14)
  void (*rotate)(std::int64_t* v, std::size_t heads, const std::int64_t* cs, const std::int64_t* sn);
  // out[c] = clamp(rsr(v[c], s), +-32767) for c < 64, 0 <= s < 64
  void (*q16)(const std::int64_t* v, int s, std::int16_t* out);
};

constexpr int kSiluStep = 8;
constexpr std::int64_t kSiluHalf = std::int64_t{16} << kUnit;
constexpr std::int64_t kSiluLen = 2 * kSiluHalf / (1 << kSiluStep) + 1;  // 8193

namespace scalar {
inline void absmax(const std::int64_t* y, std::size_t nb, std::uint64_t* ymax) {
  for (std::size_t b = 0; b < nb; ++b) {
    std::uint64_t m = 0;
    for (std::size_t i = b * kBlock; i < (b + 1) * kBlock; ++i) m = std::max(m, uabs(y[i]));
    ymax[b] = m;
  }
}
inline std::int64_t div127(const std::int64_t* y, std::size_t n, std::uint64_t Y, std::int8_t* q) {
  const Rdiv127 div(Y);
  std::int64_t T = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const int v = div(y[i]);
    q[i] = static_cast<std::int8_t>(v);
    T += v;
  }
  return T;
}
inline std::int64_t rms(const std::int64_t* x, const std::int64_t* g, std::size_t d, int s, std::int64_t* y) {
  std::int64_t ss = 0;
  for (std::size_t i = 0; i < d; ++i) {
    const std::int64_t z = x[i] >> s;
    ss += z * z;
    y[i] = z * g[i];
  }
  return ss;
}
inline void add_clamp(std::int64_t* x, const std::int64_t* o, std::size_t d, std::int64_t lim) {
  for (std::size_t i = 0; i < d; ++i) x[i] = clamp64(x[i] + o[i], lim);
}
inline void silu_mul(const std::int64_t* gp, std::size_t f, const std::int64_t* silu, std::int64_t* y) {
  for (std::size_t i = 0; i < f; ++i) {
    const std::int64_t g = gp[i];
    std::int64_t sg;
    if (g >= kSiluHalf) {
      sg = g;
    } else if (g < -kSiluHalf) {
      sg = 0;
    } else {
      std::int64_t idx = (g >> kSiluStep) + (kSiluHalf >> kSiluStep);
      idx = std::min<std::int64_t>(std::max<std::int64_t>(idx, 0), kSiluLen - 2);
      const std::int64_t lo = silu[idx];
      sg = lo + rsr((silu[idx + 1] - lo) * (g & ((1 << kSiluStep) - 1)), kSiluStep);
    }
    y[i] = sg * gp[f + i];
  }
}
inline void rotate(std::int64_t* v, std::size_t heads, const std::int64_t* cs, const std::int64_t* sn) {
  for (std::size_t h = 0; h < heads; ++h, v += kHd) {
    for (std::size_t i = 0; i < kHd / 2; ++i) {
      const std::int64_t a = v[i], b = v[i + kHd / 2];
      v[i] = rsr(a * cs[i] - b * sn[i], kRopeBits);
      v[i + kHd / 2] = rsr(b * cs[i] + a * sn[i], kRopeBits);
    }
  }
}
inline void q16(const std::int64_t* v, int s, std::int16_t* out) {
  for (std::size_t c = 0; c < kHd; ++c) out[c] = static_cast<std::int16_t>(clamp64(rsr(v[c], s), 32767));
}
inline constexpr RowOps table{&absmax, &div127, &rms, &add_clamp, &silu_mul, &rotate, &q16};
}  // namespace scalar

// max |y| over nb blocks of 32 (nb <= 64)
inline std::uint64_t max_abs(const RowOps& R, const std::int64_t* y, std::size_t nb) {
  std::uint64_t bm[64];
  R.absmax(y, nb, bm);
  return *std::max_element(bm, bm + nb);
}

// y[n] with per-block x_b = 127 D_b (> 0) and sh_b, into row r of `a`
inline void quant_blocks(const RowOps& R, const std::int64_t* y, const std::uint64_t* x, const std::int64_t* sh, Act& a,
                         std::size_t r) {
  const std::size_t n = a.n, nb = a.nb;
  std::int8_t* xq = a.xq.data() + r * n;
  std::int32_t* A = a.A.data() + r * nb;
  std::int64_t* U = a.U.data() + r * nb;
  std::int32_t* Ts = a.T.data() + r * nb;
  std::uint64_t ymax[64];
  R.absmax(y, nb, ymax);
  std::int64_t eA = 0;
  bool any = false;
  for (std::size_t b = 0; b < nb; ++b) {
    if (ymax[b]) {
      const std::int64_t e = top_exponent(ymax[b], x[b]) - sh[b];
      eA = any ? std::min(eA, e) : e;
      any = true;
    }
  }
  if (any) eA = std::min(eA, kMaxExp);
  a.eA[r] = eA;
  for (std::size_t b = 0; b < nb; ++b) {
    std::int8_t* q = xq + b * kBlock;
    if (ymax[b] == 0) {
      std::memset(q, 0, kBlock);
      A[b] = 0;
      U[b] = 0;
      Ts[b] = 0;
    } else {
      const std::int64_t T = R.div127(y + b * kBlock, kBlock, ymax[b], q);
      A[b] = floor_pow(ymax[b], eA + sh[b], x[b]);
      U[b] = A[b] * T;
      Ts[b] = static_cast<std::int32_t>(T);
    }
  }
}

// ---------------------------------------------------------------------------
// A matrix, repacked: output blocks of 16, per input quad the 16 outputs'
// 4 bytes (the vpdpbusd layout).  Lane L of a 16-output block holds output
// kLane[L] (even lanes outputs 0..7, odd lanes 8..15: vpmuldq reads even
// int32 lanes, a 64-bit shift the odd ones, so neither half needs a shuffle).
// Q4_1: d, m as int32 per (block, input block, lane): d S + m T < 2^31 in
// int32 lanes, then times A in int64.  Q8_0: d as int64 in output order.
// ---------------------------------------------------------------------------
constexpr int kLane[16] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};

struct QMat {
  std::size_t out = 0, in = 0, nb = 0, nob = 0;
  bool signed_q = false;           // Q8_0 (the head): signed q, no m
  std::vector<std::uint8_t> q;     // [nob][in / 4][16 lanes][4]
  std::vector<std::int64_t> d;     // Q8_0: [nob][nb][16 outputs]
  std::vector<std::int32_t> d32, m32;  // Q4_1: [nob][nb][16 lanes]
  std::vector<std::int32_t> qs;    // Q8_0: [nob][nb][16 lanes] 128 * sum of the block's q
  std::vector<std::int64_t> e;     // [nob * 16] (0 past out)
  std::int64_t emin = 0, emax = 0;  // over the outputs
  std::size_t ld() const { return nob * 16; }
};

// ---------------------------------------------------------------------------
// Kernels: one copy per instruction set, all giving identical integers.
// ---------------------------------------------------------------------------
struct Kernels {
  // P[r * W.ld() + o] for rows [r0, r1) and output blocks [ob0, ob1) (Q4_1: x.xq; Q8_0: x.xu)
  void (*products)(const QMat& W, const Act& x, std::size_t r0, std::size_t r1, std::size_t ob0, std::size_t ob1,
                   std::int64_t* P);
  // s[h * sl + j] = sum_c q[h * 64 + c] k8_j[c] for G heads, j < n rounded up to 16
  void (*scores)(const std::int16_t* q, std::size_t G, const std::int8_t* kc, std::size_t n, std::int32_t* s,
                 std::size_t sl);
  // the softmax weights of one head: S'_j = s_j kmax_j, i_j = floor((max S' - S'_j) / (127 2^k)),
  // e_j = expa[min(i_j, na - 1)] (the table ends with 0): *z = sum e_j, g[j] = e_j vmax_j; returns max g
  std::int64_t (*expw)(const std::int32_t* s, const std::int32_t* kmax, const std::int32_t* vmax, std::size_t n, int k,
                       const std::int32_t* expa, std::size_t na, std::int64_t* g, std::int64_t* z);
  // w[j] = g[j] >> vs (int16), zero for n <= j < wl
  void (*wts)(const std::int64_t* g, std::size_t n, int vs, std::int16_t* w, std::size_t wl);
  // a[h * 64 + c] = sum_{j < n} w[h * wl + j] v8_j[c] for G heads (w zero past n)
  void (*values)(const std::int16_t* w, std::size_t G, std::size_t wl, const std::int8_t* vc, std::size_t n,
                 std::int64_t* a);
  // p[o] = lin_out(p[o], base + e[o], C) for o < n (one row's outputs; emin/emax: bounds of e over the matrix)
  void (*finish)(std::int64_t* p, const std::int64_t* e, std::size_t n, std::int64_t base, std::int64_t C,
                 std::int64_t emin, std::int64_t emax);
  // out[v] = expl[min(max L - L[v], ne - 1)]
  void (*expl_row)(const std::int64_t* L, std::size_t V, const std::int32_t* expl, std::size_t ne, std::uint32_t* out);
  const char* name;
};

// the linear layers' output rescale: clamp(rsr(clamp(P, +-lim), s), +-C), lim = 2^clip(62 + min(s, 0), 0, 62)
inline std::int64_t lin_out(std::int64_t P, std::int64_t s, std::int64_t C) {
  const std::int64_t le = std::min<std::int64_t>(62, std::max<std::int64_t>(0, 62 + std::min<std::int64_t>(s, 0)));
  const std::int64_t lim = std::int64_t{1} << le;
  return clamp64(rsr(clamp64(P, lim), s), C);
}

#define PYLLMCODEC_LLAMA_KERNELS(NS, ATTR, NAME)                                                                   \
  namespace NS {                                                                                                 \
  ATTR inline void products(const QMat& W, const Act& x, std::size_t r0, std::size_t r1, std::size_t ob0,        \
                            std::size_t ob1, std::int64_t* P) {                                                  \
    const std::size_t in = W.in, nb = W.nb, quads = in / 4, ld = W.ld();                                         \
    for (std::size_t ob = ob0; ob < ob1; ++ob) {                                                                 \
      const std::uint8_t* qb = W.q.data() + ob * quads * 64;                                                     \
      for (std::size_t r = r0; r < r1; ++r) {                                                                    \
        std::int64_t acc[16] = {};                                                                               \
        for (std::size_t b = 0; b < nb; ++b) {                                                                   \
          std::int32_t S[16] = {};                                                                               \
          const std::uint8_t* qq = qb + b * 8 * 64;                                                              \
          if (W.signed_q) {                                                                                      \
            const std::int8_t* xr = x.xq.data() + r * in + b * kBlock;                                           \
            for (std::size_t i = 0; i < kBlock; ++i)                                                             \
              for (std::size_t l = 0; l < 16; ++l)                                                               \
                S[l] += static_cast<std::int8_t>(qq[(i / 4 * 16 + l) * 4 + i % 4]) * std::int32_t{xr[i]};        \
          } else {                                                                                               \
            const std::int8_t* xr = x.xq.data() + r * in + b * kBlock;                                           \
            for (std::size_t i = 0; i < kBlock; ++i)                                                             \
              for (std::size_t l = 0; l < 16; ++l) S[l] += qq[(i / 4 * 16 + l) * 4 + i % 4] * std::int32_t{xr[i]}; \
          }                                                                                                      \
          const std::int64_t A = x.A[r * nb + b];                                                                \
          if (W.signed_q) {                                                                                      \
            const std::int64_t* d = W.d.data() + (ob * nb + b) * 16;                                             \
            for (std::size_t l = 0; l < 16; ++l) acc[kLane[l]] += A * d[kLane[l]] * S[l];                        \
          } else {                                                                                               \
            const std::int32_t T = x.T[r * nb + b];                                                              \
            const std::int32_t* d = W.d32.data() + (ob * nb + b) * 16;                                           \
            const std::int32_t* m = W.m32.data() + (ob * nb + b) * 16;                                           \
            for (std::size_t l = 0; l < 16; ++l) acc[kLane[l]] += A * std::int64_t{d[l] * S[l] + m[l] * T};      \
          }                                                                                                      \
        }                                                                                                        \
        for (std::size_t o = 0; o < 16; ++o) P[r * ld + ob * 16 + o] = acc[o];                                   \
      }                                                                                                          \
    }                                                                                                            \
  }                                                                                                              \
  ATTR inline void scores(const std::int16_t* q, std::size_t G, const std::int8_t* kc, std::size_t n,            \
                          std::int32_t* s, std::size_t sl) {                                                     \
    for (std::size_t b = 0; b * kKeyBlock < n; ++b) {                                                            \
      const std::int8_t* kb = kc + b * kKeyBytes;                                                                \
      for (std::size_t h = 0; h < G; ++h) {                                                                      \
        std::int32_t acc[kKeyBlock] = {};                                                                        \
        const std::int16_t* qh = q + h * kHd;                                                                    \
        for (std::size_t p = 0; p < kHd / 2; ++p) {                                                              \
          const std::int32_t q0 = qh[2 * p], q1 = qh[2 * p + 1];                                                 \
          const std::int8_t* kp = kb + p * 2 * kKeyBlock;                                                        \
          for (std::size_t l = 0; l < kKeyBlock; ++l) acc[l] += q0 * kp[2 * l] + q1 * kp[2 * l + 1];             \
        }                                                                                                        \
        for (std::size_t l = 0; l < kKeyBlock; ++l) s[h * sl + b * kKeyBlock + l] = acc[l];                      \
      }                                                                                                          \
    }                                                                                                            \
  }                                                                                                              \
  ATTR inline std::int64_t expw(const std::int32_t* s, const std::int32_t* kmax, const std::int32_t* vmax,         \
                                std::size_t n, int k, const std::int32_t* expa, std::size_t na, std::int64_t* g,  \
                                std::int64_t* zout) {                                                            \
    std::int64_t mx = INT64_MIN;                                                                                 \
    for (std::size_t j = 0; j < n; ++j) {                                                                        \
      g[j] = std::int64_t{s[j]} * kmax[j];                                                                       \
      mx = g[j] > mx ? g[j] : mx;                                                                                \
    }                                                                                                            \
    const std::uint64_t cap = 127 * static_cast<std::uint64_t>(na);                                              \
    std::int64_t z = 0, gm = 0;                                                                                  \
    for (std::size_t j = 0; j < n; ++j) {                                                                        \
      std::uint64_t y = static_cast<std::uint64_t>(mx - g[j]) >> k;                                              \
      y = y < cap ? y : cap;                                                                                     \
      std::uint64_t i = (y * 528417u) >> 26; /* floor(y / 127) for y < 2^19 */                                   \
      i = i < na - 1 ? i : na - 1;                                                                               \
      z += expa[i];                                                                                              \
      g[j] = std::int64_t{expa[i]} * vmax[j];                                                                    \
      gm = g[j] > gm ? g[j] : gm;                                                                                \
    }                                                                                                            \
    *zout = z;                                                                                                   \
    return gm;                                                                                                   \
  }                                                                                                              \
  ATTR inline void wts(const std::int64_t* g, std::size_t n, int vs, std::int16_t* w, std::size_t wl) {          \
    for (std::size_t j = 0; j < n; ++j) w[j] = static_cast<std::int16_t>(g[j] >> vs);                            \
    for (std::size_t j = n; j < wl; ++j) w[j] = 0;                                                               \
  }                                                                                                              \
  ATTR inline void values(const std::int16_t* w, std::size_t G, std::size_t wl, const std::int8_t* vc,           \
                          std::size_t n, std::int64_t* a) {                                                      \
    const std::size_t pairs = (n + 1) / 2;                                                                       \
    (void)wl;                                                                                                    \
    for (std::size_t h = 0; h < G; ++h) {                                                                        \
      const std::int16_t* wh = w + h * wl;                                                                       \
      std::int64_t* ah = a + h * kHd;                                                                            \
      for (std::size_t c = 0; c < kHd; ++c) ah[c] = 0;                                                           \
      for (std::size_t i0 = 0; i0 < pairs; i0 += kValBlock / 2) {                                                \
        const std::size_t i1 = std::min(pairs, i0 + kValBlock / 2);                                              \
        std::int32_t blk[kHd] = {};                                                                              \
        for (std::size_t i = i0; i < i1; ++i) {                                                                  \
          const std::int32_t w0 = wh[2 * i], w1 = wh[2 * i + 1];                                                 \
          const std::int8_t* vp = vc + i * 2 * kHd;                                                              \
          for (std::size_t c = 0; c < kHd; ++c) blk[c] += w0 * vp[2 * c] + w1 * vp[2 * c + 1];                   \
        }                                                                                                        \
        for (std::size_t c = 0; c < kHd; ++c) ah[c] += blk[c];                                                   \
      }                                                                                                          \
    }                                                                                                            \
  }                                                                                                              \
  ATTR inline void finish(std::int64_t* p, const std::int64_t* e, std::size_t n, std::int64_t base, std::int64_t C, \
                          std::int64_t, std::int64_t) {                                                          \
    for (std::size_t o = 0; o < n; ++o) p[o] = lin_out(p[o], base + e[o], C);                                    \
  }                                                                                                              \
  ATTR inline void expl_row(const std::int64_t* L, std::size_t V, const std::int32_t* expl, std::size_t ne,      \
                            std::uint32_t* out) {                                                                \
    std::int64_t mx = L[0];                                                                                      \
    for (std::size_t v = 1; v < V; ++v) mx = L[v] > mx ? L[v] : mx;                                              \
    const std::int64_t last = static_cast<std::int64_t>(ne) - 1;                                                 \
    for (std::size_t v = 0; v < V; ++v) {                                                                        \
      const std::int64_t i = mx - L[v];                                                                          \
      out[v] = static_cast<std::uint32_t>(expl[i < last ? i : last]);                                            \
    }                                                                                                            \
  }                                                                                                              \
  inline constexpr Kernels table{&products, &scores, &expw, &wts, &values, &finish, &expl_row, NAME};     \
  }

PYLLMCODEC_LLAMA_KERNELS(generic, , "generic")
#if PYLLMCODEC_DISPATCH
PYLLMCODEC_LLAMA_KERNELS(avx2, __attribute__((target("avx2,fma,bmi,bmi2,popcnt"))), "avx2")
#endif
#undef PYLLMCODEC_LLAMA_KERNELS

#if PYLLMCODEC_DISPATCH
// ---------------------------------------------------------------------------
// AVX-512 VNNI kernels: the same integers as the loops above.
//   products: vpdpbusd (unsigned x signed bytes, 4 per int32 lane, exact: the
//     sums are far below 2^31) in two chains, vpmulld A S (< 2^31), vpmuldq
//     into int64 lanes (even int32 lanes directly, odd ones after a 64-bit
//     shift: see kLane); four rows share each weight load, and the output
//     blocks are the outer loop so a block's weights stay in L1 for all rows.
//   attention: vpdpwssd on int16 pairs (int8 cache widened with vpmovsxbw),
//     never the saturating forms; the softmax weights in int64 lanes.
// ---------------------------------------------------------------------------
#define PYLLMCODEC_LLAMA_HAVE_AVX512 1
// four bytes as one int32, for a broadcast to every lane
inline std::int32_t load4(const void* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

namespace avx512vnni {
#define PYLLMCODEC_V512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,bmi2")))

#ifndef PYLLMCODEC_LLAMA_PREFETCH
#define PYLLMCODEC_LLAMA_PREFETCH 2048
#endif
constexpr std::size_t kPrefetch = PYLLMCODEC_LLAMA_PREFETCH;  // bytes ahead in the cache streams (prefetch never faults)


template <int R>
PYLLMCODEC_V512 inline void q4_tile(const QMat& W, const Act& x, std::size_t r0, std::size_t ob, std::int64_t* P) {
  const std::size_t in = W.in, nb = W.nb, ld = W.ld();
  __m512i lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_si512();
  const std::uint8_t* qb = W.q.data() + ob * (in / 4) * 64;
  const std::int32_t* dp = W.d32.data() + ob * nb * 16;
  const std::int32_t* mp = W.m32.data() + ob * nb * 16;
  for (std::size_t b = 0; b < nb; ++b) {
    __m512i wq[8];
    for (int k = 0; k < 8; ++k) wq[k] = _mm512_loadu_si512(qb + (b * 8 + k) * 64);
    const __m512i dv = _mm512_loadu_si512(dp + b * 16), mv = _mm512_loadu_si512(mp + b * 16);
    for (int r = 0; r < R; ++r) {
      const std::int8_t* xr = x.xq.data() + (r0 + r) * in + b * kBlock;
      __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[0], _mm512_set1_epi32(load4(xr)));
      __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[1], _mm512_set1_epi32(load4(xr + 4)));
      for (int k = 2; k < 8; k += 2) {
        s0 = _mm512_dpbusd_epi32(s0, wq[k], _mm512_set1_epi32(load4(xr + 4 * k)));
        s1 = _mm512_dpbusd_epi32(s1, wq[k + 1], _mm512_set1_epi32(load4(xr + 4 * k + 4)));
      }
      // d S + m T (< 2^31), then times A in int64 lanes
      const __m512i dm = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_add_epi32(s0, s1), dv),
                                          _mm512_mullo_epi32(_mm512_set1_epi32(x.T[(r0 + r) * nb + b]), mv));
      const __m512i a = _mm512_set1_epi64(x.A[(r0 + r) * nb + b]);
      lo[r] = _mm512_add_epi64(lo[r], _mm512_mul_epi32(dm, a));
      hi[r] = _mm512_add_epi64(hi[r], _mm512_mul_epi32(_mm512_srli_epi64(dm, 32), a));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_si512(P + (r0 + r) * ld + ob * 16, lo[r]);
    _mm512_storeu_si512(P + (r0 + r) * ld + ob * 16 + 8, hi[r]);
  }
}

// the head: xq + 128 (unsigned) x signed q, minus 128 sum q; A d (< 2^29) in int64 lanes, times S
template <int R>
PYLLMCODEC_V512 inline void q8_tile(const QMat& W, const Act& x, std::size_t r0, std::size_t ob, std::int64_t* P) {
  const std::size_t in = W.in, nb = W.nb, ld = W.ld();
  __m512i lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_si512();
  const std::uint8_t* qb = W.q.data() + ob * (in / 4) * 64;
  const std::int64_t* dp = W.d.data() + ob * nb * 16;
  const std::int32_t* qsp = W.qs.data() + ob * nb * 16;
  for (std::size_t b = 0; b < nb; ++b) {
    __m512i wq[8];
    for (int k = 0; k < 8; ++k) wq[k] = _mm512_loadu_si512(qb + (b * 8 + k) * 64);
    const __m512i dlo = _mm512_loadu_si512(dp + b * 16), dhi = _mm512_loadu_si512(dp + b * 16 + 8);
    const __m512i qs = _mm512_loadu_si512(qsp + b * 16);
    for (int r = 0; r < R; ++r) {
      const std::uint8_t* xr = x.xu.data() + (r0 + r) * in + b * kBlock;
      __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(load4(xr)), wq[0]);
      __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(load4(xr + 4)), wq[1]);
      for (int k = 2; k < 8; k += 2) {
        s0 = _mm512_dpbusd_epi32(s0, _mm512_set1_epi32(load4(xr + 4 * k)), wq[k]);
        s1 = _mm512_dpbusd_epi32(s1, _mm512_set1_epi32(load4(xr + 4 * k + 4)), wq[k + 1]);
      }
      const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), qs);
      const __m512i a = _mm512_set1_epi64(x.A[(r0 + r) * nb + b]);
      lo[r] = _mm512_add_epi64(lo[r], _mm512_mul_epi32(s, _mm512_mul_epi32(a, dlo)));
      hi[r] = _mm512_add_epi64(hi[r], _mm512_mul_epi32(_mm512_srli_epi64(s, 32), _mm512_mul_epi32(a, dhi)));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_si512(P + (r0 + r) * ld + ob * 16, lo[r]);
    _mm512_storeu_si512(P + (r0 + r) * ld + ob * 16 + 8, hi[r]);
  }
}

#define PYLLMCODEC_ROWS(TILE)                                                                                  \
  PYLLMCODEC_V512 inline void TILE##_rows(const QMat& W, const Act& x, std::size_t r0, std::size_t r1,        \
                                          std::size_t ob0, std::size_t ob1, std::int64_t* P) {                \
    for (std::size_t ob = ob0; ob < ob1; ++ob) {                                                              \
      std::size_t r = r0;                                                                                     \
      for (; r + 4 <= r1; r += 4) TILE<4>(W, x, r, ob, P);                                                    \
      switch (r1 - r) {                                                                                       \
        case 3: TILE<3>(W, x, r, ob, P); break;                                                               \
        case 2: TILE<2>(W, x, r, ob, P); break;                                                               \
        case 1: TILE<1>(W, x, r, ob, P); break;                                                               \
        default: break;                                                                                       \
      }                                                                                                       \
    }                                                                                                         \
  }
PYLLMCODEC_ROWS(q4_tile)
PYLLMCODEC_ROWS(q8_tile)
#undef PYLLMCODEC_ROWS

PYLLMCODEC_V512 void products(const QMat& W, const Act& x, std::size_t r0, std::size_t r1, std::size_t ob0,
                              std::size_t ob1, std::int64_t* P) {
  if (W.signed_q) {
    q8_tile_rows(W, x, r0, r1, ob0, ob1, P);
  } else {
    q4_tile_rows(W, x, r0, r1, ob0, ob1, P);
  }
}

// G heads (<= 4) per key load, two chains each
template <int G>
PYLLMCODEC_V512 void scores_g(const std::int16_t* q, const std::int8_t* kc, std::size_t n, std::int32_t* s,
                              std::size_t sl) {
  for (std::size_t b = 0; b * kKeyBlock < n; ++b) {
    const std::int8_t* kb = kc + b * kKeyBytes;
    __m512i a0[G], a1[G];
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = _mm512_setzero_si512();
    for (std::size_t p = 0; p < kHd / 2; p += 2) {
      const __m512i k0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kb + p * 32)));
      const __m512i k1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kb + p * 32 + 32)));
      _mm_prefetch(reinterpret_cast<const char*>(kb + p * 32 + kPrefetch), _MM_HINT_T0);
      for (int g = 0; g < G; ++g) {
        a0[g] = _mm512_dpwssd_epi32(a0[g], _mm512_set1_epi32(load4(q + g * kHd + 2 * p)), k0);
        a1[g] = _mm512_dpwssd_epi32(a1[g], _mm512_set1_epi32(load4(q + g * kHd + 2 * p + 2)), k1);
      }
    }
    for (int g = 0; g < G; ++g) _mm512_storeu_si512(s + g * sl + b * kKeyBlock, _mm512_add_epi32(a0[g], a1[g]));
  }
}

PYLLMCODEC_V512 void scores(const std::int16_t* q, std::size_t G, const std::int8_t* kc, std::size_t n,
                            std::int32_t* s, std::size_t sl) {
  for (std::size_t g = 0; g < G; g += 4) {
    switch (std::min<std::size_t>(4, G - g)) {
      case 1: scores_g<1>(q + g * kHd, kc, n, s + g * sl, sl); break;
      case 2: scores_g<2>(q + g * kHd, kc, n, s + g * sl, sl); break;
      case 3: scores_g<3>(q + g * kHd, kc, n, s + g * sl, sl); break;
      default: scores_g<4>(q + g * kHd, kc, n, s + g * sl, sl); break;
    }
  }
}

inline __mmask8 tail8(std::size_t left) { return left >= 8 ? __mmask8(0xFF) : __mmask8((1u << left) - 1); }

PYLLMCODEC_V512 std::int64_t expw(const std::int32_t* s, const std::int32_t* kmax, const std::int32_t* vmax,
                                  std::size_t n, int k, const std::int32_t* expa, std::size_t na, std::int64_t* g,
                                  std::int64_t* zout) {
  __m512i vmx = _mm512_set1_epi64(INT64_MIN);
  for (std::size_t j = 0; j < n; j += 8) {
    const __mmask8 m = tail8(n - j);
    const __m512i sv = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, s + j));
    const __m512i kv = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, kmax + j));
    const __m512i p = _mm512_mul_epi32(sv, kv);
    _mm512_mask_storeu_epi64(g + j, m, p);
    vmx = _mm512_mask_max_epi64(vmx, m, vmx, p);
  }
  const __m512i mx = _mm512_set1_epi64(_mm512_reduce_max_epi64(vmx));
  const __m512i cap = _mm512_set1_epi64(static_cast<std::int64_t>(127 * na));
  const __m512i last = _mm512_set1_epi64(static_cast<std::int64_t>(na - 1));
  const __m512i magic = _mm512_set1_epi64(528417);
  const __m128i sh = _mm_cvtsi32_si128(k);
  __m512i z = _mm512_setzero_si512(), gm = _mm512_setzero_si512();
  for (std::size_t j = 0; j < n; j += 8) {
    const __mmask8 m = tail8(n - j);
    const __m512i y = _mm512_min_epu64(_mm512_srl_epi64(_mm512_sub_epi64(mx, _mm512_maskz_loadu_epi64(m, g + j)), sh), cap);
    const __m512i idx = _mm512_min_epu64(_mm512_srli_epi64(_mm512_mul_epu32(y, magic), 26), last);
    const __m512i e = _mm512_cvtepu32_epi64(_mm512_mask_i64gather_epi32(_mm256_setzero_si256(), m, idx, expa, 4));
    const __m512i gv = _mm512_mul_epu32(e, _mm512_cvtepu32_epi64(_mm256_maskz_loadu_epi32(m, vmax + j)));
    _mm512_mask_storeu_epi64(g + j, m, gv);
    z = _mm512_add_epi64(z, e);
    gm = _mm512_max_epi64(gm, gv);
  }
  *zout = _mm512_reduce_add_epi64(z);
  return _mm512_reduce_max_epi64(gm);
}

PYLLMCODEC_V512 void wts(const std::int64_t* g, std::size_t n, int vs, std::int16_t* w, std::size_t wl) {
  const __m128i sh = _mm_cvtsi32_si128(vs);
  for (std::size_t j = 0; j < n; j += 8) {
    const __mmask8 m = tail8(n - j);
    _mm_mask_storeu_epi16(w + j, m, _mm512_cvtepi64_epi16(_mm512_srl_epi64(_mm512_maskz_loadu_epi64(m, g + j), sh)));
  }
  for (std::size_t j = n; j < wl; ++j) w[j] = 0;
}

template <int G>
PYLLMCODEC_V512 void values_g(const std::int16_t* w, std::size_t wl, const std::int8_t* vc, std::size_t n,
                              std::int64_t* a) {
  const std::size_t pairs = (n + 1) / 2;
  for (int g = 0; g < G; ++g)
    for (std::size_t c = 0; c < kHd; ++c) a[g * kHd + c] = 0;
  for (std::size_t i0 = 0; i0 < pairs; i0 += kValBlock / 2) {
    const std::size_t i1 = std::min(pairs, i0 + kValBlock / 2);
    __m512i acc[G][4];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < 4; ++c) acc[g][c] = _mm512_setzero_si512();
    for (std::size_t i = i0; i < i1; ++i) {
      const std::int8_t* vp = vc + i * 2 * kHd;
      __m512i v[4];
      _mm_prefetch(reinterpret_cast<const char*>(vp + kPrefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(vp + kPrefetch + 64), _MM_HINT_T0);
      for (int c = 0; c < 4; ++c) v[c] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vp + c * 32)));
      for (int g = 0; g < G; ++g) {
        const __m512i eb = _mm512_set1_epi32(load4(w + g * wl + 2 * i));
        for (int c = 0; c < 4; ++c) acc[g][c] = _mm512_dpwssd_epi32(acc[g][c], eb, v[c]);
      }
    }
    for (int g = 0; g < G; ++g) {
      for (int c = 0; c < 4; ++c) {
        std::int64_t* ag = a + g * kHd + c * 16;
        _mm512_storeu_si512(ag, _mm512_add_epi64(_mm512_loadu_si512(ag), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[g][c]))));
        _mm512_storeu_si512(ag + 8, _mm512_add_epi64(_mm512_loadu_si512(ag + 8),
                                                     _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[g][c], 1))));
      }
    }
  }
}

PYLLMCODEC_V512 void values(const std::int16_t* w, std::size_t G, std::size_t wl, const std::int8_t* vc, std::size_t n,
                            std::int64_t* a) {
  for (std::size_t g = 0; g < G; g += 4) {
    switch (std::min<std::size_t>(4, G - g)) {
      case 1: values_g<1>(w + g * wl, wl, vc, n, a + g * kHd); break;
      case 2: values_g<2>(w + g * wl, wl, vc, n, a + g * kHd); break;
      case 3: values_g<3>(w + g * wl, wl, vc, n, a + g * kHd); break;
      default: values_g<4>(w + g * wl, wl, vc, n, a + g * kHd); break;
    }
  }
}

PYLLMCODEC_V512 void finish(std::int64_t* p, const std::int64_t* e, std::size_t n, std::int64_t base, std::int64_t C,
                            std::int64_t emin, std::int64_t emax) {
  if (base + emin < 1 || base + emax > 63) {  // shifts left or past 63: numpy's corners, one by one
    for (std::size_t o = 0; o < n; ++o) p[o] = lin_out(p[o], base + e[o], C);
    return;
  }
  // 1 <= s <= 63 and |P| < 2^52: clamp(P, 2^62) is P, and rsr is (P + 2^(s-1)) >> s
  const __m512i bv = _mm512_set1_epi64(base - 1), one = _mm512_set1_epi64(1), hi = _mm512_set1_epi64(C),
                lo = _mm512_set1_epi64(-C);
  for (std::size_t o = 0; o < n; o += 8) {
    const __mmask8 m = tail8(n - o);
    const __m512i s1 = _mm512_add_epi64(bv, _mm512_maskz_loadu_epi64(m, e + o));  // s - 1
    const __m512i v = _mm512_add_epi64(_mm512_maskz_loadu_epi64(m, p + o), _mm512_sllv_epi64(one, s1));
    const __m512i r = _mm512_srav_epi64(_mm512_srav_epi64(v, s1), one);
    _mm512_mask_storeu_epi64(p + o, m, _mm512_min_epi64(_mm512_max_epi64(r, lo), hi));
  }
}

PYLLMCODEC_V512 void expl_row(const std::int64_t* L, std::size_t V, const std::int32_t* expl, std::size_t ne,
                              std::uint32_t* out) {
  __m512i vmx = _mm512_set1_epi64(INT64_MIN);
  for (std::size_t v = 0; v < V; v += 8) vmx = _mm512_mask_max_epi64(vmx, tail8(V - v), vmx, _mm512_maskz_loadu_epi64(tail8(V - v), L + v));
  const __m512i mx = _mm512_set1_epi64(_mm512_reduce_max_epi64(vmx));
  const __m512i last = _mm512_set1_epi64(static_cast<std::int64_t>(ne) - 1);
  for (std::size_t v = 0; v < V; v += 8) {
    const __mmask8 m = tail8(V - v);
    const __m512i idx = _mm512_min_epi64(_mm512_sub_epi64(mx, _mm512_maskz_loadu_epi64(m, L + v)), last);
    const __m256i r = _mm512_mask_i64gather_epi32(_mm256_setzero_si256(), m, idx, expl, 4);
    _mm256_mask_storeu_epi32(out + v, m, r);
  }
}

inline constexpr Kernels table{&products, &scores, &expw, &wts, &values, &finish, &expl_row, "avx512-vnni"};

// ---- the per-row work (RowOps) ----
PYLLMCODEC_V512 void absmax(const std::int64_t* y, std::size_t nb, std::uint64_t* ymax) {
  for (std::size_t b = 0; b < nb; ++b) {
    const std::int64_t* p = y + b * kBlock;
    const __m512i m = _mm512_max_epu64(
        _mm512_max_epu64(_mm512_abs_epi64(_mm512_loadu_si512(p)), _mm512_abs_epi64(_mm512_loadu_si512(p + 8))),
        _mm512_max_epu64(_mm512_abs_epi64(_mm512_loadu_si512(p + 16)), _mm512_abs_epi64(_mm512_loadu_si512(p + 24))));
    ymax[b] = _mm512_reduce_max_epu64(m);
  }
}

// Rdiv127 by an 8-step binary search on the quotient floor((254 y + 257 Y) / 2Y) in [1, 255]:
// every candidate product is below 510 Y < 2^64, compared unsigned.
PYLLMCODEC_V512 std::int64_t div127(const std::int64_t* y, std::size_t n, std::uint64_t Y, std::int8_t* q) {
  __m512i step[8];
  for (int k = 0; k < 8; ++k) step[k] = _mm512_set1_epi64(static_cast<std::int64_t>((2 * Y) << k));
  const __m512i base = _mm512_set1_epi64(static_cast<std::int64_t>(257 * Y));
  __m512i tsum = _mm512_setzero_si512();
  for (std::size_t i = 0; i < n; i += 8) {
    const __m512i v = _mm512_loadu_si512(y + i);
    const __m512i num = _mm512_add_epi64(_mm512_sub_epi64(_mm512_slli_epi64(v, 8), _mm512_slli_epi64(v, 1)), base);
    __m512i acc = _mm512_setzero_si512(), qv = _mm512_set1_epi64(-128);
    for (int k = 7; k >= 0; --k) {
      const __m512i t = _mm512_add_epi64(acc, step[k]);
      const __mmask8 m = _mm512_cmple_epu64_mask(t, num);
      acc = _mm512_mask_mov_epi64(acc, m, t);
      qv = _mm512_mask_add_epi64(qv, m, qv, _mm512_set1_epi64(std::int64_t{1} << k));
    }
    tsum = _mm512_add_epi64(tsum, qv);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi64_epi8(qv));
  }
  return _mm512_reduce_add_epi64(tsum);
}

PYLLMCODEC_V512 std::int64_t rms(const std::int64_t* x, const std::int64_t* g, std::size_t d, int s, std::int64_t* y) {
  const __m128i sh = _mm_cvtsi32_si128(s);
  __m512i ss = _mm512_setzero_si512();
  for (std::size_t i = 0; i < d; i += 8) {
    const __m512i z = _mm512_sra_epi64(_mm512_loadu_si512(x + i), sh);
    ss = _mm512_add_epi64(ss, _mm512_mullo_epi64(z, z));
    _mm512_storeu_si512(y + i, _mm512_mullo_epi64(z, _mm512_loadu_si512(g + i)));
  }
  return _mm512_reduce_add_epi64(ss);
}

PYLLMCODEC_V512 void add_clamp(std::int64_t* x, const std::int64_t* o, std::size_t d, std::int64_t lim) {
  const __m512i hi = _mm512_set1_epi64(lim), lo = _mm512_set1_epi64(-lim);
  for (std::size_t i = 0; i < d; i += 8) {
    const __m512i v = _mm512_add_epi64(_mm512_loadu_si512(x + i), _mm512_loadu_si512(o + i));
    _mm512_storeu_si512(x + i, _mm512_min_epi64(_mm512_max_epi64(v, lo), hi));
  }
}

PYLLMCODEC_V512 void silu_mul(const std::int64_t* gp, std::size_t f, const std::int64_t* silu, std::int64_t* y) {
  const __m512i half = _mm512_set1_epi64(kSiluHalf), nhalf = _mm512_set1_epi64(-kSiluHalf),
                off = _mm512_set1_epi64(kSiluHalf >> kSiluStep), zero = _mm512_setzero_si512(),
                top = _mm512_set1_epi64(kSiluLen - 2), frac = _mm512_set1_epi64((1 << kSiluStep) - 1),
                rnd = _mm512_set1_epi64(1 << (kSiluStep - 1));
  for (std::size_t i = 0; i < f; i += 8) {
    const __m512i g = _mm512_loadu_si512(gp + i);
    const __m512i idx = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(_mm512_srai_epi64(g, kSiluStep), off), zero), top);
    const __m512i lo = _mm512_i64gather_epi64(idx, silu, 8);
    const __m512i hi = _mm512_i64gather_epi64(idx, silu + 1, 8);
    const __m512i t = _mm512_mullo_epi64(_mm512_sub_epi64(hi, lo), _mm512_and_si512(g, frac));
    __m512i sg = _mm512_add_epi64(lo, _mm512_srai_epi64(_mm512_add_epi64(t, rnd), kSiluStep));
    sg = _mm512_mask_mov_epi64(sg, _mm512_cmpge_epi64_mask(g, half), g);
    sg = _mm512_mask_mov_epi64(sg, _mm512_cmplt_epi64_mask(g, nhalf), zero);
    _mm512_storeu_si512(y + i, _mm512_mullo_epi64(sg, _mm512_loadu_si512(gp + f + i)));
  }
}

PYLLMCODEC_V512 void rotate(std::int64_t* v, std::size_t heads, const std::int64_t* cs, const std::int64_t* sn) {
  const __m512i rnd = _mm512_set1_epi64(1 << (kRopeBits - 1));
  for (std::size_t h = 0; h < heads; ++h, v += kHd) {
    for (std::size_t i = 0; i < kHd / 2; i += 8) {
      const __m512i a = _mm512_loadu_si512(v + i), b = _mm512_loadu_si512(v + kHd / 2 + i);
      const __m512i c = _mm512_loadu_si512(cs + i), s = _mm512_loadu_si512(sn + i);
      const __m512i r0 = _mm512_sub_epi64(_mm512_mullo_epi64(a, c), _mm512_mullo_epi64(b, s));
      const __m512i r1 = _mm512_add_epi64(_mm512_mullo_epi64(b, c), _mm512_mullo_epi64(a, s));
      _mm512_storeu_si512(v + i, _mm512_srai_epi64(_mm512_add_epi64(r0, rnd), kRopeBits));
      _mm512_storeu_si512(v + kHd / 2 + i, _mm512_srai_epi64(_mm512_add_epi64(r1, rnd), kRopeBits));
    }
  }
}

PYLLMCODEC_V512 void q16(const std::int64_t* v, int s, std::int16_t* out) {
  const __m512i hi = _mm512_set1_epi64(32767), lo = _mm512_set1_epi64(-32767);
  const __m512i rnd = _mm512_set1_epi64(s > 0 ? std::int64_t{1} << (s - 1) : 0);
  const __m128i sh = _mm_cvtsi32_si128(s);
  for (std::size_t c = 0; c < kHd; c += 8) {
    // s < 64 and |v| < 2^62: rsr is (v + 2^(s-1)) >> s without wrapping
    const __m512i r = _mm512_sra_epi64(_mm512_add_epi64(_mm512_loadu_si512(v + c), rnd), sh);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm512_cvtepi64_epi16(_mm512_min_epi64(_mm512_max_epi64(r, lo), hi)));
  }
}

inline constexpr RowOps rows{&absmax, &div127, &rms, &add_clamp, &silu_mul, &rotate, &q16};
#undef PYLLMCODEC_V512
}  // namespace avx512vnni
#endif

#if PYLLMCODEC_DISPATCH
// ---------------------------------------------------------------------------
// AVX2 kernels (no VNNI): the same integers as the loops above.
//   Q4_1 products: vpmaddubsw (unsigned q x signed xq, pairs into int16:
//     |2 * 15 * 127| = 3810) summed over a block's 8 quads in int16
//     (8 * 3810 = 30480 < 2^15: never saturates, never wraps); then d S + m T
//     as two vpmaddwd (the int16 halves of S by (d, d), (m, 0) by T: all fit
//     int16) and the product by A in int64 lanes (vpmuldq on even and odd
//     lanes); tiles of 4 rows x 16 outputs.  A 256-bit register holds half of
//     an output block's lanes (kLane: outputs 0..3 / 8..11, then 4..7 / 12..15).
//   Q8_0 (the head): q signed, so |q| (vpabsb: -128 reads as unsigned 128) x
//     xq sign-adjusted by q (vpsignb; |xq| <= 127, so -xq fits): pairs
//     |2 * 128 * 127| = 32512 < 2^15, into int32 at once.  S = sum q xq, the
//     same integer as the reference's (xq + 128) q - 128 sum q.
//   attention: vpmaddwd on int16 pairs (the int8 cache widened with
//     vpmovsxbw; |q16| <= 32767, |k8|, |v8| <= 127: no pair reaches 2^31).
// ---------------------------------------------------------------------------
namespace avx2k {
#define PYLLMCODEC_V256 __attribute__((target("avx2,fma,bmi,bmi2,popcnt")))


// even int32 lanes times a (int64 lanes), odd int32 lanes times a
PYLLMCODEC_V256 inline void widen_mul(__m256i s, __m256i a_even, __m256i a_odd, __m256i& lo, __m256i& hi) {
  lo = _mm256_add_epi64(lo, _mm256_mul_epi32(s, a_even));
  hi = _mm256_add_epi64(hi, _mm256_mul_epi32(_mm256_srli_epi64(s, 32), a_odd));
}

// R rows x one output block: per quad, each row's activations (one broadcast) meet both halves of the weights
template <int R>
PYLLMCODEC_V256 inline void q4_tile(const QMat& W, const Act& x, std::size_t r0, std::size_t ob, std::int64_t* P) {
  const std::size_t in = W.in, nb = W.nb, ld = W.ld();
  __m256i lo[R][2], hi[R][2];
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) lo[r][h] = hi[r][h] = _mm256_setzero_si256();
  const std::uint8_t* qb = W.q.data() + ob * (in / 4) * 64;
  const std::int32_t* dp = W.d32.data() + ob * nb * 16;
  const std::int32_t* mp = W.m32.data() + ob * nb * 16;
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::uint8_t* qq = qb + b * 8 * 64;
    __m256i s16[R][2];
    for (int r = 0; r < R; ++r) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qq + k * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qq + k * 64 + 32));
      for (int r = 0; r < R; ++r) {
        const __m256i xb = _mm256_set1_epi32(load4(x.xq.data() + (r0 + r) * in + b * kBlock + 4 * k));
        s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_maddubs_epi16(w0, xb));
        s16[r][1] = _mm256_add_epi16(s16[r][1], _mm256_maddubs_epi16(w1, xb));
      }
    }
    // d and m fit int16 (|d|, |m| < 2^14), so does each half of S (the int16 sums above) and T (|T| <= 32 * 127):
    // d S = vpmaddwd(s16, (d, d)) and m T = vpmaddwd((m, 0), T), both below 2^30
    for (int h = 0; h < 2; ++h) {
      const __m256i dv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dp + b * 16 + 8 * h));
      const __m256i mv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mp + b * 16 + 8 * h));
      const __m256i dd = _mm256_or_si256(_mm256_and_si256(dv, low16), _mm256_slli_epi32(dv, 16));
      const __m256i m0 = _mm256_and_si256(mv, low16);
      for (int r = 0; r < R; ++r) {
        // d S + m T (< 2^31), then times A in int64 lanes
        const __m256i dm = _mm256_add_epi32(_mm256_madd_epi16(s16[r][h], dd),
                                            _mm256_madd_epi16(m0, _mm256_set1_epi32(x.T[(r0 + r) * nb + b])));
        const __m256i a = _mm256_set1_epi64x(x.A[(r0 + r) * nb + b]);
        widen_mul(dm, a, a, lo[r][h], hi[r][h]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int h = 0; h < 2; ++h) {
      std::int64_t* p = P + (r0 + r) * ld + ob * 16 + h * 4;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), lo[r][h]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 8), hi[r][h]);
    }
  }
}

// the head: S = sum |q| (xq sign q) per quad pair, A d (< 2^29) in int64 lanes, times S
template <int R>
PYLLMCODEC_V256 inline void q8_tile(const QMat& W, const Act& x, std::size_t r0, std::size_t ob, int half,
                                    std::int64_t* P) {
  const std::size_t in = W.in, nb = W.nb, ld = W.ld();
  __m256i lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  const std::uint8_t* qb = W.q.data() + ob * (in / 4) * 64 + half * 32;
  const std::int64_t* dp = W.d.data() + ob * nb * 16 + half * 4;
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::uint8_t* qq = qb + b * 8 * 64;
    __m256i s32[R];
    for (int r = 0; r < R; ++r) s32[r] = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qq + k * 64));
      const __m256i aw = _mm256_abs_epi8(w);
      for (int r = 0; r < R; ++r) {
        const std::int8_t* xr = x.xq.data() + (r0 + r) * in + b * kBlock;
        const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load4(xr + 4 * k)), w);
        s32[r] = _mm256_add_epi32(s32[r], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
      }
    }
    // even lanes: outputs half * 4 + 0..3, odd lanes: 8 + half * 4 + 0..3
    const __m256i de = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dp + b * 16));
    const __m256i dd = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dp + b * 16 + 8));
    for (int r = 0; r < R; ++r) {
      const __m256i a = _mm256_set1_epi64x(x.A[(r0 + r) * nb + b]);
      widen_mul(s32[r], _mm256_mul_epi32(a, de), _mm256_mul_epi32(a, dd), lo[r], hi[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    std::int64_t* p = P + (r0 + r) * ld + ob * 16 + half * 4;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), lo[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 8), hi[r]);
  }
}

PYLLMCODEC_V256 inline void q4_tile_rows(const QMat& W, const Act& x, std::size_t r0, std::size_t r1, std::size_t ob0,
                                         std::size_t ob1, std::int64_t* P) {
  for (std::size_t ob = ob0; ob < ob1; ++ob) {
    std::size_t r = r0;
    for (; r + 4 <= r1; r += 4) q4_tile<4>(W, x, r, ob, P);
    switch (r1 - r) {
      case 3: q4_tile<3>(W, x, r, ob, P); break;
      case 2: q4_tile<2>(W, x, r, ob, P); break;
      case 1: q4_tile<1>(W, x, r, ob, P); break;
      default: break;
    }
  }
}

PYLLMCODEC_V256 inline void q8_tile_rows(const QMat& W, const Act& x, std::size_t r0, std::size_t r1, std::size_t ob0,
                                         std::size_t ob1, std::int64_t* P) {
  for (std::size_t ob = ob0; ob < ob1; ++ob) {
    for (int half = 0; half < 2; ++half) {
      std::size_t r = r0;
      for (; r + 2 <= r1; r += 2) q8_tile<2>(W, x, r, ob, half, P);
      if (r < r1) q8_tile<1>(W, x, r, ob, half, P);
    }
  }
}

PYLLMCODEC_V256 void products(const QMat& W, const Act& x, std::size_t r0, std::size_t r1, std::size_t ob0,
                              std::size_t ob1, std::int64_t* P) {
  if (W.signed_q) {
    q8_tile_rows(W, x, r0, r1, ob0, ob1, P);
  } else {
    q4_tile_rows(W, x, r0, r1, ob0, ob1, P);
  }
}

// G heads (<= 4) per key load: per channel pair, positions 0..7 and 8..15 of the block
template <int G>
PYLLMCODEC_V256 void scores_g(const std::int16_t* q, const std::int8_t* kc, std::size_t n, std::int32_t* s,
                              std::size_t sl) {
  for (std::size_t b = 0; b * kKeyBlock < n; ++b) {
    const std::int8_t* kb = kc + b * kKeyBytes;
    __m256i a0[G], a1[G];
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = _mm256_setzero_si256();
    for (std::size_t p = 0; p < kHd / 2; ++p) {
      const __m256i k0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kb + p * 32)));
      const __m256i k1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kb + p * 32 + 16)));
      for (int g = 0; g < G; ++g) {
        const __m256i qq = _mm256_set1_epi32(load4(q + g * kHd + 2 * p));
        a0[g] = _mm256_add_epi32(a0[g], _mm256_madd_epi16(qq, k0));
        a1[g] = _mm256_add_epi32(a1[g], _mm256_madd_epi16(qq, k1));
      }
    }
    for (int g = 0; g < G; ++g) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(s + g * sl + b * kKeyBlock), a0[g]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(s + g * sl + b * kKeyBlock + 8), a1[g]);
    }
  }
}

PYLLMCODEC_V256 void scores(const std::int16_t* q, std::size_t G, const std::int8_t* kc, std::size_t n,
                            std::int32_t* s, std::size_t sl) {
  for (std::size_t g = 0; g < G; g += 4) {
    switch (std::min<std::size_t>(4, G - g)) {
      case 1: scores_g<1>(q + g * kHd, kc, n, s + g * sl, sl); break;
      case 2: scores_g<2>(q + g * kHd, kc, n, s + g * sl, sl); break;
      case 3: scores_g<3>(q + g * kHd, kc, n, s + g * sl, sl); break;
      default: scores_g<4>(q + g * kHd, kc, n, s + g * sl, sl); break;
    }
  }
}

// G heads (<= 3) over one half (32 channels, one cache line a pair) of the values
template <int G>
PYLLMCODEC_V256 void values_half(const std::int16_t* w, std::size_t wl, const std::int8_t* vc, std::size_t i0,
                                 std::size_t i1, int half, std::int64_t* a) {
  __m256i acc[G][4];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < 4; ++c) acc[g][c] = _mm256_setzero_si256();
  for (std::size_t i = i0; i < i1; ++i) {
    const std::int8_t* vp = vc + i * 2 * kHd + half * 64;
    __m256i e[G];
    for (int g = 0; g < G; ++g) e[g] = _mm256_set1_epi32(load4(w + g * wl + 2 * i));
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vp + c * 16)));
      for (int g = 0; g < G; ++g) acc[g][c] = _mm256_add_epi32(acc[g][c], _mm256_madd_epi16(e[g], v));
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) {
      std::int64_t* ag = a + g * kHd + half * 32 + c * 8;
      const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc[g][c]));
      const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc[g][c], 1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ag),
                          _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ag)), lo));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ag + 4),
                          _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ag + 4)), hi));
    }
  }
}

PYLLMCODEC_V256 void values(const std::int16_t* w, std::size_t G, std::size_t wl, const std::int8_t* vc, std::size_t n,
                            std::int64_t* a) {
  const std::size_t pairs = (n + 1) / 2;
  for (std::size_t c = 0; c < G * kHd; ++c) a[c] = 0;
  for (std::size_t i0 = 0; i0 < pairs; i0 += kValBlock / 2) {
    const std::size_t i1 = std::min(pairs, i0 + kValBlock / 2);
    for (int half = 0; half < 2; ++half) {
      for (std::size_t g = 0; g < G; g += 3) {
        switch (std::min<std::size_t>(3, G - g)) {
          case 1: values_half<1>(w + g * wl, wl, vc, i0, i1, half, a + g * kHd); break;
          case 2: values_half<2>(w + g * wl, wl, vc, i0, i1, half, a + g * kHd); break;
          default: values_half<3>(w + g * wl, wl, vc, i0, i1, half, a + g * kHd); break;
        }
      }
    }
  }
}

PYLLMCODEC_V256 inline __m256i max64(__m256i a, __m256i b) { return _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(a, b)); }
PYLLMCODEC_V256 inline __m256i min64(__m256i a, __m256i b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b)); }
PYLLMCODEC_V256 inline std::int64_t hsum64(__m256i v) {
  alignas(32) std::int64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
  return t[0] + t[1] + t[2] + t[3];
}
PYLLMCODEC_V256 inline std::int64_t hmax64(__m256i v) {
  alignas(32) std::int64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
  return std::max(std::max(t[0], t[1]), std::max(t[2], t[3]));
}

// the generic loop's integers: here mx - g[j] >= 0 and < 2^63 (|s kmax| < 2^57), so signed compares serve
PYLLMCODEC_V256 std::int64_t expw(const std::int32_t* s, const std::int32_t* kmax, const std::int32_t* vmax,
                                  std::size_t n, int k, const std::int32_t* expa, std::size_t na, std::int64_t* g,
                                  std::int64_t* zout) {
  const std::size_t n4 = n / 4 * 4;
  __m256i vmx = _mm256_set1_epi64x(INT64_MIN);
  for (std::size_t j = 0; j < n4; j += 4) {
    const __m256i sv = _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j)));
    const __m256i kv = _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kmax + j)));
    const __m256i p = _mm256_mul_epi32(sv, kv);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(g + j), p);
    vmx = max64(vmx, p);
  }
  std::int64_t mx = hmax64(vmx);
  for (std::size_t j = n4; j < n; ++j) {
    g[j] = std::int64_t{s[j]} * kmax[j];
    mx = g[j] > mx ? g[j] : mx;
  }
  const std::uint64_t capu = 127 * static_cast<std::uint64_t>(na);
  const __m256i vmxb = _mm256_set1_epi64x(mx);
  const __m256i cap = _mm256_set1_epi64x(static_cast<std::int64_t>(capu));
  const __m256i last = _mm256_set1_epi64x(static_cast<std::int64_t>(na - 1));
  const __m256i magic = _mm256_set1_epi64x(528417);
  const __m128i sh = _mm_cvtsi32_si128(k);
  __m256i z = _mm256_setzero_si256(), gmv = _mm256_setzero_si256();
  for (std::size_t j = 0; j < n4; j += 4) {
    const __m256i d = _mm256_sub_epi64(vmxb, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + j)));
    const __m256i y = min64(_mm256_srl_epi64(d, sh), cap);
    const __m256i idx = min64(_mm256_srli_epi64(_mm256_mul_epu32(y, magic), 26), last);
    const __m256i e = _mm256_cvtepu32_epi64(_mm256_i64gather_epi32(reinterpret_cast<const int*>(expa), idx, 4));
    const __m256i vm = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vmax + j)));
    const __m256i gv = _mm256_mul_epu32(e, vm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(g + j), gv);
    z = _mm256_add_epi64(z, e);
    gmv = max64(gmv, gv);
  }
  std::int64_t zs = hsum64(z), gm = hmax64(gmv);
  for (std::size_t j = n4; j < n; ++j) {
    std::uint64_t y = static_cast<std::uint64_t>(mx - g[j]) >> k;
    y = y < capu ? y : capu;
    std::uint64_t i = (y * 528417u) >> 26;
    i = i < na - 1 ? i : na - 1;
    zs += expa[i];
    g[j] = std::int64_t{expa[i]} * vmax[j];
    gm = g[j] > gm ? g[j] : gm;
  }
  *zout = zs;
  return gm;
}

PYLLMCODEC_V256 void finish(std::int64_t* p, const std::int64_t* e, std::size_t n, std::int64_t base, std::int64_t C,
                            std::int64_t emin, std::int64_t emax) {
  std::size_t n4 = n / 4 * 4;
  if (base + emin < 1 || base + emax > 63) n4 = 0;  // shifts left or past 63: numpy's corners, one by one
  // 1 <= s <= 63 and |P| < 2^52: clamp(P, 2^62) is P, and rsr is the floor of (P + 2^(s-1)) / 2^s, here
  // (v + 2^63) >> s - 2^(63 - s) in unsigned lanes (exact: 2^s divides 2^63)
  const __m256i bv = _mm256_set1_epi64x(base - 1), one = _mm256_set1_epi64x(1), hi = _mm256_set1_epi64x(C),
                lo = _mm256_set1_epi64x(-C), sign = _mm256_set1_epi64x(INT64_MIN);
  for (std::size_t o = 0; o < n4; o += 4) {
    const __m256i s1 = _mm256_add_epi64(bv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e + o)));  // s - 1
    const __m256i s = _mm256_add_epi64(s1, one);
    const __m256i v = _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + o)), _mm256_sllv_epi64(one, s1));
    const __m256i r = _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_xor_si256(v, sign), s), _mm256_srlv_epi64(sign, s));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + o), min64(max64(r, lo), hi));
  }
  for (std::size_t o = n4; o < n; ++o) p[o] = lin_out(p[o], base + e[o], C);
}

inline constexpr Kernels table{&products, &scores, &expw, &avx2::wts, &values, &finish, &avx2::expl_row, "avx2"};

// ---- the per-row work (RowOps): AVX2 has no 64-bit arithmetic shift, abs, unsigned compare or
// multiply, so: v >> s = ((v + 2^63) >> s) - (2^63 >> s) in unsigned lanes (exact: 2^s divides 2^63);
// unsigned a > b = signed (a ^ 2^63) > (b ^ 2^63); and products only where both factors fit int32
// (vpmuldq), which the RowOps contracts above guarantee.
PYLLMCODEC_V256 inline __m256i sra64(__m256i v, __m128i s) {
  const __m256i sign = _mm256_set1_epi64x(INT64_MIN);
  return _mm256_sub_epi64(_mm256_srl_epi64(_mm256_xor_si256(v, sign), s), _mm256_srl_epi64(sign, s));
}
PYLLMCODEC_V256 inline __m256i gtu64(__m256i a, __m256i b) {
  const __m256i sign = _mm256_set1_epi64x(INT64_MIN);
  return _mm256_cmpgt_epi64(_mm256_xor_si256(a, sign), _mm256_xor_si256(b, sign));
}
PYLLMCODEC_V256 inline __m256i clamp64v(__m256i v, __m256i lo, __m256i hi) { return min64(max64(v, lo), hi); }

PYLLMCODEC_V256 void absmax(const std::int64_t* y, std::size_t nb, std::uint64_t* ymax) {
  const __m256i zero = _mm256_setzero_si256();
  for (std::size_t b = 0; b < nb; ++b) {
    __m256i m = zero;
    for (std::size_t i = 0; i < kBlock; i += 4) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + b * kBlock + i));
      const __m256i neg = _mm256_cmpgt_epi64(zero, v);
      const __m256i a = _mm256_sub_epi64(_mm256_xor_si256(v, neg), neg);  // |v|, INT64_MIN as 2^63
      m = _mm256_blendv_epi8(m, a, gtu64(a, m));
    }
    alignas(32) std::uint64_t t[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), m);
    ymax[b] = std::max(std::max(t[0], t[1]), std::max(t[2], t[3]));
  }
}

// Rdiv127 by the AVX-512 copy's binary search (every candidate below 510 Y < 2^64, compared unsigned)
PYLLMCODEC_V256 std::int64_t div127(const std::int64_t* y, std::size_t n, std::uint64_t Y, std::int8_t* q) {
  __m256i step[8], bit[8];
  for (int k = 0; k < 8; ++k) {
    step[k] = _mm256_set1_epi64x(static_cast<std::int64_t>((2 * Y) << k));
    bit[k] = _mm256_set1_epi64x(std::int64_t{1} << k);
  }
  const __m256i base = _mm256_set1_epi64x(static_cast<std::int64_t>(257 * Y));
  __m256i tsum = _mm256_setzero_si256();
  for (std::size_t i = 0; i < n; i += 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + i));
    const __m256i num = _mm256_add_epi64(_mm256_sub_epi64(_mm256_slli_epi64(v, 8), _mm256_slli_epi64(v, 1)), base);
    __m256i acc = _mm256_setzero_si256(), qv = _mm256_set1_epi64x(-128);
    for (int k = 7; k >= 0; --k) {
      const __m256i t = _mm256_add_epi64(acc, step[k]);
      const __m256i over = gtu64(t, num);  // the candidate passes num: keep acc
      acc = _mm256_blendv_epi8(t, acc, over);
      qv = _mm256_add_epi64(qv, _mm256_andnot_si256(over, bit[k]));
    }
    tsum = _mm256_add_epi64(tsum, qv);
    alignas(32) std::int64_t t[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), qv);
    for (int l = 0; l < 4; ++l) q[i + l] = static_cast<std::int8_t>(t[l]);
  }
  return hsum64(tsum);
}

PYLLMCODEC_V256 std::int64_t rms(const std::int64_t* x, const std::int64_t* g, std::size_t d, int s, std::int64_t* y) {
  const __m128i sh = _mm_cvtsi32_si128(s);
  __m256i ss = _mm256_setzero_si256();
  for (std::size_t i = 0; i < d; i += 4) {
    const __m256i z = sra64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), sh);  // |z| < 2^26
    ss = _mm256_add_epi64(ss, _mm256_mul_epi32(z, z));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        _mm256_mul_epi32(z, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + i))));  // |g| < 2^20
  }
  return hsum64(ss);
}

PYLLMCODEC_V256 void add_clamp(std::int64_t* x, const std::int64_t* o, std::size_t d, std::int64_t lim) {
  const __m256i hi = _mm256_set1_epi64x(lim), lo = _mm256_set1_epi64x(-lim);
  for (std::size_t i = 0; i < d; i += 4) {
    const __m256i v = _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(x + i), clamp64v(v, lo, hi));
  }
}

PYLLMCODEC_V256 void silu_mul(const std::int64_t* gp, std::size_t f, const std::int64_t* silu, std::int64_t* y) {
  const __m256i half1 = _mm256_set1_epi64x(kSiluHalf - 1), nhalf = _mm256_set1_epi64x(-kSiluHalf),
                off = _mm256_set1_epi64x(kSiluHalf >> kSiluStep), zero = _mm256_setzero_si256(),
                top = _mm256_set1_epi64x(kSiluLen - 2), frac = _mm256_set1_epi64x((1 << kSiluStep) - 1),
                rnd = _mm256_set1_epi64x(1 << (kSiluStep - 1));
  const __m128i st = _mm_cvtsi32_si128(kSiluStep);
  for (std::size_t i = 0; i < f; i += 4) {
    const __m256i g = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + i));  // |g| <= 2^27
    const __m256i idx = clamp64v(_mm256_add_epi64(sra64(g, st), off), zero, top);
    const __m256i lo = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(silu), idx, 8);
    const __m256i hi = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(silu + 1), idx, 8);
    const __m256i t = _mm256_mul_epi32(_mm256_sub_epi64(hi, lo), _mm256_and_si256(g, frac));  // both fit int32
    __m256i sg = _mm256_add_epi64(lo, sra64(_mm256_add_epi64(t, rnd), st));
    sg = _mm256_blendv_epi8(sg, g, _mm256_cmpgt_epi64(g, half1));     // g >= half: g
    sg = _mm256_blendv_epi8(sg, zero, _mm256_cmpgt_epi64(nhalf, g));  // g < -half: 0
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        _mm256_mul_epi32(sg, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + f + i))));
  }
}

PYLLMCODEC_V256 void rotate(std::int64_t* v, std::size_t heads, const std::int64_t* cs, const std::int64_t* sn) {
  const __m256i rnd = _mm256_set1_epi64x(1 << (kRopeBits - 1));
  const __m128i st = _mm_cvtsi32_si128(kRopeBits);
  for (std::size_t h = 0; h < heads; ++h, v += kHd) {
    for (std::size_t i = 0; i < kHd / 2; i += 4) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i));
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + kHd / 2 + i));
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + i));
      const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sn + i));
      // |v| <= 2^27, |cs|, |sn| <= 2^14: every factor fits int32
      const __m256i r0 = _mm256_sub_epi64(_mm256_mul_epi32(a, c), _mm256_mul_epi32(b, s));
      const __m256i r1 = _mm256_add_epi64(_mm256_mul_epi32(b, c), _mm256_mul_epi32(a, s));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + i), sra64(_mm256_add_epi64(r0, rnd), st));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + kHd / 2 + i), sra64(_mm256_add_epi64(r1, rnd), st));
    }
  }
}

PYLLMCODEC_V256 void q16(const std::int64_t* v, int s, std::int16_t* out) {
  const __m256i hi = _mm256_set1_epi64x(32767), lo = _mm256_set1_epi64x(-32767);
  const __m256i rnd = _mm256_set1_epi64x(s > 0 ? std::int64_t{1} << (s - 1) : 0);
  const __m128i sh = _mm_cvtsi32_si128(s);
  for (std::size_t c = 0; c < kHd; c += 4) {
    // s < 64 and |v| < 2^62: rsr is (v + 2^(s-1)) >> s without wrapping
    const __m256i r = clamp64v(sra64(_mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + c)), rnd), sh), lo, hi);
    alignas(32) std::int64_t t[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), r);
    for (int l = 0; l < 4; ++l) out[c + l] = static_cast<std::int16_t>(t[l]);
  }
}

inline constexpr RowOps rows{&absmax, &div127, &rms, &add_clamp, &silu_mul, &rotate, &q16};
#undef PYLLMCODEC_V256
}  // namespace avx2k
#endif

// The per-row copy: the AVX-512 or AVX2 one where those kernels are, else the scalar loops.
inline const RowOps& row_ops() {
#if PYLLMCODEC_DISPATCH
  if (kernel_level() == KernelLevel::avx512vnni) return avx512vnni::rows;
  if (kernel_level() == KernelLevel::avx2) return avx2k::rows;
#endif
  return scalar::table;
}

// The copy for this CPU's kernel_level() (quantizer.hpp), chosen once.
inline const Kernels& kernels() {
  switch (kernel_level()) {
#if PYLLMCODEC_DISPATCH  // (which also compiles the AVX-512 copy: PYLLMCODEC_LLAMA_HAVE_AVX512)
    case KernelLevel::avx512vnni: return avx512vnni::table;
    case KernelLevel::avx2: return avx2k::table;
#endif
    default: return generic::table;
  }
}

// ---------------------------------------------------------------------------
// The state: the int8 key/value cache of a batch of rows.
// ---------------------------------------------------------------------------
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
std::unique_ptr<T[], FreeDeleter> zeroed(std::size_t n) {
  void* p = std::calloc(n == 0 ? 1 : n, sizeof(T));
  if (p == nullptr) throw std::bad_alloc();
  return std::unique_ptr<T[], FreeDeleter>(static_cast<T*>(p));
}

struct Scratch {  // one thread's attention buffers
  std::vector<std::int32_t> s;
  std::vector<std::int64_t> sp, a;
  std::vector<std::int16_t> w, q16;
};

class State {
 public:
  State(std::size_t batch, std::size_t n_layer, std::size_t n_kv, std::size_t ctx)
      : batch_(batch), n_layer_(n_layer), n_kv_(n_kv), ctx_(ctx), kstride_((ctx + kKeyBlock - 1) / kKeyBlock * kKeyBytes),
        vstride_((ctx + 1) / 2 * 2 * kHd) {
    const std::size_t heads = n_layer * batch * n_kv;
    k_ = zeroed<std::int8_t>(heads * kstride_);
    v_ = zeroed<std::int8_t>(heads * vstride_);
    kmax_ = zeroed<std::int32_t>(heads * ctx);
    vmax_ = zeroed<std::int32_t>(heads * ctx);
  }
  std::size_t batch() const { return batch_; }
  std::size_t ctx() const { return ctx_; }
  bool fits(std::size_t n_layer, std::size_t n_kv, std::size_t ctx) const {
    return n_layer == n_layer_ && n_kv == n_kv_ && ctx == ctx_;
  }
  std::size_t nbytes() const {
    return n_layer_ * batch_ * n_kv_ * (kstride_ + vstride_ + 2 * ctx_ * sizeof(std::int32_t));
  }
  std::size_t head(std::size_t layer, std::size_t row, std::size_t kv) const { return (layer * batch_ + row) * n_kv_ + kv; }
  const std::int8_t* k(std::size_t h) const { return k_.get() + h * kstride_; }
  const std::int8_t* v(std::size_t h) const { return v_.get() + h * vstride_; }
  const std::int32_t* kmax(std::size_t h) const { return kmax_.get() + h * ctx_; }
  const std::int32_t* vmax(std::size_t h) const { return vmax_.get() + h * ctx_; }
  void put(std::size_t h, std::size_t t, const std::int8_t* key, std::int32_t km, const std::int8_t* value,
           std::int32_t vm) {
    std::int8_t* kb = k_.get() + h * kstride_ + t / kKeyBlock * kKeyBytes + 2 * (t % kKeyBlock);
    for (std::size_t c = 0; c < kHd; ++c) kb[c / 2 * 2 * kKeyBlock + c % 2] = key[c];
    std::int8_t* vp = v_.get() + h * vstride_ + t / 2 * 2 * kHd + t % 2;
    for (std::size_t c = 0; c < kHd; ++c) vp[2 * c] = value[c];
    kmax_[h * ctx_ + t] = km;
    vmax_[h * ctx_ + t] = vm;
  }
  std::size_t position = 0;

  // the step's working buffers (kept between steps)
  std::vector<std::int64_t> x, buf, logits, ybuf;
  Act act, act_mlp;
  std::vector<Scratch> scratch;

 private:
  std::size_t batch_, n_layer_, n_kv_, ctx_, kstride_, vstride_;
  std::unique_ptr<std::int8_t[], FreeDeleter> k_, v_;
  std::unique_ptr<std::int32_t[], FreeDeleter> kmax_, vmax_;
};

// A spin barrier for the step's threads (yields after a while: more threads than cores stay correct, just slower).
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    if (n_ == 1) return;
    const unsigned g = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    for (unsigned spins = 0; gen_.load(std::memory_order_acquire) == g; ++spins) {
      if (spins > 2000) {
        std::this_thread::yield();
      } else {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
    }
  }

 private:
  unsigned n_;
  std::atomic<unsigned> count_{0}, gen_{0};
};

// ---------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------
// What a model is built from (bindings.cpp fills it from the arrays, checking
// dtypes and shapes; Model::build checks the bounds, naming the array).
struct MatSpec {
  std::string name;
  const std::uint8_t* q;  // Q4_1: [out][in / 2] packed nibbles; Q8_0: int8 [out][in]
  const std::int16_t *d, *m, *e;
  std::size_t out, in;
};

struct Layer {
  QMat qkv, o, gu, down;
  std::vector<std::int64_t> g1, g2;
};

class Model {
 public:
  std::size_t n_layer = 0, d = 0, H = 0, KV = 0, f = 0, V = 0, ctx = 0;
  std::int64_t eps = 0;
  std::vector<Layer> layers;
  std::vector<std::int64_t> norm;
  QMat head;
  std::vector<std::int8_t> eq;   // [V][d]
  std::vector<std::int64_t> ed;  // [V][nb]
  std::vector<std::int64_t> ee;  // [V]
  std::vector<std::int64_t> rope_cos, rope_sin;  // [ctx][32]
  std::vector<std::int64_t> silu;
  std::vector<std::int32_t> expa, expl;

  // Repack matrices stacked along the outputs (q, k, v: one product) into one QMat.
  static QMat pack(const std::vector<MatSpec>& parts, bool signed_q) {
    QMat W;
    W.in = parts[0].in;
    W.nb = W.in / kBlock;
    for (const auto& p : parts) W.out += p.out;
    W.nob = (W.out + 15) / 16;
    W.signed_q = signed_q;
    const std::size_t quads = W.in / 4, nb = W.nb;
    W.q.assign(W.nob * quads * 64, 0);
    if (signed_q) W.d.assign(W.nob * nb * 16, 0);
    if (!signed_q) W.d32.assign(W.nob * nb * 16, 0);
    if (!signed_q) W.m32.assign(W.nob * nb * 16, 0);
    if (signed_q) W.qs.assign(W.nob * nb * 16, 0);
    W.e.assign(W.nob * 16, 0);
    int lane_of[16];
    for (int l = 0; l < 16; ++l) lane_of[kLane[l]] = l;
    std::size_t o = 0;
    for (const auto& p : parts) {
      for (std::size_t j = 0; j < p.out; ++j, ++o) {
        const std::size_t ob = o / 16, lane = static_cast<std::size_t>(lane_of[o % 16]);
        for (std::size_t i = 0; i < W.in; ++i) {
          std::uint8_t v;
          if (signed_q) {
            v = p.q[j * W.in + i];
          } else {
            const std::uint8_t byte = p.q[j * (W.in / 2) + i / 2];
            v = (i % 2) ? (byte >> 4) : (byte & 15);
          }
          W.q[((ob * quads + i / 4) * 16 + lane) * 4 + i % 4] = v;
        }
        for (std::size_t b = 0; b < nb; ++b) {
          if (signed_q) W.d[(ob * nb + b) * 16 + o % 16] = p.d[j * nb + b];
          if (!signed_q) W.d32[(ob * nb + b) * 16 + lane] = p.d[j * nb + b];
          if (!signed_q) W.m32[(ob * nb + b) * 16 + lane] = p.m[j * nb + b];
          if (signed_q) {
            std::int32_t sum = 0;
            for (std::size_t i = b * kBlock; i < (b + 1) * kBlock; ++i) sum += static_cast<std::int8_t>(p.q[j * W.in + i]);
            W.qs[(ob * nb + b) * 16 + lane] = 128 * sum;
          }
        }
        W.e[o] = p.e[j];
      }
    }
    W.emin = *std::min_element(W.e.begin(), W.e.begin() + static_cast<std::ptrdiff_t>(W.out));
    W.emax = *std::max_element(W.e.begin(), W.e.begin() + static_cast<std::ptrdiff_t>(W.out));
    return W;
  }

  static void check_mat(const MatSpec& s, bool q8) {
    const std::size_t nb = s.in / kBlock;
    for (std::size_t i = 0; i < s.out * nb; ++i) {
      if (s.d[i] >= (1 << 14) || s.d[i] <= -(1 << 14) || (!q8 && (s.m[i] >= (1 << 14) || s.m[i] <= -(1 << 14)))) {
        throw InvalidInput("array '" + s.name + "': scales beyond 2**14");
      }
    }
    for (std::size_t o = 0; o < s.out; ++o) {
      if (q8 ? (s.e[o] < kUnit - 40 || s.e[o] > 62) : (s.e[o] > 62 || s.e[o] < -62)) {
        throw InvalidInput("array '" + s.name + "': exponents out of range");
      }
    }
  }

  static std::vector<std::int64_t> gain(const std::int32_t* g, std::size_t n, const std::string& name) {
    std::vector<std::int64_t> out(g, g + n);
    for (std::int64_t v : out) {
      if (v >= (1 << 20) || v <= -(1 << 20)) throw InvalidInput("array '" + name + "': gains beyond 2**20");
    }
    return out;
  }

  static void check_table(const std::vector<std::int32_t>& t, std::int64_t one, const std::string& name) {
    bool ok = !t.empty() && t.front() == one && t.back() == 0;
    for (std::size_t i = 0; ok && i < t.size(); ++i) ok = t[i] >= 0 && (i == 0 || t[i] <= t[i - 1]);
    if (!ok) {
      throw InvalidInput("table '" + name + "' is not a non-increasing table from " + std::to_string(one) + " down to 0");
    }
  }

  std::size_t hd() const { return d / H; }

  // ---- the step's pieces (per row) ----

  // RMSNorm of x (row r) straight into block quantization (row r of a)
  void rms_quant(const RowOps& R, const std::int64_t* x, const std::vector<std::int64_t>& g, Act& a, std::size_t r,
                 std::int64_t* y) const {
    const std::uint64_t top = max_abs(R, x, d / kBlock);
    const int s = std::max(0, bitlen(top) - kSSBits);
    const std::int64_t ss = R.rms(x, g.data(), d, s, y);  // < d 2^52 <= 2^63
    const std::int64_t ms = ss / static_cast<std::int64_t>(d) + np_shr(eps, 2 * s);
    const std::int64_t root = std::max<std::int64_t>(1, static_cast<std::int64_t>(isqrt(static_cast<std::uint64_t>(ms))));
    std::uint64_t xs[64];
    std::int64_t sh[64] = {};
    for (std::size_t b = 0; b < d / kBlock; ++b) xs[b] = 127 * static_cast<std::uint64_t>(root);
    quant_blocks(R, y, xs, sh, a, r);
  }

  void attention_row(const Layer& ly, std::size_t li, State& st, std::size_t r, std::size_t t, Scratch& sc,
                     const Kernels& K, const RowOps& R) const {
    (void)ly;
    const std::size_t G = H / KV, n = t + 1, sl = (n + kKeyBlock - 1) / kKeyBlock * kKeyBlock, wl = (n + 1) / 2 * 2;
    const std::size_t ldq = layers[li].qkv.ld();
    std::int64_t* qkv = st.buf.data() + r * ldq;
    const std::int64_t* cs = rope_cos.data() + t * (kHd / 2);
    const std::int64_t* sn = rope_sin.data() + t * (kHd / 2);
    R.rotate(qkv, H + KV, cs, sn);  // q heads, then k heads
    // keys and values of this position into the cache
    for (std::size_t kv = 0; kv < KV; ++kv) {
      std::int8_t k8[kHd], v8[kHd];
      std::int32_t mx[2];
      for (int which = 0; which < 2; ++which) {
        const std::int64_t* src = qkv + (H + which * KV + kv) * kHd;
        std::int8_t* dst = which ? v8 : k8;
        const std::uint64_t m = max_abs(R, src, kHd / kBlock);
        mx[which] = static_cast<std::int32_t>(m);
        if (m == 0) {
          std::memset(dst, 0, kHd);
        } else {
          R.div127(src, kHd, m, dst);
        }
      }
      st.put(st.head(li, r, kv), t, k8, mx[0], v8, mx[1]);
    }
    // per KV head, its G query heads
    std::int64_t* y = st.ybuf.data() + r * d;
    std::uint64_t xs[64];
    std::int64_t shs[64];
    const std::size_t per = kHd / kBlock;
    for (std::size_t kv = 0; kv < KV; ++kv) {
      const std::size_t hh = st.head(li, r, kv);
      int sq[64];
      for (std::size_t g = 0; g < G; ++g) {
        const std::int64_t* qh = qkv + (kv * G + g) * kHd;
        const std::uint64_t m = max_abs(R, qh, kHd / kBlock);
        sq[g] = std::max(0, bitlen(m) - kABits);
        R.q16(qh, sq[g], sc.q16.data() + g * kHd);
      }
      K.scores(sc.q16.data(), G, st.k(hh), n, sc.s.data(), sl);
      for (std::size_t g = 0; g < G; ++g) {
        std::int64_t Z = 0;
        const std::int64_t gm = K.expw(sc.s.data() + g * sl, st.kmax(hh), st.vmax(hh), n, 29 - sq[g], expa.data(),
                                       expa.size(), sc.sp.data(), &Z);
        const int vs = std::max(0, bitlen(static_cast<std::uint64_t>(gm)) - kABits);
        K.wts(sc.sp.data(), n, vs, sc.w.data() + g * wl, wl);
        const std::size_t h = kv * G + g;
        for (std::size_t b = 0; b < per; ++b) {
          xs[h * per + b] = 127 * 127 * static_cast<std::uint64_t>(Z);
          shs[h * per + b] = vs;
        }
      }
      K.values(sc.w.data(), G, wl, st.v(hh), n, sc.a.data());
      for (std::size_t g = 0; g < G; ++g) std::memcpy(y + (kv * G + g) * kHd, sc.a.data() + g * kHd, kHd * sizeof(std::int64_t));
    }
    quant_blocks(R, y, xs, shs, st.act, r);
  }

  // One step; every thread of the team runs this with its id.
  void run(State& st, const std::int64_t* tokens, std::uint32_t* out, unsigned tid, unsigned T, Barrier& bar) const {
    const Kernels& K = kernels();
    const RowOps& R = row_ops();
    const std::size_t B = st.batch(), t = st.position, nbd = d / kBlock;
    const std::size_t r0 = B * tid / T, r1 = B * (tid + 1) / T;
    Scratch& sc = st.scratch[tid];
    auto cols = [&](const QMat& W, const Act& x, std::int64_t* P, std::int64_t U, std::int64_t unit, std::int64_t C) {
      const std::size_t ob0 = W.nob * tid / T, ob1 = W.nob * (tid + 1) / T;
      if (ob0 < ob1) K.products(W, x, 0, B, ob0, ob1, P);
      // finish this thread's columns for every row
      const std::size_t o0 = ob0 * 16, o1 = std::min(W.out, ob1 * 16);
      if (o0 < o1) {
        for (std::size_t r = 0; r < B; ++r) {
          K.finish(P + r * W.ld() + o0, W.e.data() + o0, o1 - o0, x.eA[r] + U - unit, C, W.emin, W.emax);
        }
      }
    };
    // the embedding, and the first RMSNorm
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t tok = static_cast<std::size_t>(tokens[r]);
      std::int64_t* x = st.x.data() + r * d;
      const std::int8_t* q = eq.data() + tok * d;
      const std::int64_t* db = ed.data() + tok * nbd;
      for (std::size_t i = 0; i < d; ++i) x[i] = clamp64(rsr(std::int64_t{q[i]} * db[i / kBlock], ee[tok] - kUnit), kResClamp);
      rms_quant(R, x, layers[0].g1, st.act, r, st.ybuf.data() + r * d);
    }
    for (std::size_t li = 0; li < n_layer; ++li) {
      const Layer& ly = layers[li];
      bar.wait();
      cols(ly.qkv, st.act, st.buf.data(), kUnit, kUnit, kQKVClamp);
      bar.wait();
      for (std::size_t r = r0; r < r1; ++r) attention_row(ly, li, st, r, t, sc, K, R);
      bar.wait();
      cols(ly.o, st.act, st.buf.data(), kUnit, kUnit, kResClamp);
      bar.wait();
      for (std::size_t r = r0; r < r1; ++r) {
        std::int64_t* x = st.x.data() + r * d;
        const std::int64_t* o = st.buf.data() + r * ly.o.ld();
        R.add_clamp(x, o, d, kResClamp);
        rms_quant(R, x, ly.g2, st.act, r, st.ybuf.data() + r * d);
      }
      bar.wait();
      cols(ly.gu, st.act, st.buf.data(), kUnit, kUnit, kQKVClamp);
      bar.wait();
      for (std::size_t r = r0; r < r1; ++r) {
        const std::int64_t* gp = st.buf.data() + r * ly.gu.ld();
        std::int64_t* y = st.ybuf.data() + r * std::max(d, f);
        R.silu_mul(gp, f, silu.data(), y);
        std::uint64_t xs[64];
        std::int64_t sh[64] = {};
        for (std::size_t b = 0; b < f / kBlock; ++b) xs[b] = 127;
        quant_blocks(R, y, xs, sh, st.act_mlp, r);
      }
      bar.wait();
      cols(ly.down, st.act_mlp, st.buf.data(), 2 * kUnit, kUnit, kResClamp);
      bar.wait();
      const bool last = li + 1 == n_layer;
      for (std::size_t r = r0; r < r1; ++r) {
        std::int64_t* x = st.x.data() + r * d;
        const std::int64_t* o = st.buf.data() + r * ly.down.ld();
        R.add_clamp(x, o, d, kResClamp);
        rms_quant(R, x, last ? norm : layers[li + 1].g1, st.act, r, st.ybuf.data() + r * d);
        if (last) {
          const std::uint8_t* src = reinterpret_cast<const std::uint8_t*>(st.act.xq.data()) + r * d;
          std::uint8_t* u = st.act.xu.data() + r * d;
          for (std::size_t i = 0; i < d; ++i) u[i] = static_cast<std::uint8_t>(src[i] ^ 0x80u);
        }
      }
    }
    bar.wait();
    cols(head, st.act, st.logits.data(), kUnit, kLogitUnit, kLogitClamp);
    bar.wait();
    for (std::size_t r = r0; r < r1; ++r) K.expl_row(st.logits.data() + r * head.ld(), V, expl.data(), expl.size(), out + r * V);
  }

  void prepare(State& st, unsigned T) const {
    const std::size_t B = st.batch(), G = H / KV, ctxp = (ctx + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
    st.x.resize(B * d);
    st.ybuf.resize(B * std::max(d, f));
    std::size_t ld = 0;
    for (const Layer& ly : layers) ld = std::max({ld, ly.qkv.ld(), ly.o.ld(), ly.gu.ld(), ly.down.ld()});
    st.buf.resize(B * ld);
    st.logits.resize(B * head.ld());
    st.act.resize(B, d, true);
    st.act_mlp.resize(B, f, false);
    st.scratch.resize(T);
    for (Scratch& s : st.scratch) {
      s.s.resize(G * ctxp);
      s.sp.resize(ctxp);
      s.a.resize(G * kHd);
      s.w.resize(G * (ctxp + 2));
      s.q16.resize(G * kHd);
    }
  }

  // The whole step: `threads` threads (the result does not depend on it).
  void step(State& st, const std::int64_t* tokens, std::uint32_t* out, int threads) const {
    if (!st.fits(n_layer, KV, ctx)) throw InvalidInput("the state belongs to another model");
    for (std::size_t r = 0; r < st.batch(); ++r) {
      if (tokens[r] < 0 || static_cast<std::size_t>(tokens[r]) >= V) {
        throw InvalidInput("tokens[" + std::to_string(r) + "] = " + std::to_string(tokens[r]) + " is not in [0, " +
                           std::to_string(V) + ")");
      }
    }
    if (st.position >= ctx) throw InvalidInput("the state is full: " + std::to_string(ctx) + " steps taken");
    const unsigned T = static_cast<unsigned>(std::max(1, std::min(threads, 256)));
    prepare(st, T);
    Barrier bar(T);
    if (T == 1) {
      run(st, tokens, out, 0, 1, bar);
    } else {
      std::vector<std::thread> pool;
      pool.reserve(T - 1);
      for (unsigned k = 1; k < T; ++k) pool.emplace_back([&, k]() { run(st, tokens, out, k, T, bar); });
      run(st, tokens, out, 0, T, bar);
      for (auto& th : pool) th.join();
    }
    st.position += 1;
  }
};

}  // namespace llama
}  // namespace pyllmcodec
