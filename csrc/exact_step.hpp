// exact_step.hpp -- one step of the exact integer byte model for a batch of
// rows: the native implementation of pyllmcodec/nets/intlm.py, whose module
// docstring is the specification and whose numpy reference (ref_step) this
// file must match bit for bit (tests/test_exact.py, tests/test_intlm_core.py).
//
// The rule: integers and tables only.
//   * every reduction is an integer sum -- int32 where the bounds below prove
//     that no partial sum, in any order, can overflow; int64 elsewhere.  So
//     vectorising, blocking or splitting rows over threads cannot change a
//     bit, and neither can the instruction set (the AVX2/AVX-512 copies of
//     the kernels below and the generic copy give identical results);
//   * every nonlinearity (the softmaxes' exp, GELU) is a table read from the
//     bundle; every rescale is floor((acc * M + B) / 2^SH) in int64;
//   * LayerNorm's square root is exact: a double estimate corrected with
//     integer comparisons to the floor square root (the one float operation
//     in the step, and its result is an exact integer either way).
// Bounds (checked when a model is built, see Model::Model):
//   linear layers: max |input| * max_o sum_i |W[o, i]| < 2^31 (int32 acc);
//   attention scores: |Q| <= 32767, |K| <= 1023, head_dim <= 64:
//     sum |Q_d K_d| <= 64 * 32767 * 1023 = 2145321024 < 2^31 - 1;
//   attention values: sum_j e_j V_jd in int64, as int32 sums of blocks of
//     64 positions (64 * 16384 * 1023 < 2^31).
// So int16 x int16 -> int32 multiply-adds that wrap (AVX-512 VNNI's
// vpdpwssd, never the saturating vpdpwssds) give the exact sums.
//
// The key/value cache (State) is laid out for those kernels; the layout is
// internal (nothing outside this file sees it).  Channels are padded to
// kHdp = 64 with zeros.  Keys: per block of 16 positions, per channel pair
// p, the 16 positions' (k[2p], k[2p+1]): one 512-bit load feeds 16 scores.
// Values: per pair of positions (2i, 2i+1), per channel c, (v_2i[c],
// v_2i+1[c]): one load feeds 16 channels for two positions.  All heads share
// the one key/value head (multi-query attention), so each load serves every
// head.
//
// Plain C++17; knows nothing of Python.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "quantizer.hpp"  // InvalidInput

#if PYLLMCODEC_DISPATCH
#include <immintrin.h>
#endif

namespace pyllmcodec {
namespace exact {

static_assert((-1 >> 1) == -1, "arithmetic right shift of negative values is required");

constexpr std::int64_t kRes = 1 << 24;     // residual clamp
constexpr std::int64_t kLogit = 1 << 24;   // logit clamp
constexpr std::int64_t kAct = 32767;       // int16 activations
constexpr std::int64_t kGelu = 16383;      // GELU input/output clamp
constexpr std::int64_t kKV = 1023;         // keys and values
constexpr std::int64_t kExpaOne = 1 << 14;
constexpr std::int64_t kExplOne = 1 << 24;
constexpr int kAttOutShift = 5;
constexpr std::size_t kMaxCtx = 1024;
constexpr std::size_t kMaxHeadDim = 64;
constexpr std::size_t kBlock = 64;  // positions per int32 block of the value sums
constexpr std::size_t kHdp = 64;    // cache channels (head_dim padded with zeros)
constexpr std::size_t kLanes = 16;  // positions per key block

// Padded lengths of the per-head score (int32) and weight (int16) rows.
inline std::size_t score_len(std::size_t n) { return (n + kLanes - 1) / kLanes * kLanes; }
inline std::size_t weight_len(std::size_t n) { return (n + 1) / 2 * 2; }

// floor(a / b) for b > 0
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b) != 0 && a < 0) --q;
  return q;
}
// floor(num / den) for a fixed den > 0, exactly, by a reciprocal instead of a
// division per value: recip = floor((2^64 - 1) / den), so mulhi(|num|, recip)
// is floor(|num| / den) or one less (|num| < 2^64: the estimate's error
// |num| (1 + e) / (den 2^64), e < den, is below 1); one correction; then the
// floor of a negative quotient is minus the ceiling of |num| / den.
class FloorDiv {
 public:
  explicit FloorDiv(std::int64_t den) : den_(static_cast<std::uint64_t>(den)), recip_(~std::uint64_t{0} / den_) {}
  std::int64_t operator()(std::int64_t num) const {
    const bool neg = num < 0;
    const std::uint64_t u = neg ? 0 - static_cast<std::uint64_t>(num) : static_cast<std::uint64_t>(num);
    std::uint64_t q = static_cast<std::uint64_t>((static_cast<unsigned __int128>(u) * recip_) >> 64);
    std::uint64_t r = u - q * den_;
    if (r >= den_) {
      ++q;
      r -= den_;
    }
    // mod 2^64: INT64_MIN / 1 comes back as INT64_MIN
    return static_cast<std::int64_t>(neg ? 0 - q - (r != 0 ? 1 : 0) : q);
  }

 private:
  std::uint64_t den_, recip_;
};

// rdiv(a) = floor((2a + b) / 2b), a / b rounded half up, for many a and one b > 0
class RDiv {
 public:
  explicit RDiv(std::int64_t b) : b_(b), div_(2 * b) {}
  std::int64_t operator()(std::int64_t a) const { return div_(2 * a + b_); }

 private:
  std::int64_t b_;
  FloorDiv div_;
};

inline std::int64_t isqrt(std::int64_t d) {  // 0 <= d < 2^62
  std::int64_t r = static_cast<std::int64_t>(std::sqrt(static_cast<double>(d)));
  while (r > 0 && r * r > d) --r;
  while ((r + 1) * (r + 1) <= d) ++r;
  return r;
}

inline std::int64_t clamp64(std::int64_t v, std::int64_t lo, std::int64_t hi) { return std::min(hi, std::max(lo, v)); }

struct Linear {
  std::size_t out = 0, in = 0;
  std::vector<std::int16_t> w;  // [out][in], the bundle's int8 widened
  // The same weights for the VNNI kernel (when `in` is even): per block of 16
  // outputs, per input pair p, the 16 outputs' (w[o][2p], w[o][2p+1]), zeros
  // past `out`.
  std::vector<std::int16_t> wp;
  std::vector<std::int64_t> m, b;
  int sh = 1;
  std::int64_t lim = 0;  // output clamp [-lim, lim]
};

