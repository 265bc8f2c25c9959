// mixer.hpp -- the match model: a per-row secondary model that sharpens the
// language model's distribution where a row's own history repeats.
//
// Plain C++17; knows nothing of Python (csrc/bindings.cpp binds it).
//
// ---------------------------------------------------------------------------
// READ ME FIRST: the mixer contract (docs/FORMAT.md section 4c)
// ---------------------------------------------------------------------------
// A small language model sees one context window; a chunk of 8-64 KiB often
// repeats itself far beyond that (tables, directives, identifiers).  Per row
// (= per chunk) the mixer keeps the symbols coded so far and, PAQ-style, a
// hash of the last `min_len` symbols -> the position after their latest
// occurrence.  While a match is active it predicts the symbol that followed
// last time, m, with a learned confidence q, and the row's distribution
// becomes  P(m) = q,  P(x != m) = p(x) * (1 - q) / (1 - p(m)).
//
// The algorithm IS the format: encoder and decoder run it on the same
// symbols and the same float32 rows, so every step below is integer or a
// single IEEE-754 binary64 operation in a fixed order (built with
// -ffp-contract=off, no fast-math, MXCSR reset by FpEnv):
//
// State of a row (reset when the mixer is created: one mixer per wave):
//   hist[0..n)   the symbols pushed so far;   table[2^hash_bits] (uint32, 0)
//   ptr, len     the active match (len = 0: none); ptr < n indexes hist
//   q[c], k[c]   per cell c in [0, 256): q = prior[c] << 12 (units 2^-28),
//                k = init_count
//
// mix(row p[0..V)) -- must alternate with push, mix first:
//   1. No match (len = 0), or m = hist[ptr] >= V: the row is left unchanged.
//   2. R = sum_{x != m} double(p[x]) in increasing x from +0.0;
//      pm = double(p[m]); S = R + pm.  Unless R > 0, pm >= 0 and S < 2^100
//      (this also rejects NaN and inf), the row is left unchanged (the
//      quantizer then rejects a bad row by itself).
//   3. cell c = 16 * lbucket(len) + min(15, trunc(16.0 * pm / S)), where
//      lbucket(L) = min(15, floor(2 * log2 L)) computed in integers:
//      e = floor(log2 L), lbucket = 2e + (L*L >= 2^(2e+1)).
//   4. q16 = clamp(q[c] >> 12, 32, 65504);
//      p[m] = float32( R * ( double(q16) / double(65536 - q16) ) ).
//      The other entries are untouched: the quantizer does not need
//      normalised rows, so P(m) = q16 / 2^16 up to its rounding.
//
// push(symbol s):
//   1. If mix chose a cell c: hit = (s == m); t = hit ? 2^28 : 0;
//      q[c] += (t - q[c]) * 2 / (2 k[c] + 3)  (int64, C++ division: toward 0);
//      k[c] = min(k[c] + 1, limit).
//   2. If len > 0: hist[ptr] == s ? (len = min(len + 1, 65535), ptr += 1)
//      : len = 0.
//   3. Append s; n += 1.  If n >= min_len: h = hash(hist[n-min_len..n)),
//      where h = 0, then h = (h + sym + 1) * 0x9E3779B1 (uint32) per symbol,
//      index = h >> (32 - hash_bits).  If len = 0 and table[index] = j != 0
//      and hist[j-min_len..j) == hist[n-min_len..n): ptr = j, len = min_len.
//      Then table[index] = n.
//
// feed(symbol s): push's steps 2-3 without a mix (no cell, nothing
//   learned): primes a row with a dictionary before its chunk.
//
// mix_int(row w[0..V) of uint32, an exact model's) -- the same model in
//   integers only (FORMAT.md section 4e); the row is not edited:
//   1. No match, or m >= V: no override (match = -1, q = 0).
//   2. S = sum w (uint64), R = S - w[m]; R == 0: no override.
//   3. cell c = 16 * lbucket(len) + min(15, floor(16 * w[m] / S)).
//   4. q16 = clamp(q[c] >> 12, 32, 65504); override (m, q16): the integer
//      quantizer gives m the share q16 / 2^16 of the coded mass.
//   push then learns exactly as after mix.
//
// Why these choices: sim on linux-doc with model 1.4.0 and 8 KiB chunks
// (docs/MODEL.md): 1.668 -> 1.542 bits/byte; min_len 4 beats 3, 6 and 8;
// a per-cell prior fitted on held-out training text gets within 0.004 of a
// prior fitted on the test text itself; the count-based rate 1/(k + 1.5)
// with k starting at 30 adapts to a chunk without forgetting the prior.
// ---------------------------------------------------------------------------
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "quantizer.hpp"
#include "quantizer_int.hpp"
#include "rows.hpp"

