// quantizer.hpp -- float32 probabilities -> integer frequency tables.
//
// Plain C++17; knows nothing of Python (csrc/bindings.cpp is the only file
// that includes pybind11).
//
// ---------------------------------------------------------------------------
// READ ME FIRST: the quantizer contract
// ---------------------------------------------------------------------------
// Input: one row p[0..V) of float32 values.  Rows need NOT be normalised.
// Output: frequencies f[0..V) with f[i] >= 1 and sum f[i] == 2^P exactly
// (P = precision), written as a cumulative table cdf[0..V] with cdf[0] = 0,
// cdf[V] = 2^P, cdf[i+1] - cdf[i] = f[i].
//
// Errors (InvalidInput -> ValueError naming the row; never a table): a NaN,
// an infinity or a negative value in the row; a row that sums to zero; a row
// whose sum S (below) is >= 2^100 or overflows.  -0.0 counts as zero;
// subnormals are fine.
//
// The algorithm IS the format: encoder and decoder must agree to the bit, on
// every machine and in every build.  Plain IEEE-754 binary32/binary64
// arithmetic, round-to-nearest-even, no FMA (we build with -ffp-contract=off,
// never -ffast-math), no flush-to-zero (FpEnv below resets MXCSR):
//
//  1. Row sum S, in this fixed order.  For each full block of 32 elements at
//     i (i = 0, 32, 64, ...) and each j in 0..7:
//         q_j = float32( float32(p[i+j] + p[i+8+j]) + float32(p[i+16+j] + p[i+24+j]) )
//         lane_j += double(q_j)                       (lanes start at +0.0)
//     then each remaining element t = 0, 1, ... of the tail (after the last
//     full block): lane_(t % 8) += double(p[i+t]), in increasing t;
//     S = ((lane0+lane1)+(lane2+lane3)) + ((lane4+lane5)+(lane6+lane7)).
//  2. pre = 2^100 if S < 2^-64 else 1   (an exact rescaling of tiny rows)
//     c   = 2^P - V - slack,  slack = 2^P >> 20
//     s32 = float32( double(c) / (S * pre) )
//  3. For i < V-1:  f[i] = 1 + trunc( float32( float32(p[i] * pre) * s32 ) )
//     (see symbol_floor(); trunc == floor since the product is >= 0).
//  4. The last symbol takes the rest:  f[V-1] = 2^P - sum_{i<V-1} f[i],
//     in integer arithmetic; the cdf is the integer prefix sum.
//
// Why f[V-1] >= 1 always (so no fix-up loop, no epsilon patches):
//   u = 2^-24.  Every element goes through two float32 additions in step 1
//   (relative error <= 2u + u^2 each, all terms >= 0) and the double lanes add
//   (V/32 + 8) * 2^-53 <= 2^-37 (V <= kMaxSymbols = 2^21); so
//   S >= S_true * (1 - 2^-22.9).  p*pre is exact (a power of two; pre = 2^100
//   only when every p <= S < 2^-64, so p*2^100 < 2^36 and subnormals scale
//   exactly).  s32 and each product round once more (factor (1+u)^2, the
//   double division adds 2^-53).  Altogether
//       sum_i float32(p_i * pre * s32)  <=  c * (1 + 2^-21).
//   slack = 2^P >> 20 >= 2 * c * 2^-21 covers that for P > 20, and for
//   P <= 20, c * 2^-21 < 1/2; either way the sum is < 2^P - V + 1, a sum of
//   floors is at most the floor of the sum, so sum_{i<V-1} f[i] <= 2^P - 1.
//   Each float32 product is < 2^P - V < 2^31, and a float32 below 2^31 is at
//   most 2^31 - 128, so the int32 conversion never overflows.  The range of
//   s32: S*pre lies in [2^-49, 2^100) and 1 <= c < 2^31, so s32 is a normal
//   float32.  The code still checks f[V-1] >= 1 in integer arithmetic and
//   throws std::logic_error if the proof were ever wrong.
//
// What it costs in compression: the forced minimum mass takes V / 2^P of the
// mass (<= 1.44 * V / 2^P bits per coded symbol: 6.8e-5 bits at V = 50257,
// P = 30); the floors lose about V/2 units, which go to the LAST symbol (the
// rest of the symbols don't get them: <= 0.72 * V / 2^P bits); slack and the
// float32 product cost ~2^-20 of the mass (1.4e-6 bits).
//
// Why float32 products and pair sums: the float->double conversions were the
// bottleneck (one per 4 symbols on AVX2); float32 math needs one conversion
// per 8 symbols in step 3 and one per 16 in step 1, and the proof above shows
// it costs only the 2^-20 slack.  Why the remainder goes to the last symbol
// (not the argmax): then cdf[s] and f[s] follow from S and the prefix
// p[0..s], so the fused encoder stops at the coded symbol and the fused
// decoder at the decoded one, instead of two full passes.
// ---------------------------------------------------------------------------
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define PYLLMCODEC_HAVE_MXCSR 1
#endif