// ---------------------------------------------------------------------------
// Kernels: integer loops the compiler vectorises; one copy per instruction set
// (as the quantizer's, see quantizer.hpp), all giving identical results.
// ---------------------------------------------------------------------------
struct Kernels {
  // acc[r * out + o] = sum_i x[r * in + i] * w[o * in + i]  (in, out, w of l)
  void (*linear)(const std::int16_t* x, std::size_t rows, const Linear& l, std::int32_t* acc);
  // in place: acc[r * out + o] = clamp(floor((acc * m[o] + b[o]) / 2^sh), -lim, lim)  (int64 arithmetic)
  void (*requant)(std::int32_t* acc, std::size_t rows, const Linear& l);
  // a head's softmax weights: mx = max_{j<n} s[j]; e[j] = expa[min((mx - s[j]) >> shift, na - 1)] (int16: the
  // table is <= 2^14 and ends with 0); returns z = sum_j e[j]
  std::int64_t (*weights)(const std::int32_t* s, std::size_t n, int shift, const std::int32_t* expa, std::size_t na,
                          std::int16_t* e);
  // s[h * score_len(n) + j] = sum_c q[h * kHdp + c] * k_j[c], j < n, for H heads
  // (entries j >= n of the padded rows are left undefined)
  void (*scores)(const std::int16_t* q, std::size_t H, const std::int16_t* kc, std::size_t n, std::int32_t* s);
  // a[h * kHdp + c] += sum_{j<n} e[h * weight_len(n) + j] * v_j[c]  (int32 over blocks of kBlock positions,
  // int64 across blocks); e[h * weight_len(n) + n] must be 0 where n is odd
  void (*values)(const std::int16_t* e, std::size_t H, const std::int16_t* vc, std::size_t n, std::int64_t* a);
  const char* name;
};

#define PYLLMCODEC_EXACT_KERNELS(NS, ATTR, NAME)                                                              \
  namespace NS {                                                                                            \
  ATTR inline std::int32_t dot(const std::int16_t* a, const std::int16_t* b, std::size_t n) {              \
    std::int32_t s = 0;                                                                                     \
    for (std::size_t i = 0; i < n; ++i) s += static_cast<std::int32_t>(a[i]) * static_cast<std::int32_t>(b[i]); \
    return s;                                                                                               \
  }                                                                                                         \
  /* four rows share each weight load; the rows left over go one by one */                                \
  ATTR inline void linear(const std::int16_t* x, std::size_t rows, const Linear& l, std::int32_t* acc) {    \
    const std::size_t in = l.in, out = l.out;                                                               \
    const std::int16_t* w = l.w.data();                                                                     \
    std::size_t r = 0;                                                                                      \
    for (; r + 4 <= rows; r += 4) {                                                                         \
      const std::int16_t *x0 = x + r * in, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in;                     \
      for (std::size_t o = 0; o < out; ++o) {                                                               \
        const std::int16_t* wo = w + o * in;                                                                \
        std::int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                                        \
        for (std::size_t i = 0; i < in; ++i) {                                                              \
          const std::int32_t wi = wo[i];                                                                    \
          s0 += x0[i] * wi;                                                                                 \
          s1 += x1[i] * wi;                                                                                 \
          s2 += x2[i] * wi;                                                                                 \
          s3 += x3[i] * wi;                                                                                 \
        }                                                                                                   \
        acc[r * out + o] = s0;                                                                              \
        acc[(r + 1) * out + o] = s1;                                                                        \
        acc[(r + 2) * out + o] = s2;                                                                        \
        acc[(r + 3) * out + o] = s3;                                                                        \
      }                                                                                                     \
    }                                                                                                       \
    for (; r < rows; ++r) {                                                                                 \
      for (std::size_t o = 0; o < out; ++o) acc[r * out + o] = dot(x + r * in, w + o * in, in);             \
    }                                                                                                       \
  }                                                                                                         \
  ATTR inline void requant(std::int32_t* acc, std::size_t rows, const Linear& l) {                          \
    const std::size_t out = l.out;                                                                          \
    const std::int64_t* m = l.m.data();                                                                     \
    const std::int64_t* b = l.b.data();                                                                     \
    const int sh = l.sh;                                                                                    \
    const std::int64_t lim = l.lim;                                                                         \
    for (std::size_t r = 0; r < rows; ++r) {                                                                \
      std::int32_t* ar = acc + r * out;                                                                     \
      for (std::size_t o = 0; o < out; ++o) {                                                               \
        std::int64_t v = (std::int64_t{ar[o]} * m[o] + b[o]) >> sh;                                         \
        v = v < -lim ? -lim : v;                                                                            \
        ar[o] = static_cast<std::int32_t>(v > lim ? lim : v);                                               \
      }                                                                                                     \
    }                                                                                                       \
  }                                                                                                         \
  ATTR inline std::int64_t weights(const std::int32_t* s, std::size_t n, int shift, const std::int32_t* expa,  \
                                   std::size_t na, std::int16_t* e) {                                       \
    std::int32_t mx = s[0];                                                                                 \
    for (std::size_t j = 1; j < n; ++j) mx = s[j] > mx ? s[j] : mx;                                         \
    std::int64_t z = 0;                                                                                     \
    for (std::size_t j = 0; j < n; ++j) {                                                                   \
      const std::uint64_t idx = static_cast<std::uint64_t>(std::int64_t{mx} - s[j]) >> shift;               \
      const std::int32_t v = expa[idx < na ? idx : na - 1];                                                 \
      e[j] = static_cast<std::int16_t>(v);                                                                  \
      z += v;                                                                                               \
    }                                                                                                       \
    return z;                                                                                               \
  }                                                                                                         \
  ATTR inline void scores(const std::int16_t* q, std::size_t H, const std::int16_t* kc, std::size_t n,     \
                          std::int32_t* s) {                                                                \
    const std::size_t sl = score_len(n);                                                                    \
    for (std::size_t b = 0; b * kLanes < n; ++b) {                                                          \
      const std::int16_t* kb = kc + b * kLanes * kHdp;                                                      \
      for (std::size_t h = 0; h < H; ++h) {                                                                 \
        std::int32_t acc[kLanes] = {};                                                                      \
        const std::int16_t* qh = q + h * kHdp;                                                              \
        for (std::size_t p = 0; p < kHdp / 2; ++p) {                                                        \
          const std::int32_t q0 = qh[2 * p], q1 = qh[2 * p + 1];                                            \
          const std::int16_t* kp = kb + p * 2 * kLanes;                                                     \
          for (std::size_t l = 0; l < kLanes; ++l) acc[l] += q0 * kp[2 * l] + q1 * kp[2 * l + 1];           \
        }                                                                                                   \
        for (std::size_t l = 0; l < kLanes; ++l) s[h * sl + b * kLanes + l] = acc[l];                       \
      }                                                                                                     \
    }                                                                                                       \
  }                                                                                                         \
  ATTR inline void values(const std::int16_t* e, std::size_t H, const std::int16_t* vc, std::size_t n,      \
                          std::int64_t* a) {                                                                \
    const std::size_t wl = weight_len(n), pairs = wl / 2;                                                   \
    for (std::size_t h = 0; h < H; ++h) {                                                                   \
      const std::int16_t* eh = e + h * wl;                                                                  \
      for (std::size_t i0 = 0; i0 < pairs; i0 += kBlock / 2) {                                              \
        const std::size_t i1 = std::min(pairs, i0 + kBlock / 2);                                            \
        std::int32_t blk[kHdp] = {};                                                                        \
        for (std::size_t i = i0; i < i1; ++i) {                                                             \
          const std::int32_t e0 = eh[2 * i], e1 = eh[2 * i + 1];                                            \
          const std::int16_t* vp = vc + i * 2 * kHdp;                                                       \
          for (std::size_t c = 0; c < kHdp; ++c) blk[c] += e0 * vp[2 * c] + e1 * vp[2 * c + 1];             \
        }                                                                                                   \
        for (std::size_t c = 0; c < kHdp; ++c) a[h * kHdp + c] += blk[c];                                   \
      }                                                                                                     \
    }                                                                                                       \
  }                                                                                                         \
  inline constexpr Kernels table{&linear, &requant, &weights, &scores, &values, NAME};                      \
  }