namespace pyllmcodec {
namespace mix {

constexpr int kCells = 256;             // 16 length buckets x 16 probability buckets
constexpr std::uint32_t kOne = 1u << 28;  // q's unit: 2^-28
constexpr std::uint32_t kMaxLen = 65535;

struct Spec {
  int min_len = 4;      // symbols hashed to find a match, 1..32
  int hash_bits = 16;   // positions table of 2^hash_bits entries per row, 8..24
  int init_count = 30;  // k at the start: how much the prior weighs, 0..limit
  int limit = 127;      // cap of k: the slowest adaptation rate, 1..65535
  std::array<std::uint16_t, kCells> prior{};  // q16 per cell, 1..65535

  void validate() const {
    auto bad = [](const std::string& what) { throw InvalidInput("mixer spec: " + what); };
    if (min_len < 1 || min_len > 32) bad("min_len must be in 1..32");
    if (hash_bits < 8 || hash_bits > 24) bad("hash_bits must be in 8..24");
    if (limit < 1 || limit > 65535) bad("limit must be in 1..65535");
    if (init_count < 0 || init_count > limit) bad("init_count must be in 0..limit");
    for (int c = 0; c < kCells; ++c)
      if (prior[c] == 0) bad("prior[" + std::to_string(c) + "] must be in 1..65535");
  }
};

inline int len_bucket(std::uint32_t len) {
  int e = 31 - __builtin_clz(len);  // len >= 1
  std::uint64_t l2 = std::uint64_t(len) * len;
  int b = 2 * e + (l2 >= (std::uint64_t(1) << (2 * e + 1)) ? 1 : 0);
  return b < 15 ? b : 15;
}

class MatchMixer {
 public:
  MatchMixer(std::size_t n_rows, std::size_t max_len, const Spec& spec)
      : spec_(spec), max_len_(max_len), rows_(n_rows), checker_(n_rows, "mixer row") {
    spec_.validate();
    if (n_rows < 1) throw InvalidInput("a mixer needs at least one row");
  }

  std::size_t n_rows() const { return rows_.size(); }
  std::size_t max_len() const { return max_len_; }
  const Spec& spec() const { return spec_; }
  std::size_t length(std::size_t r) const { return rows_.at(r).hist.size(); }
  // The cell the last mix chose for row r (-1: none) and the symbol it predicted.
  int cell(std::size_t r) const { return rows_.at(r).cell; }
  std::uint32_t predicted(std::size_t r) const { return rows_.at(r).pred; }

  // probs: m rows of V floats (row k belongs to mixer row rows[k], or k).
  // Validation first (all-or-nothing), then each row as in the contract.
  void mix(float* probs, std::size_t m, std::size_t V, const std::int64_t* rows) {
    checker_.check(rows, m);
    detail::check_mix_rows(rows, m, [&](std::size_t k) -> const Row& { return row(rows, k); });
    quant::FpEnv fp;
    for (std::size_t k = 0; k < m; ++k) mix_row(row(rows, k), probs + k * V, V);
  }

  // mix_int(weights): the same model on integer rows (an exact model's,
  // csrc/quantizer_int.hpp), in integers only.  The row is not edited: row
  // k's override comes out as (match[k], q[k]) (-1, 0: none) for the integer
  // quantizer, which gives the predicted symbol q / 2^16 of the mass.
  void mix_int(const std::uint32_t* w, std::size_t m, std::size_t V, const std::int64_t* rows, std::int64_t* match,
               std::uint32_t* q) {
    checker_.check(rows, m);
    detail::check_mix_rows(rows, m, [&](std::size_t k) -> const Row& { return row(rows, k); });
    for (std::size_t k = 0; k < m; ++k) mix_row_int(row(rows, k), w + k * V, V, match + k, q + k);
  }

  void push(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows) {
    append(symbols, m, rows, /*after_mix=*/true);
  }

  // feed(symbols): append symbols that are not coded (a dictionary primed
  // before the chunk, FORMAT.md section 4d), as push does after a mix that
  // chose no cell: the match state follows them, no confidence is learned.
  // Must not come between a mix and its push.
  void feed(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows) {
    append(symbols, m, rows, /*after_mix=*/false);
  }

 private:
  // push (after_mix: every row was mixed) and feed (no row awaits its push):
  // validation first (all-or-nothing), then each row's push_row.
  void append(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows, bool after_mix) {
    checker_.check(rows, m);
    detail::check_append_rows(symbols, m, rows, after_mix, max_len_,
                              [&](std::size_t k) -> const Row& { return row(rows, k); });
    for (std::size_t k = 0; k < m; ++k) push_row(row(rows, k), static_cast<std::uint32_t>(symbols[k]));
  }