namespace pyllmcodec {

// Misuse or invalid input (maps to Python ValueError).
struct InvalidInput : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Bad, truncated, foreign or mismatched coded data (maps to
// pyllmcodec.CodecError).
struct CorruptData : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace quant {

// Precision range.  P <= 31 so that 2^P fits a uint32 CDF entry; the coder
// keeps range >= 2^48, so range >> P >= 2^17 (coding loss <= 2^-17 relative).
constexpr int kMinPrecision = 2;
constexpr int kMaxPrecision = 31;
// Default P = 30: forced mass V/2^P is 4.7e-5 at V = 50257 and 2.4e-4 at
// V = 262144, and 2^30 still fits an int32, so an accelerator can build the
// CDF with int32 cumsums for the two-phase API.
constexpr int kDefaultPrecision = 30;
// Bound used by the proof (double-lane error (V/32 + 8) * 2^-53 <= 2^-37).
constexpr std::size_t kMaxSymbols = std::size_t{1} << 21;
// Step 1 constants (part of the format: never change).
constexpr std::size_t kSumBlock = 32;  // elements per block
constexpr std::size_t kSumLanes = 8;   // double lanes
constexpr double kTinySum = 0x1p-64;   // below this, pre = 2^100
constexpr float kTinyPre = 0x1p100f;
constexpr double kHugeSum = 0x1p100;  // at or above this: error
constexpr int kSlackShift = 20;        // slack = 2^P >> 20

// Resets the x86 floating-point environment (MXCSR) for the duration of a
// call: round-to-nearest, no flush-to-zero / denormals-are-zero.  Some
// libraries set FTZ/DAZ in the calling thread (e.g. torch.set_flush_denormal),
// which would change the quantizer's bits on subnormal inputs.
class FpEnv {
 public:
#ifdef PYLLMCODEC_HAVE_MXCSR
  FpEnv() : saved_(_mm_getcsr()) { _mm_setcsr(0x1F80); }  // all exceptions masked
  ~FpEnv() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#else
  FpEnv() {}
#endif
};

inline void check_shape(std::size_t V, int precision) {
  if (precision < kMinPrecision || precision > kMaxPrecision) {
    throw InvalidInput("precision must be in [" + std::to_string(kMinPrecision) + ", " +
                       std::to_string(kMaxPrecision) + "], got " + std::to_string(precision));
  }
  if (V < 2) {
    throw InvalidInput("the alphabet needs at least 2 symbols, got V = " + std::to_string(V));
  }
  const std::size_t vmax = std::min(kMaxSymbols, std::size_t{1} << (precision - 1));
  if (V > vmax) {
    throw InvalidInput("V = " + std::to_string(V) + " symbols is too many for precision " +
                       std::to_string(precision) + " (at most min(2^(precision-1), 2^21) = " +
                       std::to_string(vmax) + "); raise the precision");
  }
}

// Cold path: explains why row `row` is invalid.  Returns normally only when
// the row is valid after all (its only sign bits were on -0.0 entries).
inline void check_row_slow(const float* p, std::size_t V, double s, std::size_t row) {
  for (std::size_t i = 0; i < V; ++i) {
    const float x = p[i];
    std::string what;
    if (std::isnan(x)) what = "a NaN";
    else if (std::isinf(x)) what = "an infinity";
    else if (x < 0.0f) what = "a negative value (" + std::to_string(x) + ")";
    if (!what.empty()) {
      throw InvalidInput("probs row " + std::to_string(row) + " has " + what + " at index " +
                         std::to_string(i) + "; probabilities must be finite and >= 0");
    }
  }
  if (!(s > 0.0)) {
    throw InvalidInput("probs row " + std::to_string(row) +
                       " sums to zero; at least one probability must be > 0");
  }
  if (!(s < kHugeSum)) {
    throw InvalidInput("probs row " + std::to_string(row) +
                       " has values too large (its sum must be < 2^100); divide the row by a constant");
  }
}

// The per-row constants of steps 2-3.
struct RowScale {
  float pre;  // 1 or 2^100
  float s32;  // scale
};

// ---------------------------------------------------------------------------
// Kernels.  With GCC/Clang they use portable vector extensions (lowered to
// SSE2 or AVX2 by the compiler; on x86 an AVX2 copy of the row kernels is
// picked at run time, see kernels()).  Every vector operation used is an element-wise IEEE operation
// (add, multiply, float->double, truncating float->int32) or an integer one,
// so every clone and the scalar fallback give identical bits.
// ---------------------------------------------------------------------------
// Vector path: Clang, or GCC >= 12 (__builtin_shufflevector); else scalar.
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && !defined(PYLLMCODEC_SCALAR)
#define PYLLMCODEC_VECTOR 1
#define PYLLMCODEC_INLINE inline __attribute__((always_inline))
#if (defined(__x86_64__) || defined(__i386__)) && !defined(PYLLMCODEC_NO_DISPATCH)
// An AVX2 (x86-64-v3) copy of the row kernels, chosen at run time.  (Not
// GCC's target_clones: its dispatcher is treated as nothrow, so an exception
// from a clone calls std::terminate.)
#define PYLLMCODEC_DISPATCH 1
#endif
#else
#define PYLLMCODEC_VECTOR 0
#define PYLLMCODEC_INLINE inline
#endif

#if PYLLMCODEC_VECTOR
namespace vec {
// Generic vectors no wider than 32 bytes: wider ones are lowered badly
// (through the stack) on AVX2.
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef std::int32_t v8i __attribute__((vector_size(32)));
typedef std::int32_t v4i __attribute__((vector_size(16)));
typedef std::uint32_t v8u __attribute__((vector_size(32)));
PYLLMCODEC_INLINE v8f load(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PYLLMCODEC_INLINE v8u bits(v8f x) {
  v8u u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
// trunc(float32(float32(p * pre) * s32)) for 8 symbols: the vector form of
// symbol_floor().
PYLLMCODEC_INLINE v8i floors(const float* p, v8f pre, v8f s32) {
  return __builtin_convertvector((load(p) * pre) * s32, v8i);
}
PYLLMCODEC_INLINE std::uint32_t hsum(v8i v) {  // integer: any order is exact
  std::uint32_t s = 0;
  for (int j = 0; j < 8; ++j) s += static_cast<std::uint32_t>(v[j]);
  return s;
}
}  // namespace vec
#endif

// Steps 1-2 of the contract: validates the row, returns (pre, s32).
// Validation costs nothing extra on valid rows: a NaN or inf makes the sum
// non-finite, and a negative value has its sign bit set, which an OR of the
// raw bits collects.  Only a row that trips one of these goes to the slow
// exact check (-0.0 also sets the sign bit and is let through there).
PYLLMCODEC_INLINE RowScale row_scale_impl(const float* p, std::size_t V, int precision, std::size_t row) {
  static_assert(kSumLanes == 8 && kSumBlock == 32, "the code below is written for 8 lanes, blocks of 32");
  double lane[kSumLanes];
  std::uint32_t sign = 0;
  std::size_t i = 0;
#if PYLLMCODEC_VECTOR
  vec::v4d a0 = {}, a1 = {};  // lanes 0-3 and 4-7
  vec::v8u b = {};
  for (; i + kSumBlock <= V; i += kSumBlock) {
    const vec::v8f x0 = vec::load(p + i), x1 = vec::load(p + i + 8);
    const vec::v8f x2 = vec::load(p + i + 16), x3 = vec::load(p + i + 24);
    const vec::v8f q = (x0 + x1) + (x2 + x3);
    a0 += __builtin_convertvector(__builtin_shufflevector(q, q, 0, 1, 2, 3), vec::v4d);
    a1 += __builtin_convertvector(__builtin_shufflevector(q, q, 4, 5, 6, 7), vec::v4d);
    b |= (vec::bits(x0) | vec::bits(x1)) | (vec::bits(x2) | vec::bits(x3));
  }
  std::memcpy(lane, &a0, sizeof a0);
  std::memcpy(lane + 4, &a1, sizeof a1);
  for (int j = 0; j < 8; ++j) sign |= b[j];
#else
  for (std::size_t j = 0; j < kSumLanes; ++j) lane[j] = 0.0;
  for (; i + kSumBlock <= V; i += kSumBlock) {
    for (std::size_t j = 0; j < kSumLanes; ++j) {
      const float x0 = p[i + j], x1 = p[i + 8 + j], x2 = p[i + 16 + j], x3 = p[i + 24 + j];
      const float q = (x0 + x1) + (x2 + x3);
      lane[j] += static_cast<double>(q);
      std::uint32_t u[4];
      std::memcpy(&u[0], &x0, 4);
      std::memcpy(&u[1], &x1, 4);
      std::memcpy(&u[2], &x2, 4);
      std::memcpy(&u[3], &x3, 4);
      sign |= (u[0] | u[1]) | (u[2] | u[3]);
    }
  }
#endif
  for (std::size_t t = 0; i + t < V; ++t) {  // tail: element i+t goes to lane t % 8
    const float x = p[i + t];
    lane[t % kSumLanes] += static_cast<double>(x);
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    sign |= u;
  }
  const double s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  if ((sign >> 31) || !(s > 0.0) || !(s < kHugeSum)) check_row_slow(p, V, s, row);
  const std::uint64_t total = std::uint64_t{1} << precision;
  const std::uint64_t c = total - V - (total >> kSlackShift);
  RowScale r;
  r.pre = s < kTinySum ? kTinyPre : 1.0f;
  r.s32 = static_cast<float>(static_cast<double>(c) / (s * static_cast<double>(r.pre)));
  return r;
}

// Step 3: the floor part of the frequency of one symbol other than the last.
// The ONE formula every path (quantize, fused encode, fused decode) uses;
// vec::floors() is the same expression on 8 symbols at once.
// Requires p >= 0 finite and r from row_scale(); result in [0, 2^P - V).
PYLLMCODEC_INLINE std::int32_t symbol_floor(float p, RowScale r) {
  const float y = (p * r.pre) * r.s32;  // two float32 roundings, in this order
  return static_cast<std::int32_t>(y);
}
PYLLMCODEC_INLINE std::uint32_t symbol_freq(float p, RowScale r) {
  return 1u + static_cast<std::uint32_t>(symbol_floor(p, r));
}

// Sum of symbol_freq(p[i]) for i in [0, n).  Integer addition is exact and
// associative, so any order gives the same result.
PYLLMCODEC_INLINE std::uint32_t freq_prefix(const float* p, std::size_t n, RowScale r) {
  std::uint32_t acc = 0;
  std::size_t i = 0;
#if PYLLMCODEC_VECTOR
  const vec::v8f pre = vec::v8f{} + r.pre, s32 = vec::v8f{} + r.s32;
  vec::v8i a = {}, b = {};
  for (; i + 16 <= n; i += 16) {
    a += vec::floors(p + i, pre, s32);
    b += vec::floors(p + i + 8, pre, s32);
  }
  for (; i + 8 <= n; i += 8) a += vec::floors(p + i, pre, s32);
  acc = vec::hsum(a + b);
#endif
  for (; i < n; ++i) acc += static_cast<std::uint32_t>(symbol_floor(p[i], r));
  return acc + static_cast<std::uint32_t>(n);
}

[[noreturn]] inline void throw_proof_broken(std::size_t row) {
  throw std::logic_error("internal error: quantizer remainder underflow in row " + std::to_string(row) +
                         " (please report this input)");
}

// Full table for one row: cdf[0..V].  Caller validated check_shape().
PYLLMCODEC_INLINE void quantize_row_impl(const float* p, std::size_t V, int precision, std::uint32_t* cdf,
                                               std::size_t row) {
  const RowScale r = row_scale_impl(p, V, precision, row);
  const std::uint32_t total = std::uint32_t{1} << precision;  // P <= 31
  std::uint32_t cum = 0;  // cdf[i]
  cdf[0] = 0;
  std::size_t i = 0;
  const std::size_t n = V - 1;  // the last symbol is implicit
#if PYLLMCODEC_VECTOR
  // Integer prefix sums 8 at a time: log-step in-register scans of two
  // 4-lane halves; only `carry += ...` is carried from one block to the next.
  const vec::v8f pre = vec::v8f{} + r.pre, s32 = vec::v8f{} + r.s32;
  const vec::v4i z = {};
  vec::v4i carry = {};
  for (; i + 8 <= n; i += 8) {
    const vec::v8i fg = vec::floors(p + i, pre, s32) + 1;
    vec::v4i f = __builtin_shufflevector(fg, fg, 0, 1, 2, 3), g = __builtin_shufflevector(fg, fg, 4, 5, 6, 7);
    f += __builtin_shufflevector(f, z, 4, 0, 1, 2);
    g += __builtin_shufflevector(g, z, 4, 0, 1, 2);
    f += __builtin_shufflevector(f, z, 4, 4, 0, 1);
    g += __builtin_shufflevector(g, z, 4, 4, 0, 1);
    g += __builtin_shufflevector(f, f, 3, 3, 3, 3);  // local scan of the 8
    const vec::v4i of = f + carry, og = g + carry;
    std::memcpy(cdf + i + 1, &of, sizeof of);
    std::memcpy(cdf + i + 5, &og, sizeof og);
    carry += __builtin_shufflevector(g, g, 3, 3, 3, 3);
  }
  cum = static_cast<std::uint32_t>(carry[0]);
#endif
  for (; i < n; ++i) {
    cum += symbol_freq(p[i], r);
    cdf[i + 1] = cum;
  }
  // Invariant (proved above): cum <= 2^P - 1, so the last freq is >= 1.
  if (cum >= total) throw_proof_broken(row);
  cdf[V] = total;
}

// Fused encoder lookup: (cum_low, freq) of symbol s < V without building the
// table: the row sum, then the freqs of p[0..s) only.
PYLLMCODEC_INLINE void symbol_range_impl(const float* p, std::size_t V, int precision, std::size_t s,
                                               std::size_t row, std::uint32_t* cum_low, std::uint32_t* freq) {
  const RowScale r = row_scale_impl(p, V, precision, row);
  const std::uint32_t total = std::uint32_t{1} << precision;
  const std::uint32_t c = freq_prefix(p, s, r);
  std::uint32_t f;
  if (s + 1 == V) {
    if (c >= total) throw_proof_broken(row);
    f = total - c;
  } else {
    f = symbol_freq(p[s], r);
  }
  *cum_low = c;
  *freq = f;
}

// Fused decoder lookup: the symbol s with cdf[s] <= target < cdf[s+1].
// Requires target < 2^P.  Skips whole blocks by their frequency sums, so it
// reads the row only up to the symbol.
PYLLMCODEC_INLINE std::size_t find_symbol_impl(const float* p, std::size_t V, int precision,
                                                     std::uint32_t target, std::size_t row,
                                                     std::uint32_t* cum_low, std::uint32_t* freq) {
  const RowScale r = row_scale_impl(p, V, precision, row);
  const std::uint32_t total = std::uint32_t{1} << precision;
  constexpr std::size_t kBlock = 32;
  std::uint32_t cum = 0;  // cdf[i]; invariant cum <= target
  std::size_t i = 0;
  const std::size_t n = V - 1;  // the last symbol is implicit
  for (; i + kBlock <= n; i += kBlock) {
    const std::uint32_t b = freq_prefix(p + i, kBlock, r);
    if (target - cum < b) break;  // target < cum + b
    cum += b;
  }
#if PYLLMCODEC_VECTOR
  // Then 8 at a time; the symbol's 8 freqs are computed once, in a vector.
  const vec::v8f pre = vec::v8f{} + r.pre, s32 = vec::v8f{} + r.s32;
  for (; i + 8 <= n; i += 8) {
    const vec::v8i fv = vec::floors(p + i, pre, s32) + 1;
    const std::uint32_t b = vec::hsum(fv);
    if (target - cum >= b) {
      cum += b;
      continue;
    }
    std::uint32_t f8[8];
    std::memcpy(f8, &fv, sizeof f8);
    for (std::size_t j = 0;; ++j) {  // terminates: the 8 freqs sum to > target - cum
      if (target - cum < f8[j]) {
        *cum_low = cum;
        *freq = f8[j];
        return i + j;
      }
      cum += f8[j];
    }
  }
#endif
  for (; i < n; ++i) {
    const std::uint32_t f = symbol_freq(p[i], r);
    if (target - cum < f) {
      *cum_low = cum;
      *freq = f;
      return i;
    }
    cum += f;
  }
  if (cum >= total) throw_proof_broken(row);
  *cum_low = cum;
  *freq = total - cum;
  return V - 1;
}

// ---------------------------------------------------------------------------
// Row-level entry points: one indirect call per row to the best copy.
// ---------------------------------------------------------------------------
struct RowKernels {
  RowScale (*row_scale)(const float*, std::size_t, int, std::size_t);
  void (*quantize_row)(const float*, std::size_t, int, std::uint32_t*, std::size_t);
  void (*symbol_range)(const float*, std::size_t, int, std::size_t, std::size_t, std::uint32_t*, std::uint32_t*);
  std::size_t (*find_symbol)(const float*, std::size_t, int, std::uint32_t, std::size_t, std::uint32_t*,
                             std::uint32_t*);
  const char* name;
};

#define PYLLMCODEC_KERNEL_SET(NS, ATTR, NAME)                                                                \
  namespace NS {                                                                                           \
  ATTR inline RowScale row_scale(const float* p, std::size_t V, int P, std::size_t row) {                  \
    return row_scale_impl(p, V, P, row);                                                                   \
  }                                                                                                        \
  ATTR inline void quantize_row(const float* p, std::size_t V, int P, std::uint32_t* cdf, std::size_t row) { \
    quantize_row_impl(p, V, P, cdf, row);                                                                  \
  }                                                                                                        \
  ATTR inline void symbol_range(const float* p, std::size_t V, int P, std::size_t s, std::size_t row,       \
                                std::uint32_t* c, std::uint32_t* f) {                                      \
    symbol_range_impl(p, V, P, s, row, c, f);                                                              \
  }                                                                                                        \
  ATTR inline std::size_t find_symbol(const float* p, std::size_t V, int P, std::uint32_t t, std::size_t row, \
                                      std::uint32_t* c, std::uint32_t* f) {                                \
    return find_symbol_impl(p, V, P, t, row, c, f);                                                        \
  }                                                                                                        \
  inline constexpr RowKernels table{&row_scale, &quantize_row, &symbol_range, &find_symbol, NAME};          \
  }

PYLLMCODEC_KERNEL_SET(generic, , "generic")
#if PYLLMCODEC_DISPATCH
PYLLMCODEC_KERNEL_SET(avx2, __attribute__((target("avx2,fma,bmi,bmi2,f16c,lzcnt,popcnt"))), "avx2")
#endif
#undef PYLLMCODEC_KERNEL_SET

// The copy for this CPU, chosen once.  Every copy gives identical bits (see
// the Kernels note); PYLLMCODEC_KERNELS=generic in the environment forces the
// baseline copy (used by the tests to check exactly that).
inline const RowKernels& kernels() {
  static const RowKernels* const chosen = []() -> const RowKernels* {
    const char* env = std::getenv("PYLLMCODEC_KERNELS");
    if (env != nullptr && std::string(env) == "generic") return &generic::table;
#if PYLLMCODEC_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2")) {
      return &avx2::table;
    }
#endif
    return &generic::table;
  }();
  return *chosen;
}

}  // namespace quant

// The instruction-set level of the exact steps' kernels on this CPU
// (exact_step.hpp, intllama.hpp), chosen once: PYLLMCODEC_KERNELS=generic
// forces the baseline, =avx2 the AVX2 copy where the CPU has it (the tests
// compare the copies, which give identical integers).
enum class KernelLevel { generic, avx2, avx512vnni };

inline KernelLevel kernel_level() {
  static const KernelLevel chosen = []() {
    const char* env = std::getenv("PYLLMCODEC_KERNELS");
    const std::string want = env != nullptr ? std::string(env) : std::string();
    if (want == "generic") return KernelLevel::generic;
#if PYLLMCODEC_DISPATCH
    __builtin_cpu_init();
    const bool has_avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    if (want == "avx2" && has_avx2) return KernelLevel::avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512dq")) {
      return KernelLevel::avx512vnni;
    }
    if (has_avx2) return KernelLevel::avx2;
#endif
    return KernelLevel::generic;
  }();
  return chosen;
}

}  // namespace pyllmcodec