PYLLMCODEC_EXACT_KERNELS(generic, , "generic")
#if PYLLMCODEC_DISPATCH
PYLLMCODEC_EXACT_KERNELS(avx2, __attribute__((target("avx2,fma,bmi,bmi2,popcnt"))), "avx2")
PYLLMCODEC_EXACT_KERNELS(avx512, __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,bmi2"))),
                         "avx512-vnni")
#endif
#undef PYLLMCODEC_EXACT_KERNELS

#if PYLLMCODEC_DISPATCH
// two int16 (a pair) as one int32, for a broadcast to every lane
inline std::int32_t pair_at(const std::int16_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// AVX-512 VNNI attention: vpdpwssd (wrapping int16 pair multiply-adds into
// int32 lanes; the bounds above rule out any wrap), every load shared by up
// to four heads.  Same results as the loops above, in the same cache layout.
namespace avx512vnni {
#define PYLLMCODEC_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,bmi2")))


// One key block (16 positions) x G heads: each key load serves every head.
// (Several blocks at once, for more independent chains, measured slower:
// the kernel is bound by reading the cache, not by the multiply-adds.)
template <int G>
PYLLMCODEC_VNNI void scores_g(const std::int16_t* q, const std::int16_t* kc, std::size_t n, std::int32_t* s,
                              std::size_t sl) {
  for (std::size_t b = 0; b * kLanes < n; ++b) {
    const std::int16_t* kb = kc + b * kLanes * kHdp;
    __m512i acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_si512();
    for (std::size_t p = 0; p < kHdp / 2; ++p) {
      const __m512i kv = _mm512_loadu_si512(kb + p * 2 * kLanes);
      for (int g = 0; g < G; ++g) {
        acc[g] = _mm512_dpwssd_epi32(acc[g], _mm512_set1_epi32(pair_at(q + g * kHdp + 2 * p)), kv);
      }
    }
    for (int g = 0; g < G; ++g) _mm512_storeu_si512(s + g * sl + b * kLanes, acc[g]);
  }
}

// Linear: NR rows x NOB blocks of 16 outputs, from the packed weights; no
// horizontal sums.  Each weight load serves NR rows, each broadcast NOB blocks.
template <int NR, int NOB>
PYLLMCODEC_VNNI inline void linear_tile(const std::int16_t* x, std::size_t in, const std::int16_t* wp,
                                        std::size_t ob0, std::size_t out, std::int32_t* acc) {
  const std::size_t pairs = in / 2;
  __m512i a[NR][NOB];
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < NOB; ++c) a[r][c] = _mm512_setzero_si512();
  for (std::size_t p = 0; p < pairs; ++p) {
    __m512i wv[NOB];
    for (int c = 0; c < NOB; ++c) wv[c] = _mm512_loadu_si512(wp + ((ob0 + c) * pairs + p) * 32);
    for (int r = 0; r < NR; ++r) {
      const __m512i xb = _mm512_set1_epi32(pair_at(x + r * in + 2 * p));
      for (int c = 0; c < NOB; ++c) a[r][c] = _mm512_dpwssd_epi32(a[r][c], xb, wv[c]);
    }
  }
  for (int c = 0; c < NOB; ++c) {
    const std::size_t o = (ob0 + c) * 16;
    const __mmask16 keep = out - o >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (out - o)) - 1);
    for (int r = 0; r < NR; ++r) _mm512_mask_storeu_epi32(acc + r * out + o, keep, a[r][c]);
  }
}

// The hot tile (8 rows x 32 outputs, 16 accumulators) with named variables:
// GCC 12 copies accumulator arrays between registers on every multiply-add.
PYLLMCODEC_VNNI inline void linear_tile82(const std::int16_t* x, std::size_t in, const std::int16_t* wp,
                                          std::size_t ob0, std::size_t out, std::int32_t* acc) {
  const std::size_t pairs = in / 2;
  const std::int16_t* w0p = wp + ob0 * pairs * 32;
  const std::int16_t* w1p = w0p + pairs * 32;
#define PYLLMCODEC_Z(n) __m512i a##n##0 = _mm512_setzero_si512(), a##n##1 = _mm512_setzero_si512();
  PYLLMCODEC_Z(0) PYLLMCODEC_Z(1) PYLLMCODEC_Z(2) PYLLMCODEC_Z(3)
  PYLLMCODEC_Z(4) PYLLMCODEC_Z(5) PYLLMCODEC_Z(6) PYLLMCODEC_Z(7)
#undef PYLLMCODEC_Z
  for (std::size_t p = 0; p < pairs; ++p) {
    const __m512i w0 = _mm512_loadu_si512(w0p + p * 32), w1 = _mm512_loadu_si512(w1p + p * 32);
#define PYLLMCODEC_R(n)                                                      \
  {                                                                          \
    const __m512i b = _mm512_set1_epi32(pair_at(x + (n) * in + 2 * p));      \
    a##n##0 = _mm512_dpwssd_epi32(a##n##0, b, w0);                           \
    a##n##1 = _mm512_dpwssd_epi32(a##n##1, b, w1);                           \
  }
    PYLLMCODEC_R(0) PYLLMCODEC_R(1) PYLLMCODEC_R(2) PYLLMCODEC_R(3)
    PYLLMCODEC_R(4) PYLLMCODEC_R(5) PYLLMCODEC_R(6) PYLLMCODEC_R(7)
#undef PYLLMCODEC_R
  }
  const std::size_t o = ob0 * 16;
  const __mmask16 k1 = out - o - 16 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (out - o - 16)) - 1);