  struct Row {
    std::vector<std::uint32_t> hist, table;
    std::uint32_t ptr = 0, len = 0, pred = 0;
    int cell = -1;
    bool pending = false, init = false;
    std::array<std::uint32_t, kCells> q{};
    std::array<std::uint32_t, kCells> cnt{};
  };

  Row& row(const std::int64_t* rows, std::size_t k) {
    Row& r = rows_[detail::stream_of(rows, k)];
    if (!r.init) {
      r.init = true;
      for (int c = 0; c < kCells; ++c) {
        r.q[c] = std::uint32_t(spec_.prior[c]) << 12;
        r.cnt[c] = static_cast<std::uint32_t>(spec_.init_count);
      }
      r.table.assign(std::size_t(1) << spec_.hash_bits, 0);
      r.hist.reserve(std::min<std::size_t>(max_len_, 1 << 16));
    }
    return r;
  }

  void mix_row(Row& r, float* p, std::size_t V) {
    r.pending = true;
    r.cell = -1;
    if (r.len == 0) return;
    const std::uint32_t m = r.hist[r.ptr];
    if (m >= V) return;
    double R = 0.0;
    for (std::size_t x = 0; x < V; ++x)
      if (x != m) R += double(p[x]);
    const double pm = double(p[m]);
    const double S = R + pm;
    if (!(R > 0.0) || !(pm >= 0.0) || !(S < 0x1p100)) return;
    int pb = static_cast<int>(16.0 * pm / S);  // in [0, 16]: pm <= S
    if (pb > 15) pb = 15;
    const int c = 16 * len_bucket(r.len) + pb;
    std::uint32_t q16 = r.q[c] >> 12;
    q16 = std::min<std::uint32_t>(std::max<std::uint32_t>(q16, 32), 65504);
    p[m] = static_cast<float>(R * (double(q16) / double(65536 - q16)));
    r.cell = c;
    r.pred = m;
  }

  // The integer twin of mix_row (contract: "mix_int" above the class).
  void mix_row_int(Row& r, const std::uint32_t* w, std::size_t V, std::int64_t* match, std::uint32_t* q) {
    r.pending = true;
    r.cell = -1;
    *match = -1;
    *q = 0;
    if (r.len == 0) return;
    const std::uint32_t m = r.hist[r.ptr];
    if (m >= V) return;
    const std::uint64_t S = quant::int_row_sum(w, V);
    const std::uint64_t wm = w[m];
    if (S == wm) return;  // R = 0: nothing else to take mass from (or an all-zero row)
    const std::uint64_t pb = std::min<std::uint64_t>(15, (16 * wm) / S);
    const int c = 16 * len_bucket(r.len) + static_cast<int>(pb);
    *q = std::min<std::uint32_t>(std::max<std::uint32_t>(r.q[c] >> 12, 32), 65504);
    *match = m;
    r.cell = c;
    r.pred = m;
  }

  void push_row(Row& r, std::uint32_t s) {
    r.pending = false;
    if (r.cell >= 0) {
      const int c = r.cell;
      const std::int64_t t = (s == r.pred) ? std::int64_t(kOne) : 0;
      const std::int64_t q = r.q[c];
      r.q[c] = static_cast<std::uint32_t>(q + (t - q) * 2 / (2 * std::int64_t(r.cnt[c]) + 3));
      if (r.cnt[c] < static_cast<std::uint32_t>(spec_.limit)) ++r.cnt[c];
      r.cell = -1;
    }
    if (r.len > 0) {
      if (r.hist[r.ptr] == s) {
        if (r.len < kMaxLen) ++r.len;
        ++r.ptr;
      } else {
        r.len = 0;
      }
    }
    r.hist.push_back(s);
    const std::size_t n = r.hist.size();
    const std::size_t L = static_cast<std::size_t>(spec_.min_len);
    if (n < L) return;
    const std::uint32_t* tail = r.hist.data() + (n - L);
    std::uint32_t h = 0;
    for (std::size_t t = 0; t < L; ++t) h = (h + tail[t] + 1u) * 0x9E3779B1u;
    const std::uint32_t idx = h >> (32 - spec_.hash_bits);
    const std::uint32_t j = r.table[idx];
    if (r.len == 0 && j != 0 && std::equal(tail, tail + L, r.hist.data() + (j - L))) {
      r.ptr = j;
      r.len = static_cast<std::uint32_t>(L);
    }
    r.table[idx] = static_cast<std::uint32_t>(n);
  }

  Spec spec_;
  std::size_t max_len_;
  std::vector<Row> rows_;
  detail::RowChecker checker_;
};

}  // namespace mix
}  // namespace pyllmcodec
