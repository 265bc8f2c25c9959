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
// An error (InvalidInput, ValueError in Python) is raised, naming the row,
// when the row holds a NaN, an infinity, a negative value, or sums to zero.
// A bad row never produces a table.  -0.0 counts as zero, subnormals are fine.
//
// The algorithm, which IS the format (encoder and decoder must agree to the
// bit, on every machine, in every build):
//
//  1. Normaliser.  S = sum of (double)p[i] in this exact order: 16 lanes,
//     lane j accumulates the elements i with i % 16 == j in increasing i,
//     starting from +0.0; then the lanes are combined by the fixed tree
//        ((((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)))
//        +(((l8+l9)+(l10+l11))+((l12+l13)+(l14+l15)))).
//     The order is written out explicitly in the code, so a vectorising
//     compiler cannot change it (that would need -ffast-math, which we never
//     use) and a scalar build gives the same bits.
//  2. scale = (double)(2^P - V) / S      (one IEEE double division)
//  3. For i < V-1:  f[i] = 1 + (uint32)trunc((double)p[i] * scale)
//     (one IEEE double multiply, no FMA: we build with -ffp-contract=off;
//     trunc == floor because the product is >= 0).  See symbol_freq().
//  4. The last symbol takes the rest:  f[V-1] = 2^P - sum_{i<V-1} f[i].
//     All of this is integer arithmetic; the prefix sums are integers.
//
// Why step 4 is always >= 1 (so no "fix-up" loop is ever needed):
//   Let u = 2^-53.  Summing n = V non-negative doubles in any order has
//   relative error <= (n-1)u/(1-(n-1)u); the division and each product add
//   one rounding each.  Hence sum_{i<V-1} p[i]*scale (as computed) is at most
//   (2^P - V) * (1 + (V+3)u) < (2^P - V) + 1   whenever 2^P * (V+3) * u < 1,
//   which holds for P <= 31 and V <= kMaxSymbols = 2^21 (2^31 * 2^21.01 *
//   2^-53 < 2^-1).  A sum of floors is at most the floor of the sum, so
//   sum_{i<V-1} floor(...) <= 2^P - V, hence sum_{i<V-1} f[i] <= 2^P - 1 and
//   f[V-1] >= 1.  The same bound gives each product < 2^P - V + 1 <= 2^31 - 1,
//   so the conversion to int32 cannot overflow.  The code still checks
//   f[V-1] >= 1 in integer arithmetic and throws std::logic_error if the
//   proof were ever wrong: never a silently wrong table.
//
// Why the remainder goes to the LAST symbol (not the argmax): it makes
// cdf[s] and f[s] computable from the row sum plus a prefix p[0..s], which is
// what lets the fused encoder stop at the coded symbol and the fused decoder
// stop at the decoded one.  The price: the floors lose about V/2 units of
// 2^P, which go to symbol V-1; with the default P = 30 and V = 50257 that is
// 2.3e-5 of the mass, i.e. <= 3.4e-5 bits per symbol.  Together with the
// forced minimum mass (V / 2^P of the mass, <= 6.8e-5 bits per coded symbol at
// V = 50257) this is the whole quantisation overhead.
// ---------------------------------------------------------------------------
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

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
// V = 262144 (coding overhead 1.44 * V/2^P bits per symbol at most), and
// 2^30 still fits an int32, so an accelerator can build the CDF with int32
// cumsums for the two-phase API.
constexpr int kDefaultPrecision = 30;
// Bound used by the proof above (2^31 * (V+3) * 2^-53 < 1).
constexpr std::size_t kMaxSymbols = std::size_t{1} << 21;
// Lanes of the fixed-order float64 row sum.  Part of the format: never change.
constexpr std::size_t kSumLanes = 16;

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

// Explains why row `row` is invalid; called only on the (cold) error path.
[[noreturn]] inline void throw_bad_row(const float* p, std::size_t V, std::size_t row) {
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
  throw InvalidInput("probs row " + std::to_string(row) +
                     " sums to zero; at least one probability must be > 0");
}