#define PYLLMCODEC_S(n)                                                      \
  _mm512_storeu_si512(acc + (n) * out + o, a##n##0);                         \
  _mm512_mask_storeu_epi32(acc + (n) * out + o + 16, k1, a##n##1);
  PYLLMCODEC_S(0) PYLLMCODEC_S(1) PYLLMCODEC_S(2) PYLLMCODEC_S(3)
  PYLLMCODEC_S(4) PYLLMCODEC_S(5) PYLLMCODEC_S(6) PYLLMCODEC_S(7)
#undef PYLLMCODEC_S
}

template <int NR>
PYLLMCODEC_VNNI void linear_rows(const std::int16_t* x, std::size_t in, const std::int16_t* wp, std::size_t out,
                                 std::int32_t* acc) {
  const std::size_t nob = (out + 15) / 16;
  std::size_t ob = 0;
  for (; ob + 2 <= nob; ob += 2) {
    if constexpr (NR == 8) {
      linear_tile82(x, in, wp, ob, out, acc);
    } else {
      linear_tile<NR, 2>(x, in, wp, ob, out, acc);
    }
  }
  if (ob < nob) linear_tile<NR, 1>(x, in, wp, ob, out, acc);
}

PYLLMCODEC_VNNI void linear(const std::int16_t* x, std::size_t rows, const Linear& l, std::int32_t* acc) {
  if (l.wp.empty()) return avx512::linear(x, rows, l, acc);  // odd `in`: the plain loops
  const std::size_t in = l.in, out = l.out;
  const std::int16_t* wp = l.wp.data();
  std::size_t r = 0;
  for (; r + 8 <= rows; r += 8) linear_rows<8>(x + r * in, in, wp, out, acc + r * out);
  switch (rows - r) {
    case 7: linear_rows<7>(x + r * in, in, wp, out, acc + r * out); break;
    case 6: linear_rows<6>(x + r * in, in, wp, out, acc + r * out); break;
    case 5: linear_rows<5>(x + r * in, in, wp, out, acc + r * out); break;
    case 4: linear_rows<4>(x + r * in, in, wp, out, acc + r * out); break;
    case 3: linear_rows<3>(x + r * in, in, wp, out, acc + r * out); break;
    case 2: linear_rows<2>(x + r * in, in, wp, out, acc + r * out); break;
    case 1: linear_rows<1>(x + r * in, in, wp, out, acc + r * out); break;
    default: break;
  }
}

// Three heads (the shipped model's) with named accumulators (see linear_tile82).
PYLLMCODEC_VNNI void scores3(const std::int16_t* q, const std::int16_t* kc, std::size_t n, std::int32_t* s,
                             std::size_t sl) {
  for (std::size_t b = 0; b * kLanes < n; ++b) {
    const std::int16_t* kb = kc + b * kLanes * kHdp;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512(), a2 = _mm512_setzero_si512();
    for (std::size_t p = 0; p < kHdp / 2; ++p) {
      const __m512i kv = _mm512_loadu_si512(kb + p * 2 * kLanes);
      a0 = _mm512_dpwssd_epi32(a0, _mm512_set1_epi32(pair_at(q + 2 * p)), kv);
      a1 = _mm512_dpwssd_epi32(a1, _mm512_set1_epi32(pair_at(q + kHdp + 2 * p)), kv);
      a2 = _mm512_dpwssd_epi32(a2, _mm512_set1_epi32(pair_at(q + 2 * kHdp + 2 * p)), kv);
    }
    _mm512_storeu_si512(s + b * kLanes, a0);
    _mm512_storeu_si512(s + sl + b * kLanes, a1);
    _mm512_storeu_si512(s + 2 * sl + b * kLanes, a2);
  }
}

PYLLMCODEC_VNNI void scores(const std::int16_t* q, std::size_t H, const std::int16_t* kc, std::size_t n,
                            std::int32_t* s) {
  const std::size_t sl = score_len(n);
  if (H == 3) return scores3(q, kc, n, s, sl);
  for (std::size_t h = 0; h < H; h += 4) {
    const std::int16_t* qh = q + h * kHdp;
    std::int32_t* sh = s + h * sl;
    switch (std::min<std::size_t>(4, H - h)) {
      case 1: scores_g<1>(qh, kc, n, sh, sl); break;
      case 2: scores_g<2>(qh, kc, n, sh, sl); break;
      case 3: scores_g<3>(qh, kc, n, sh, sl); break;
      default: scores_g<4>(qh, kc, n, sh, sl); break;
    }
  }
}

template <int G>
PYLLMCODEC_VNNI void values_g(const std::int16_t* e, std::size_t wl, const std::int16_t* vc, std::int64_t* a) {
  constexpr int CB = kHdp / 16;
  const std::size_t pairs = wl / 2;
  alignas(64) std::int32_t tmp[16];
  for (std::size_t i0 = 0; i0 < pairs; i0 += kBlock / 2) {
    const std::size_t i1 = std::min(pairs, i0 + kBlock / 2);
    __m512i acc[G][CB];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < CB; ++c) acc[g][c] = _mm512_setzero_si512();
    for (std::size_t i = i0; i < i1; ++i) {
      const std::int16_t* vp = vc + i * 2 * kHdp;
      __m512i vv[CB];
      for (int c = 0; c < CB; ++c) vv[c] = _mm512_loadu_si512(vp + c * 32);
      for (int g = 0; g < G; ++g) {
        const __m512i eb = _mm512_set1_epi32(pair_at(e + g * wl + 2 * i));
        for (int c = 0; c < CB; ++c) acc[g][c] = _mm512_dpwssd_epi32(acc[g][c], eb, vv[c]);
      }
    }
    for (int g = 0; g < G; ++g) {
      for (int c = 0; c < CB; ++c) {
        _mm512_store_si512(tmp, acc[g][c]);
        std::int64_t* ag = a + g * kHdp + c * 16;
        for (int l = 0; l < 16; ++l) ag[l] += tmp[l];
      }
    }
  }
}

