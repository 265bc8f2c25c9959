// quantizer_int.hpp -- integer weights -> integer frequency tables, with no
// float anywhere: the CDF entry of the exact models (docs/FORMAT.md 4e).
//
// Plain C++17; knows nothing of Python (csrc/bindings.cpp binds it).
//
// ---------------------------------------------------------------------------
// READ ME FIRST: the integer quantizer contract
// ---------------------------------------------------------------------------
// Input: one row w[0..V) of uint32 weights (an exact model's exp-table values:
// unnormalised probabilities), the precision P and an optional match
// override (m, q): symbol m < V gets the share q / 2^16 of the coded mass
// (the match model, csrc/mixer.hpp, MatchMixer::mix_int), q in [1, 65535].
// Output: frequencies f[0..V), every f >= 1, sum f == 2^P exactly, as a
// cumulative table cdf[0..V] (cdf[0] = 0, cdf[V] = 2^P).
//
// Every step is integer arithmetic on uint64 (no float, no rounding mode, no
// instruction-set dependence; the same bits from any compiler on any CPU):
//
//  1. S = sum_x w[x]  (< 2^53: V <= 2^21, w < 2^32).  S == 0 is an error.
//  2. c = 2^P - V  (the mass above the forced 1 per symbol; c >= 2^(P-1)
//     since V <= 2^(P-1)), k = 62 - P.
//     Without a match:  cm = 0, R = S, c' = c.
//     With a match m:   cm = (c * q) >> 16,  R = S - w[m],  c' = c - cm.
//     r = R > 0 ? floor((c' << k) / R) : 0.
//  3. For x < V-1:  f[x] = 1 + (x == m ? cm : (w[x] * r) >> k).
//  4. The last symbol takes the rest:  f[V-1] = 2^P - sum_{x<V-1} f[x].
//
// Why it cannot overflow and f[V-1] >= 1: c' < 2^P, so c' << k < 2^62; for
// x != m, w[x] <= R, so w[x] * r <= c' << k < 2^62.  And
// sum_{x != m} (w[x] * r) >> k <= R * r / 2^k <= c', so the sum of step 3 is
// at most (V - 1) + cm + c' = V - 1 + c = 2^P - 1.
//
// What it costs: r rounds down by less than one unit, i.e. by a relative
// R / (c' << k) < R * 2^(1-62); an exact model's rows (S <= V * 2^24) lose
// under 2^-20 of the mass that way, to the last symbol, as do the floors
// (< V units of 2^P).  As in quantizer.hpp the remainder goes to the last
// symbol so that cdf[s] and f[s] follow from S and the prefix w[0..s]: the
// fused encoder stops at the coded symbol, the fused decoder at the decoded
// one.
// ---------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "quantizer.hpp"

namespace pyllmcodec {
namespace quant {

// A row's constants (steps 1-2).  m = -1: no match.
struct IntScale {
  std::uint64_t r = 0;
  std::uint32_t cm = 0;
  std::int64_t m = -1;
  int k = 0;
};

inline std::uint64_t int_row_sum(const std::uint32_t* w, std::size_t V) {
  std::uint64_t s = 0;
  for (std::size_t x = 0; x < V; ++x) s += w[x];
  return s;
}

// Checks the override (m, q) of row `row` against V.
inline void check_match(std::int64_t m, std::uint32_t q, std::size_t V, std::size_t row) {
  if (m < -1 || m >= static_cast<std::int64_t>(V)) {
    throw InvalidInput("match[" + std::to_string(row) + "] = " + std::to_string(m) + " is neither -1 nor a symbol in [0, " +
                       std::to_string(V) + ")");
  }
  if (m >= 0 && (q < 1 || q > 65535)) {
    throw InvalidInput("q[" + std::to_string(row) + "] = " + std::to_string(q) + " must be in 1..65535 where match >= 0");
  }
}

inline IntScale int_scale(const std::uint32_t* w, std::size_t V, int P, std::int64_t m, std::uint32_t q,
                          std::size_t row) {
  check_match(m, q, V, row);
  const std::uint64_t S = int_row_sum(w, V);
  if (S == 0) {
    throw InvalidInput("weights row " + std::to_string(row) + " sums to zero; at least one weight must be > 0");
  }
  IntScale sc;
  sc.k = 62 - P;
  sc.m = m;
  const std::uint64_t c = (std::uint64_t{1} << P) - V;
  std::uint64_t R = S, cp = c;
  if (m >= 0) {
    sc.cm = static_cast<std::uint32_t>((c * q) >> 16);
    R = S - w[m];
    cp = c - sc.cm;
  }
  sc.r = R > 0 ? (cp << sc.k) / R : 0;
  return sc;
}

// f[x] - 1 for x < V-1 (step 3).
inline std::uint64_t int_extra(const IntScale& sc, const std::uint32_t* w, std::size_t x) {
  return static_cast<std::int64_t>(x) == sc.m ? sc.cm : (std::uint64_t{w[x]} * sc.r) >> sc.k;
}

// Full table of one row.
inline void quantize_int_row(const std::uint32_t* w, std::size_t V, int P, std::int64_t m, std::uint32_t q,
                             std::uint32_t* cdf, std::size_t row) {
  const IntScale sc = int_scale(w, V, P, m, q, row);
  std::uint64_t cum = 0;
  cdf[0] = 0;
  for (std::size_t x = 0; x + 1 < V; ++x) {
    cum += 1 + int_extra(sc, w, x);
    cdf[x + 1] = static_cast<std::uint32_t>(cum);
  }
  if (cum >= (std::uint64_t{1} << P)) throw std::logic_error("integer quantizer: no mass left for the last symbol");
  cdf[V] = static_cast<std::uint32_t>(std::uint64_t{1} << P);
}

// (cdf[s], f[s]) of one row: the fused encoder's read, up to s only.
inline void int_symbol_range(const std::uint32_t* w, std::size_t V, int P, std::int64_t m, std::uint32_t q,
                             std::size_t s, std::size_t row, std::uint32_t* c_out, std::uint32_t* f_out) {
  const IntScale sc = int_scale(w, V, P, m, q, row);
  std::uint64_t cum = 0;
  for (std::size_t x = 0; x < s; ++x) cum += 1 + int_extra(sc, w, x);
  const std::uint64_t f = s + 1 < V ? 1 + int_extra(sc, w, s) : (std::uint64_t{1} << P) - cum;
  *c_out = static_cast<std::uint32_t>(cum);
  *f_out = static_cast<std::uint32_t>(f);
}

// The symbol whose interval holds target t < 2^P, and its (cdf[s], f[s]):
// the fused decoder's read, up to the decoded symbol only.
inline std::size_t int_find_symbol(const std::uint32_t* w, std::size_t V, int P, std::int64_t m, std::uint32_t q,
                                   std::uint32_t t, std::size_t row, std::uint32_t* c_out, std::uint32_t* f_out) {
  const IntScale sc = int_scale(w, V, P, m, q, row);
  std::uint64_t cum = 0;
  for (std::size_t x = 0; x + 1 < V; ++x) {
    const std::uint64_t f = 1 + int_extra(sc, w, x);
    if (t < cum + f) {
      *c_out = static_cast<std::uint32_t>(cum);
      *f_out = static_cast<std::uint32_t>(f);
      return x;
    }
    cum += f;
  }
  *c_out = static_cast<std::uint32_t>(cum);
  *f_out = static_cast<std::uint32_t>((std::uint64_t{1} << P) - cum);
  return V - 1;
}

}  // namespace quant
}  // namespace pyllmcodec