// Step 1+2 of the contract: validates the row and returns scale.
// NOTE: the lane structure below is the documented summation order.
inline double row_scale(const float* p, std::size_t V, int precision, std::size_t row) {
  double acc[kSumLanes];
  for (std::size_t j = 0; j < kSumLanes; ++j) acc[j] = 0.0;
  // `bad` collects !(x >= 0): true for negatives and NaNs.  +inf passes here
  // and is caught by the isfinite(sum) test below.
  int bad = 0;
  std::size_t i = 0;
  for (; i + kSumLanes <= V; i += kSumLanes) {
    for (std::size_t j = 0; j < kSumLanes; ++j) {
      const float x = p[i + j];
      acc[j] += static_cast<double>(x);
      bad |= !(x >= 0.0f);
    }
  }
  for (std::size_t j = 0; i + j < V; ++j) {  // tail: element i+j goes to lane j
    const float x = p[i + j];
    acc[j] += static_cast<double>(x);
    bad |= !(x >= 0.0f);
  }
  const double s = ((((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) +
                    (((acc[8] + acc[9]) + (acc[10] + acc[11])) + ((acc[12] + acc[13]) + (acc[14] + acc[15]))));
  if (bad || !std::isfinite(s) || !(s > 0.0)) throw_bad_row(p, V, row);
  // s >= 2^-149 (smallest float32 subnormal) and 2^P - V < 2^31, so the
  // quotient is finite.
  return static_cast<double>((std::uint64_t{1} << precision) - V) / s;
}

// Step 3: the frequency of one symbol other than the last.  The ONE function
// every path (quantize, fused encode, fused decode) uses.
// Requires p >= 0 finite and scale from row_scale(); result in [1, 2^P - V + 1].
inline std::uint32_t symbol_freq(float p, double scale) {
  return 1u + static_cast<std::uint32_t>(static_cast<std::int32_t>(static_cast<double>(p) * scale));
}

// floor part only (freq - 1); vectorises to cvtps2pd/mulpd/cvttpd2dq.
inline std::int32_t symbol_floor(float p, double scale) {
  return static_cast<std::int32_t>(static_cast<double>(p) * scale);
}

// Sum of symbol_freq(p[i]) for i in [0, n).  Integer addition is exact and
// associative, so the compiler may vectorise/reorder this freely.
inline std::uint32_t freq_prefix(const float* p, std::size_t n, double scale) {
  std::uint32_t acc = 0;
  for (std::size_t i = 0; i < n; ++i) acc += static_cast<std::uint32_t>(symbol_floor(p[i], scale));
  return acc + static_cast<std::uint32_t>(n);
}

[[noreturn]] inline void throw_proof_broken(std::size_t row) {
  throw std::logic_error("internal error: quantizer remainder underflow in row " + std::to_string(row) +
                         " (please report this input)");
}

// Full table for one row: cdf[0..V].  Caller validated check_shape().
inline void quantize_row(const float* p, std::size_t V, int precision, std::uint32_t* cdf,
                         std::size_t row) {
  const double scale = row_scale(p, V, precision, row);
  const std::uint32_t total = std::uint32_t{1} << precision;  // P <= 31
  // Compute floors into cdf[1..V-1], then an integer prefix sum.
  std::uint32_t cum = 0;
  cdf[0] = 0;
  std::size_t i = 0;
  constexpr std::size_t kBlock = 8;
  for (; i + kBlock <= V - 1; i += kBlock) {
    std::uint32_t f[kBlock];
    for (std::size_t j = 0; j < kBlock; ++j) f[j] = 1u + static_cast<std::uint32_t>(symbol_floor(p[i + j], scale));
    for (std::size_t j = 0; j < kBlock; ++j) {
      cum += f[j];
      cdf[i + j + 1] = cum;
    }
  }
  for (; i < V - 1; ++i) {
    cum += symbol_freq(p[i], scale);
    cdf[i + 1] = cum;
  }
  // Invariant (proved above): cum <= 2^P - 1, so the last freq is >= 1.
  if (cum >= total) throw_proof_broken(row);
  cdf[V] = total;
}

// Fused encoder lookup: (cum_low, freq) of symbol s without building cdf.
// Caller validated s < V.  Returns via out-params.
inline void symbol_range(const float* p, std::size_t V, int precision, std::size_t s,
                         std::size_t row, std::uint32_t* cum_low, std::uint32_t* freq) {
  const double scale = row_scale(p, V, precision, row);
  const std::uint32_t total = std::uint32_t{1} << precision;
  const std::uint32_t c = freq_prefix(p, s, scale);
  std::uint32_t f;
  if (s + 1 == V) {
    if (c >= total) throw_proof_broken(row);
    f = total - c;
  } else {
    f = symbol_freq(p[s], scale);
  }
  *cum_low = c;
  *freq = f;
}

// Fused decoder lookup: the symbol s with cdf[s] <= target < cdf[s+1].
// Requires target < 2^P.  Scans blocks, so it stops near the symbol.
inline std::size_t find_symbol(const float* p, std::size_t V, int precision, std::uint32_t target,
                               std::size_t row, std::uint32_t* cum_low, std::uint32_t* freq) {
  const double scale = row_scale(p, V, precision, row);
  const std::uint32_t total = std::uint32_t{1} << precision;
  constexpr std::size_t kBlock = 32;
  std::uint32_t cum = 0;  // cdf[i]
  std::size_t i = 0;
  const std::size_t n = V - 1;  // the last symbol is implicit
  for (; i + kBlock <= n; i += kBlock) {
    const std::uint32_t b = freq_prefix(p + i, kBlock, scale);
    if (target - cum < b) break;  // target < cum + b  (cum <= target holds)
    cum += b;
  }
  for (; i < n; ++i) {
    const std::uint32_t f = symbol_freq(p[i], scale);
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

}  // namespace quant
}  // namespace pyllmcodec