// Three heads with named accumulators (see linear_tile82).
PYLLMCODEC_VNNI void values3(const std::int16_t* e, std::size_t wl, const std::int16_t* vc, std::int64_t* a) {
  const std::size_t pairs = wl / 2;
  alignas(64) std::int32_t tmp[16];
  for (std::size_t i0 = 0; i0 < pairs; i0 += kBlock / 2) {
    const std::size_t i1 = std::min(pairs, i0 + kBlock / 2);
#define PYLLMCODEC_Z(g) __m512i a##g##0 = _mm512_setzero_si512(), a##g##1 = _mm512_setzero_si512(), \
                                a##g##2 = _mm512_setzero_si512(), a##g##3 = _mm512_setzero_si512();
    PYLLMCODEC_Z(0) PYLLMCODEC_Z(1) PYLLMCODEC_Z(2)
#undef PYLLMCODEC_Z
    for (std::size_t i = i0; i < i1; ++i) {
      const std::int16_t* vp = vc + i * 2 * kHdp;
      const __m512i v0 = _mm512_loadu_si512(vp), v1 = _mm512_loadu_si512(vp + 32), v2 = _mm512_loadu_si512(vp + 64),
                    v3 = _mm512_loadu_si512(vp + 96);
#define PYLLMCODEC_G(g)                                                      \
  {                                                                          \
    const __m512i eb = _mm512_set1_epi32(pair_at(e + (g) * wl + 2 * i));     \
    a##g##0 = _mm512_dpwssd_epi32(a##g##0, eb, v0);                          \
    a##g##1 = _mm512_dpwssd_epi32(a##g##1, eb, v1);                          \
    a##g##2 = _mm512_dpwssd_epi32(a##g##2, eb, v2);                          \
    a##g##3 = _mm512_dpwssd_epi32(a##g##3, eb, v3);                          \
  }
      PYLLMCODEC_G(0) PYLLMCODEC_G(1) PYLLMCODEC_G(2)
#undef PYLLMCODEC_G
    }
#define PYLLMCODEC_F(g, c)                                                   \
  _mm512_store_si512(tmp, a##g##c);                                          \
  for (int l = 0; l < 16; ++l) a[(g) * kHdp + (c) * 16 + l] += tmp[l];
    PYLLMCODEC_F(0, 0) PYLLMCODEC_F(0, 1) PYLLMCODEC_F(0, 2) PYLLMCODEC_F(0, 3)
    PYLLMCODEC_F(1, 0) PYLLMCODEC_F(1, 1) PYLLMCODEC_F(1, 2) PYLLMCODEC_F(1, 3)
    PYLLMCODEC_F(2, 0) PYLLMCODEC_F(2, 1) PYLLMCODEC_F(2, 2) PYLLMCODEC_F(2, 3)
#undef PYLLMCODEC_F
  }
}

PYLLMCODEC_VNNI void values(const std::int16_t* e, std::size_t H, const std::int16_t* vc, std::size_t n,
                            std::int64_t* a) {
  const std::size_t wl = weight_len(n);
  if (H == 3) return values3(e, wl, vc, a);
  for (std::size_t h = 0; h < H; h += 4) {
    const std::int16_t* eh = e + h * wl;
    std::int64_t* ah = a + h * kHdp;
    switch (std::min<std::size_t>(4, H - h)) {
      case 1: values_g<1>(eh, wl, vc, ah); break;
      case 2: values_g<2>(eh, wl, vc, ah); break;
      case 3: values_g<3>(eh, wl, vc, ah); break;
      default: values_g<4>(eh, wl, vc, ah); break;
    }
  }
}

// Softmax weights, 16 positions at a time: the max, then mx - s as uint32
// (s is int32 and mx >= s, so the difference fits 32 unsigned bits), a
// logical shift, an unsigned min and a gather from the table.
PYLLMCODEC_VNNI std::int64_t weights(const std::int32_t* s, std::size_t n, int shift, const std::int32_t* expa,
                                     std::size_t na, std::int16_t* e) {
  const std::size_t full = n / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1);
  __m512i vmx = _mm512_set1_epi32(INT32_MIN);
  for (std::size_t j = 0; j < full; j += 16) vmx = _mm512_max_epi32(vmx, _mm512_loadu_si512(s + j));
  if (tail) vmx = _mm512_mask_max_epi32(vmx, tail, vmx, _mm512_maskz_loadu_epi32(tail, s + full));
  const __m512i mx = _mm512_set1_epi32(_mm512_reduce_max_epi32(vmx));
  const __m512i last = _mm512_set1_epi32(static_cast<std::int32_t>(na - 1));
  const __m128i sh = _mm_cvtsi32_si128(shift);
  __m512i z = _mm512_setzero_si512();  // int32 lanes: n * 2^14 < 2^24
  for (std::size_t j = 0; j < n; j += 16) {
    const __mmask16 k = j < full ? __mmask16(0xFFFF) : tail;
    const __m512i d = _mm512_sub_epi32(mx, _mm512_maskz_loadu_epi32(k, s + j));
    const __m512i idx = _mm512_min_epu32(_mm512_srl_epi32(d, sh), last);
    const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, idx, expa, 4);
    _mm256_mask_storeu_epi16(e + j, k, _mm512_cvtepi32_epi16(v));
    z = _mm512_add_epi32(z, v);
  }
  return _mm512_reduce_add_epi32(z);
}

inline constexpr Kernels table{&linear, &avx512::requant, &weights, &scores, &values, "avx512-vnni"};
#undef PYLLMCODEC_VNNI
}  // namespace avx512vnni
#endif

#if PYLLMCODEC_DISPATCH
// AVX2 (no VNNI): vpmaddwd on int16 pairs into int32 lanes (it wraps only for
// -32768 * -32768 twice, which the bounds above rule out), in the same cache
// and weight layouts as the AVX-512 copy; a 256-bit register holds 8 lanes,
// so a block of 16 outputs or positions takes two.  Same results.
namespace avx2k {
#define PYLLMCODEC_V256 __attribute__((target("avx2,fma,bmi,bmi2,popcnt")))

PYLLMCODEC_V256 inline __m256i load(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
PYLLMCODEC_V256 inline void store(void* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }

// NR rows x one block of 16 outputs (two halves) from the packed weights; each weight load serves NR rows
template <int NR>
PYLLMCODEC_V256 inline void linear_tile(const std::int16_t* x, std::size_t in, const std::int16_t* wp, std::size_t ob,
                                        std::size_t out, std::int32_t* acc) {
  const std::size_t pairs = in / 2;
  const std::int16_t* wb = wp + ob * pairs * 32;
  __m256i a[NR][2];
  for (int r = 0; r < NR; ++r) a[r][0] = a[r][1] = _mm256_setzero_si256();
  for (std::size_t p = 0; p < pairs; ++p) {
    const __m256i w0 = load(wb + p * 32), w1 = load(wb + p * 32 + 16);
    for (int r = 0; r < NR; ++r) {
      const __m256i xb = _mm256_set1_epi32(pair_at(x + r * in + 2 * p));
      a[r][0] = _mm256_add_epi32(a[r][0], _mm256_madd_epi16(xb, w0));
      a[r][1] = _mm256_add_epi32(a[r][1], _mm256_madd_epi16(xb, w1));
    }
  }
  const std::size_t o = ob * 16;
  if (out - o >= 16) {
    for (int r = 0; r < NR; ++r) {
      store(acc + r * out + o, a[r][0]);
      store(acc + r * out + o + 8, a[r][1]);
    }
  } else {
    alignas(32) std::int32_t tmp[16];
    for (int r = 0; r < NR; ++r) {
      store(tmp, a[r][0]);
      store(tmp + 8, a[r][1]);
      std::memcpy(acc + r * out + o, tmp, (out - o) * sizeof(std::int32_t));
    }
  }
}

template <int NR>
PYLLMCODEC_V256 void linear_rows(const std::int16_t* x, std::size_t in, const std::int16_t* wp, std::size_t out,
                                 std::int32_t* acc) {
  const std::size_t nob = (out + 15) / 16;
  for (std::size_t ob = 0; ob < nob; ++ob) linear_tile<NR>(x, in, wp, ob, out, acc);
}

PYLLMCODEC_V256 void linear(const std::int16_t* x, std::size_t rows, const Linear& l, std::int32_t* acc) {
  if (l.wp.empty()) return avx2::linear(x, rows, l, acc);  // odd `in`: the plain loops
  const std::size_t in = l.in, out = l.out;
  const std::int16_t* wp = l.wp.data();
  std::size_t r = 0;
  for (; r + 6 <= rows; r += 6) linear_rows<6>(x + r * in, in, wp, out, acc + r * out);
  switch (rows - r) {
    case 5: linear_rows<5>(x + r * in, in, wp, out, acc + r * out); break;
    case 4: linear_rows<4>(x + r * in, in, wp, out, acc + r * out); break;
    case 3: linear_rows<3>(x + r * in, in, wp, out, acc + r * out); break;
    case 2: linear_rows<2>(x + r * in, in, wp, out, acc + r * out); break;
    case 1: linear_rows<1>(x + r * in, in, wp, out, acc + r * out); break;
    default: break;
  }
}

// one key block (16 positions: two halves of 8) x G heads: each key load serves every head
template <int G>
PYLLMCODEC_V256 void scores_g(const std::int16_t* q, const std::int16_t* kc, std::size_t n, std::int32_t* s,
                              std::size_t sl) {
  for (std::size_t b = 0; b * kLanes < n; ++b) {
    const std::int16_t* kb = kc + b * kLanes * kHdp;
    __m256i a0[G], a1[G];
    for (int g = 0; g < G; ++g) a0[g] = a1[g] = _mm256_setzero_si256();
    for (std::size_t p = 0; p < kHdp / 2; ++p) {
      const __m256i k0 = load(kb + p * 2 * kLanes), k1 = load(kb + p * 2 * kLanes + 16);
      for (int g = 0; g < G; ++g) {
        const __m256i qq = _mm256_set1_epi32(pair_at(q + g * kHdp + 2 * p));
        a0[g] = _mm256_add_epi32(a0[g], _mm256_madd_epi16(qq, k0));
        a1[g] = _mm256_add_epi32(a1[g], _mm256_madd_epi16(qq, k1));
      }
    }
    for (int g = 0; g < G; ++g) {
      store(s + g * sl + b * kLanes, a0[g]);
      store(s + g * sl + b * kLanes + 8, a1[g]);
    }
  }
}

PYLLMCODEC_V256 void scores(const std::int16_t* q, std::size_t H, const std::int16_t* kc, std::size_t n,
                            std::int32_t* s) {
  const std::size_t sl = score_len(n);
  for (std::size_t h = 0; h < H; h += 4) {
    const std::int16_t* qh = q + h * kHdp;
    std::int32_t* sh = s + h * sl;
    switch (std::min<std::size_t>(4, H - h)) {
      case 1: scores_g<1>(qh, kc, n, sh, sl); break;
      case 2: scores_g<2>(qh, kc, n, sh, sl); break;
      case 3: scores_g<3>(qh, kc, n, sh, sl); break;
      default: scores_g<4>(qh, kc, n, sh, sl); break;
    }
  }
}

// G heads (<= 3) x one half of the channels (32: four registers of 8) over pairs [i0, i1)
template <int G>
PYLLMCODEC_V256 void values_half(const std::int16_t* e, std::size_t wl, const std::int16_t* vc, std::size_t i0,
                                 std::size_t i1, int half, std::int64_t* a) {
  __m256i acc[G][4];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < 4; ++c) acc[g][c] = _mm256_setzero_si256();
  for (std::size_t i = i0; i < i1; ++i) {
    const std::int16_t* vp = vc + i * 2 * kHdp + half * 64;
    __m256i eb[G];
    for (int g = 0; g < G; ++g) eb[g] = _mm256_set1_epi32(pair_at(e + g * wl + 2 * i));
    for (int c = 0; c < 4; ++c) {
      const __m256i v = load(vp + c * 16);
      for (int g = 0; g < G; ++g) acc[g][c] = _mm256_add_epi32(acc[g][c], _mm256_madd_epi16(eb[g], v));
    }
  }
  alignas(32) std::int32_t tmp[8];
  for (int g = 0; g < G; ++g) {
    for (int c = 0; c < 4; ++c) {
      store(tmp, acc[g][c]);
      std::int64_t* ag = a + g * kHdp + half * 32 + c * 8;
      for (int l = 0; l < 8; ++l) ag[l] += tmp[l];
    }
  }
}

PYLLMCODEC_V256 void values(const std::int16_t* e, std::size_t H, const std::int16_t* vc, std::size_t n,
                            std::int64_t* a) {
  const std::size_t wl = weight_len(n), pairs = wl / 2;
  for (std::size_t i0 = 0; i0 < pairs; i0 += kBlock / 2) {
    const std::size_t i1 = std::min(pairs, i0 + kBlock / 2);
    for (int half = 0; half < 2; ++half) {
      for (std::size_t h = 0; h < H; h += 3) {
        const std::int16_t* eh = e + h * wl;
        std::int64_t* ah = a + h * kHdp;
        switch (std::min<std::size_t>(3, H - h)) {
          case 1: values_half<1>(eh, wl, vc, i0, i1, half, ah); break;
          case 2: values_half<2>(eh, wl, vc, i0, i1, half, ah); break;
          default: values_half<3>(eh, wl, vc, i0, i1, half, ah); break;
        }
      }
    }
  }
}

// softmax weights, 8 positions at a time (as the AVX-512 copy: mx - s fits 32 unsigned bits)
PYLLMCODEC_V256 std::int64_t weights(const std::int32_t* s, std::size_t n, int shift, const std::int32_t* expa,
                                     std::size_t na, std::int16_t* e) {
  const std::size_t full = n / 8 * 8;
  std::int32_t m = s[0];
  __m256i vmx = _mm256_set1_epi32(INT32_MIN);
  for (std::size_t j = 0; j < full; j += 8) vmx = _mm256_max_epi32(vmx, load(s + j));
  alignas(32) std::int32_t t[8];
  store(t, vmx);
  for (int l = 0; l < 8; ++l) m = std::max(m, t[l]);
  for (std::size_t j = full; j < n; ++j) m = std::max(m, s[j]);
  const __m256i mx = _mm256_set1_epi32(m);
  const __m256i last = _mm256_set1_epi32(static_cast<std::int32_t>(na - 1));
  const __m128i sh = _mm_cvtsi32_si128(shift);
  __m256i z = _mm256_setzero_si256();  // int32 lanes: n * 2^14 < 2^24
  for (std::size_t j = 0; j < full; j += 8) {
    const __m256i idx = _mm256_min_epu32(_mm256_srl_epi32(_mm256_sub_epi32(mx, load(s + j)), sh), last);
    const __m256i v = _mm256_i32gather_epi32(expa, idx, 4);
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(v, v), 0x08);  // v <= 2^14: no saturation
    _mm_storeu_si128(reinterpret_cast<__m128i*>(e + j), _mm256_castsi256_si128(p));
    z = _mm256_add_epi32(z, v);
  }
  store(t, z);
  std::int64_t zs = 0;
  for (int l = 0; l < 8; ++l) zs += t[l];
  for (std::size_t j = full; j < n; ++j) {
    const std::uint64_t idx = static_cast<std::uint64_t>(std::int64_t{m} - s[j]) >> shift;
    const std::int32_t v = expa[idx < na ? idx : na - 1];
    e[j] = static_cast<std::int16_t>(v);
    zs += v;
  }
  return zs;
}

inline constexpr Kernels table{&linear, &avx2::requant, &weights, &scores, &values, "avx2"};
#undef PYLLMCODEC_V256
}  // namespace avx2k
#endif

// The copy for this CPU's kernel_level() (quantizer.hpp), chosen once.
inline const Kernels& kernels() {
  switch (kernel_level()) {
#if PYLLMCODEC_DISPATCH
    case KernelLevel::avx512vnni: return avx512vnni::table;
    case KernelLevel::avx2: return avx2k::table;
#endif
    default: return generic::table;
  }
}

// ---------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------

struct Layer {
  Linear q, kv, o, fc1, fc2;
  int att_shift = 0;
  std::vector<std::int16_t> gelu;  // 2 * kGelu + 1 entries
};

// What a Model is built from: plain arrays (bindings.cpp fills it from the
// bundle's dict and checks dtypes and shapes; Model checks the bounds).
struct LinearSpec {
  const std::int8_t* w;
  const std::int64_t* m;
  const std::int64_t* b;
  std::size_t out, in;
  std::int64_t sh;
};

// The int16 key/value caches of a batch of rows, in the kernels' layout (see
// the top of the file); `kstride` int16 per (layer, row) for each.
class State {
 public:
  State(std::size_t batch, std::size_t n_layer, std::size_t ctx, std::size_t hd)
      : batch_(batch), n_layer_(n_layer), ctx_(ctx), hd_(hd), stride_(score_len(ctx) * kHdp),
        k_(n_layer * batch * stride_, 0), v_(n_layer * batch * stride_, 0) {}
  std::size_t batch() const { return batch_; }
  bool fits(std::size_t n_layer, std::size_t ctx, std::size_t hd) const {
    return n_layer == n_layer_ && ctx == ctx_ && hd == hd_;
  }
  std::size_t ctx() const { return ctx_; }
  std::size_t position = 0;
  std::size_t nbytes() const { return (k_.size() + v_.size()) * sizeof(std::int16_t); }
  const std::int16_t* k(std::size_t layer, std::size_t row) const { return k_.data() + (layer * batch_ + row) * stride_; }
  const std::int16_t* v(std::size_t layer, std::size_t row) const { return v_.data() + (layer * batch_ + row) * stride_; }
  // The key and value at position t of (layer, row): hd_ channels each, the padding stays 0.
  void put(std::size_t layer, std::size_t row, std::size_t t, const std::int16_t* key, const std::int16_t* value) {
    std::int16_t* kb = k_.data() + (layer * batch_ + row) * stride_ + t / kLanes * kLanes * kHdp + 2 * (t % kLanes);
    for (std::size_t c = 0; c < hd_; ++c) kb[c / 2 * 2 * kLanes + c % 2] = key[c];
    std::int16_t* vp = v_.data() + (layer * batch_ + row) * stride_ + t / 2 * 2 * kHdp + t % 2;
    for (std::size_t c = 0; c < hd_; ++c) vp[2 * c] = value[c];
  }

 private:
  std::size_t batch_, n_layer_, ctx_, hd_, stride_;
  std::vector<std::int16_t> k_, v_;
};

class Model {
 public:
  std::size_t d = 0, n_head = 0, head_dim = 0, ctx = 0, d_mlp = 0, vocab = 0, n_tok = 0;
  std::int64_t ln_eps = 1, ln_k = 1;
  std::vector<std::int32_t> tok, pos;  // [n_tok][d], [ctx][d]
  std::vector<Layer> layers;
  Linear head;
  std::vector<std::int32_t> expa, expl;

  // Every bound the arithmetic relies on; InvalidInput names what breaks one.
  static void check_linear(const LinearSpec& s, std::int64_t max_in, const std::string& name) {
    if (s.sh < 1 || s.sh > 62) throw InvalidInput(name + ".sh = " + std::to_string(s.sh) + " is outside [1, 62]");
    std::int64_t worst = 0;
    for (std::size_t o = 0; o < s.out; ++o) {
      if (s.m[o] < 0 || s.m[o] >= (std::int64_t{1} << 31)) throw InvalidInput(name + ".m has a multiplier outside [0, 2**31)");
      if (s.b[o] >= (std::int64_t{1} << 61) || s.b[o] <= -(std::int64_t{1} << 61)) {
        throw InvalidInput(name + ".b has an offset beyond 2**61");
      }
      std::int64_t sum = 0;
      for (std::size_t i = 0; i < s.in; ++i) {
        const int w = s.w[o * s.in + i];
        if (w == -128) throw InvalidInput(name + ".w holds -128 (weights are in [-127, 127])");
        sum += w < 0 ? -w : w;
      }
      worst = std::max(worst, sum);
    }
    if (max_in * worst >= (std::int64_t{1} << 31)) throw InvalidInput(name + ": its int32 accumulator could overflow");
  }

  static Linear make_linear(const LinearSpec& s, std::int64_t max_in, std::int64_t lim, const std::string& name) {
    check_linear(s, max_in, name);
    Linear l;
    l.out = s.out;
    l.in = s.in;
    l.w.assign(s.w, s.w + s.out * s.in);
    if (s.in % 2 == 0) {  // the VNNI kernel's copy (see Linear)
      const std::size_t pairs = s.in / 2, nob = (s.out + 15) / 16;
      l.wp.assign(nob * pairs * 32, 0);
      for (std::size_t o = 0; o < s.out; ++o)
        for (std::size_t i = 0; i < s.in; ++i) l.wp[((o / 16) * pairs + i / 2) * 32 + 2 * (o % 16) + i % 2] = s.w[o * s.in + i];
    }
    l.m.assign(s.m, s.m + s.out);
    l.b.assign(s.b, s.b + s.out);
    l.sh = static_cast<int>(s.sh);
    l.lim = lim;
    return l;
  }

  static void check_table(const std::vector<std::int32_t>& t, std::int64_t first_max, const std::string& name) {
    if (t.empty() || t.back() != 0 || t.front() > first_max) {
      throw InvalidInput("table " + name + " must fall from <= " + std::to_string(first_max) + " to 0");
    }
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i] < 0 || (i > 0 && t[i] > t[i - 1])) throw InvalidInput("table " + name + " is not non-increasing and >= 0");
    }
  }

  void check_all() const {
    if (d == 0 || n_head == 0 || head_dim == 0 || n_head * head_dim != d || head_dim > kMaxHeadDim) {
      throw InvalidInput("bad dimensions: d_model, n_head, head_dim (head_dim <= 64)");
    }
    if (ctx == 0 || ctx > kMaxCtx) throw InvalidInput("ctx must be in [1, 1024]");
    if (ln_eps < 1 || ln_eps > (std::int64_t{1} << 40) || ln_k < 1 || ln_k > (1 << 15)) {
      throw InvalidInput("ln_eps or ln_k out of range");
    }
    for (std::int32_t v : tok) if (v > kRes || v < -kRes) throw InvalidInput("tok has entries beyond +-2**24");
    for (std::int32_t v : pos) if (v > kRes || v < -kRes) throw InvalidInput("pos has entries beyond +-2**24");
    check_table(expa, kExpaOne, "expa");
    if (expa.front() < 1) throw InvalidInput("table expa must start above 0 (the softmax divides by its sum)");
    check_table(expl, kExplOne, "expl");
    if (expl.front() != kExplOne) throw InvalidInput("table expl must start at 2**24");
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const Layer& ly = layers[i];
      if (ly.att_shift < 0 || ly.att_shift > 40) throw InvalidInput("layer" + std::to_string(i) + ".att_shift out of range");
      if (ly.gelu.size() != 2 * kGelu + 1) throw InvalidInput("layer" + std::to_string(i) + ".gelu has the wrong size");
      for (std::int16_t g : ly.gelu) {
        if (g > kGelu || g < -kGelu) throw InvalidInput("table layer" + std::to_string(i) + ".gelu has entries beyond +-16383");
      }
    }
  }

  // One step for rows [r0, r1) of `st` (position st.position, not advanced
  // here).  Out is uint32 (the integers themselves) or float32 (the same
  // integers, exact: every table entry is <= 2^24).
  template <class Out>
  void step_rows(State& st, const std::int64_t* tokens, Out* out, std::size_t r0, std::size_t r1) const {
    const Kernels& K = kernels();
    const std::size_t R = r1 - r0, t = st.position, n = t + 1, hd = head_dim;
    std::vector<std::int64_t> x(R * d);
    std::vector<std::int16_t> h(R * d), att(R * d), g(R * d_mlp);
    std::vector<std::int32_t> acc(R * std::max({d_mlp, vocab, d, 2 * hd}));
    const std::size_t sl = score_len(n), wl = weight_len(n);
    std::vector<std::int32_t> s(n_head * sl);
    std::vector<std::int16_t> e(n_head * wl, 0), q(n_head * kHdp, 0), kt(hd), vt(hd);
    std::vector<std::int64_t> a(n_head * kHdp);
    for (std::size_t r = 0; r < R; ++r) {
      const std::int32_t* te = tok.data() + static_cast<std::size_t>(tokens[r0 + r]) * d;
      const std::int32_t* pe = pos.data() + t * d;
      for (std::size_t i = 0; i < d; ++i) x[r * d + i] = clamp64(std::int64_t{te[i]} + pe[i], -kRes, kRes);
    }
    auto layer_norm = [&]() {
      for (std::size_t r = 0; r < R; ++r) {
        const std::int64_t* xr = x.data() + r * d;
        std::int64_t sum = 0;
        for (std::size_t i = 0; i < d; ++i) sum += xr[i];
        const std::int64_t mean = floor_div(sum, static_cast<std::int64_t>(d));
        std::int64_t q = 0;
        for (std::size_t i = 0; i < d; ++i) q += (xr[i] - mean) * (xr[i] - mean);
        const RDiv by_root(isqrt(q + ln_eps));
        for (std::size_t i = 0; i < d; ++i) {
          h[r * d + i] = static_cast<std::int16_t>(clamp64(by_root((xr[i] - mean) * ln_k), -kAct, kAct));
        }
      }
    };
    // y[r][o] = clamp(floor((acc * M + B) / 2^SH)) for the layer's outputs
    // the layer's outputs, rescaled (K.requant ran on acc right after K.linear)
    auto requant = [&](const Linear& l, std::size_t r, std::size_t o) -> std::int64_t { return acc[r * l.out + o]; };
    for (std::size_t li = 0; li < layers.size(); ++li) {
      const Layer& ly = layers[li];
      layer_norm();
      // keys and values of this position, into the cache
      K.linear(h.data(), R, ly.kv, acc.data());
      K.requant(acc.data(), R, ly.kv);
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t c = 0; c < hd; ++c) {
          kt[c] = static_cast<std::int16_t>(requant(ly.kv, r, c));
          vt[c] = static_cast<std::int16_t>(requant(ly.kv, r, hd + c));
        }
        st.put(li, r0 + r, t, kt.data(), vt.data());
      }
      // queries, then attention per row, every head at once (they share the key/value head)
      K.linear(h.data(), R, ly.q, acc.data());
      K.requant(acc.data(), R, ly.q);
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t hh = 0; hh < n_head; ++hh) {
          for (std::size_t c = 0; c < hd; ++c) q[hh * kHdp + c] = static_cast<std::int16_t>(requant(ly.q, r, hh * hd + c));
        }
        K.scores(q.data(), n_head, st.k(li, r0 + r), n, s.data());
        std::fill(a.begin(), a.end(), 0);
        std::vector<std::int64_t> z(n_head, 0);
        for (std::size_t hh = 0; hh < n_head; ++hh) {
          z[hh] = K.weights(s.data() + hh * sl, n, ly.att_shift, expa.data(), expa.size(), e.data() + hh * wl);
        }
        K.values(e.data(), n_head, st.v(li, r0 + r), n, a.data());
        for (std::size_t hh = 0; hh < n_head; ++hh) {
          const RDiv by_z(z[hh]);
          for (std::size_t c = 0; c < hd; ++c) {
            att[r * d + hh * hd + c] = static_cast<std::int16_t>(by_z(a[hh * kHdp + c] * (std::int64_t{1} << kAttOutShift)));
          }
        }
      }
      K.linear(att.data(), R, ly.o, acc.data());
      K.requant(acc.data(), R, ly.o);
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t c = 0; c < d; ++c) x[r * d + c] = clamp64(x[r * d + c] + requant(ly.o, r, c), -kRes, kRes);
      }
      // MLP
      layer_norm();
      K.linear(h.data(), R, ly.fc1, acc.data());
      K.requant(acc.data(), R, ly.fc1);
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t c = 0; c < d_mlp; ++c) {
          g[r * d_mlp + c] = ly.gelu[static_cast<std::size_t>(requant(ly.fc1, r, c) + kGelu)];
        }
      }
      K.linear(g.data(), R, ly.fc2, acc.data());
      K.requant(acc.data(), R, ly.fc2);
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t c = 0; c < d; ++c) x[r * d + c] = clamp64(x[r * d + c] + requant(ly.fc2, r, c), -kRes, kRes);
      }
    }
    layer_norm();
    K.linear(h.data(), R, head, acc.data());
    K.requant(acc.data(), R, head);
    std::vector<std::int64_t> lg(vocab);
    const std::int64_t last = static_cast<std::int64_t>(expl.size()) - 1;
    for (std::size_t r = 0; r < R; ++r) {
      std::int64_t mx = -kLogit;
      for (std::size_t v = 0; v < vocab; ++v) {
        lg[v] = requant(head, r, v);
        mx = std::max(mx, lg[v]);
      }
      Out* orow = out + (r0 + r) * vocab;
      for (std::size_t v = 0; v < vocab; ++v) {
        orow[v] = static_cast<Out>(expl[static_cast<std::size_t>(std::min(mx - lg[v], last))]);
      }
    }
  }

  // The whole step: rows split over `threads` threads (the result does not depend on it).
  template <class Out>
  void step(State& st, const std::int64_t* tokens, Out* out, int threads) const {
    if (!st.fits(layers.size(), ctx, head_dim)) throw InvalidInput("the state belongs to another model");
    for (std::size_t r = 0; r < st.batch(); ++r) {
      if (tokens[r] < 0 || static_cast<std::size_t>(tokens[r]) >= n_tok) {
        throw InvalidInput("tokens[" + std::to_string(r) + "] = " + std::to_string(tokens[r]) + " is not in [0, " +
                           std::to_string(n_tok) + ")");
      }
    }
    if (st.position >= ctx) throw InvalidInput("the state is full: " + std::to_string(ctx) + " steps taken");
    const std::size_t B = st.batch();
    const std::size_t T = std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(threads), B));
    if (T == 1) {
      step_rows(st, tokens, out, 0, B);
    } else {
      std::vector<std::thread> pool;
      std::vector<std::exception_ptr> errs(T);
      for (std::size_t k = 0; k < T; ++k) {
        const std::size_t r0 = B * k / T, r1 = B * (k + 1) / T;
        pool.emplace_back([&, k, r0, r1]() {
          try {
            step_rows(st, tokens, out, r0, r1);
          } catch (...) {
            errs[k] = std::current_exception();
          }
        });
      }
      for (auto& th : pool) th.join();
      for (auto& e : errs) if (e) std::rethrow_exception(e);
    }
    st.position += 1;
  }
};

}  // namespace exact
}  // namespace pyllmcodec
