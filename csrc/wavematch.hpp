// wavematch.hpp -- the wave match ("wave1"): a token-level match model whose
// state is shared by a wave's rows, with its guess's confidence learned by an
// adaptive probability map over the model's own probability of the guess.
//
// Plain C++17; knows nothing of Python (csrc/bindings.cpp binds it).
//
// ---------------------------------------------------------------------------
// READ ME FIRST: the contract (docs/FORMAT.md section 4g)
// ---------------------------------------------------------------------------
// The per-row match model (mixer.hpp, "match1") sees one chunk; a token-level
// model sees that chunk in its context already, so what it lacks is the
// rest of the wave: technical text repeats across chunks (identifiers,
// paths, boilerplate).  Here the rows of a wave share position tables, so a
// row can continue a match into another row's tokens, and one set of
// confidences, learned from every row.  The confidence is conditioned on the
// model's probability of the guess (an APM, as paq's SSE): where the model
// already expects the guess the stage adds nothing, where it does not, the
// stage learns how often the guess comes anyway.  It only ever overrides one
// symbol's share of the integer quantizer's mass (quantizer_int.hpp).
//
// Integers only (the algorithm IS the format).  One state per wave, for
// n_rows rows of at most max_len symbols, G(r, i) = r * (max_len + 1) + i.
// Two matches per row, c = 0 found by the last L0 = long_len symbols and
// c = 1 by the last L1 = min_len (wave1: 4 and 2):
//   hist[r]        the symbols row r pushed so far (< max_len of them)
//   table[c][2^hash_bits] uint32 (0: empty): G(r, n) of the last place a key ended
//   per row and c: ptr[c], len[c] (0: no match); per row: guess g, cell (-1: none)
//   apm[16][33] uint16, apm[b][j] = squash(192 j - 3072) (the identity map)
//
// mix_int(row w[0..V)), per row in the order given (all of a call's rows see
// the state before the call's pushes):
//   1. For c = 0, 1 with len[c] > 0: (r', i) = (ptr[c] / (max_len + 1),
//      ptr[c] % (max_len + 1)); if i >= |hist[r']| (not coded yet) len[c] = 0;
//      else the first such c guesses g = hist[r'][i], b = 8 c + lbucket(len[c]),
//      lbucket(L) = L for L <= 4, 5 for 5..7, 6 for 8..15, 7 for 16+.
//   2. No guess (or g >= V): no override (match -1, q 0).
//   3. S = sum w (uint64); S == w[g]: no override.
//      p16 = clamp(floor(65536 w[g] / S), 1, 65535); st = stretch(p16)
//      (cm.hpp: in [-3071, 3071]); u = st + 3072; j = u / 192; f = u % 192;
//      h = (apm[b][j] (192 - f) + apm[b][j+1] f) / 192;
//      override (g, clamp(h, 32, 65504)): g gets that share of the mass in
//      units of 2^-16; cell = (b, j + (f >= 96)).
// push(symbol s), per row after its mix:
//   1. If cell: a = apm[cell]; a += ((s == g) 65536 - a) >> rate (arithmetic shift).
//   2. For c = 0, 1: if len[c] > 0: the place at ptr[c] is coded and holds s ?
//      (len[c] = min(len[c] + 1, 65535), ptr[c] += 1) : len[c] = 0.
//   3. Append s to hist[r]; n = |hist[r]|.  For c = 0, 1 (L = L0, L1), if
//      n >= L: h = 0, then h = (h + sym + 1) * 0x9E3779B1 (uint32) over the
//      last L symbols; k = h >> (32 - hash_bits); t = table[c][k].  If
//      len[c] = 0 and t != 0 and the L symbols of row t / (max_len + 1) before
//      place t % (max_len + 1) equal the last L of hist[r]: ptr[c] = t,
//      len[c] = L.  Then table[c][k] = G(r, n).
// feed(symbol s): push's steps 2-3 without a mix (a dictionary before a chunk).
//
// Memory: 4 (n_rows (max_len + 1) + 2 * 2^hash_bits) bytes plus 1 KiB for the map.
// ---------------------------------------------------------------------------
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cm.hpp"  // squash, stretch
#include "quantizer.hpp"
#include "quantizer_int.hpp"
#include "rows.hpp"

namespace pyllmcodec {
namespace wave {

constexpr int kBuckets = 16;  // 8 length buckets per match
constexpr int kKnots = 33;
constexpr std::uint32_t kMaxLen = 65535;

struct Spec {
  int long_len = 4;    // symbols hashed to find the first match, 1..32
  int min_len = 2;     // symbols hashed to find the second, 1..32
  int hash_bits = 18;  // each position table: 2^hash_bits entries, 10..24
  int rate = 5;        // the map learns at 2^-rate, 1..15

  void validate() const {
    auto bad = [](const std::string& what) { throw InvalidInput("wave match spec: " + what); };
    if (long_len < 1 || long_len > 32) bad("long_len must be in 1..32");
    if (min_len < 1 || min_len > 32) bad("min_len must be in 1..32");
    if (hash_bits < 10 || hash_bits > 24) bad("hash_bits must be in 10..24");
    if (rate < 1 || rate > 15) bad("rate must be in 1..15");
  }
};

inline int len_bucket(std::uint32_t len) { return len <= 4 ? int(len) : len < 8 ? 5 : len < 16 ? 6 : 7; }

class WaveMatch {
 public:
  WaveMatch(std::size_t n_rows, std::size_t max_len, const Spec& spec)
      : spec_((spec.validate(), spec)), max_len_(max_len), stride_(max_len + 1), rows_(n_rows),
        checker_(n_rows, "mixer row") {
    if (n_rows < 1) throw InvalidInput("a wave match needs at least one row");
    if (max_len < 1 || n_rows > (std::size_t{1} << 32) / (max_len + 1))
      throw InvalidInput("a wave match's n_rows x (max_len + 1) must be below 2^32");
    for (auto& t : table_) t.assign(std::size_t{1} << spec_.hash_bits, 0);
    for (int b = 0; b < kBuckets; ++b)
      for (int j = 0; j < kKnots; ++j) apm_[b * kKnots + j] = static_cast<std::uint16_t>(cm::squash(192 * j - 3072));
  }

  std::size_t n_rows() const { return rows_.size(); }
  std::size_t max_len() const { return max_len_; }
  const Spec& spec() const { return spec_; }
  std::size_t length(std::size_t r) const { return rows_.at(r).hist.size(); }
  int cell(std::size_t r) const { return rows_.at(r).cell; }
  std::uint32_t predicted(std::size_t r) const { return rows_.at(r).guess; }

  void mix_int(const std::uint32_t* w, std::size_t m, std::size_t V, const std::int64_t* rows, std::int64_t* match,
               std::uint32_t* q) {
    checker_.check(rows, m);
    detail::check_mix_rows(rows, m, [&](std::size_t k) -> const Row& { return rows_[detail::stream_of(rows, k)]; });
    for (std::size_t k = 0; k < m; ++k) mix_row(rows_[detail::stream_of(rows, k)], w + k * V, V, match + k, q + k);
  }

  void push(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows) { append(symbols, m, rows, true); }
  void feed(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows) { append(symbols, m, rows, false); }

 private:
  struct Row {
    std::vector<std::uint32_t> hist;
    std::array<std::uint32_t, 2> ptr{}, len{};
    std::uint32_t guess = 0;
    int cell = -1;
    bool pending = false;
  };

  void append(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows, bool after_mix) {
    checker_.check(rows, m);
    detail::check_append_rows(symbols, m, rows, after_mix, max_len_,
                              [&](std::size_t k) -> const Row& { return rows_[detail::stream_of(rows, k)]; });
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t ri = detail::stream_of(rows, k);
      push_row(ri, rows_[ri], static_cast<std::uint32_t>(symbols[k]));
    }
  }

  void mix_row(Row& r, const std::uint32_t* w, std::size_t V, std::int64_t* match, std::uint32_t* q) {
    r.pending = true;
    r.cell = -1;
    *match = -1;
    *q = 0;
    int b = -1;
    std::uint32_t g = 0;
    for (int c = 0; c < 2; ++c) {
      if (r.len[c] == 0) continue;
      const std::vector<std::uint32_t>& src = rows_[r.ptr[c] / stride_].hist;
      const std::size_t i = r.ptr[c] % stride_;
      if (i >= src.size()) {
        r.len[c] = 0;  // the place after the match is not coded yet
      } else if (b < 0) {
        g = src[i];
        b = 8 * c + len_bucket(r.len[c]);
      }
    }
    if (b < 0 || g >= V) return;
    const std::uint64_t S = quant::int_row_sum(w, V);
    const std::uint64_t wg = w[g];
    if (S == wg) return;  // nothing else to take mass from (or an all-zero row)
    const std::uint64_t p = std::min<std::uint64_t>(65535, std::max<std::uint64_t>(1, (wg << 16) / S));
    const int u = cm::stretch(static_cast<int>(p)) + 3072;
    const int j = u / 192, f = u % 192;
    const std::uint16_t* a = &apm_[b * kKnots + j];
    const int h = (int{a[0]} * (192 - f) + int{a[1]} * f) / 192;
    *q = static_cast<std::uint32_t>(std::min(std::max(h, 32), 65504));
    *match = g;
    r.cell = b * kKnots + j + (f >= 96 ? 1 : 0);
    r.guess = g;
  }

  void push_row(std::size_t ri, Row& r, std::uint32_t s) {
    r.pending = false;
    if (r.cell >= 0) {
      std::uint16_t& a = apm_[r.cell];
      const int y = s == r.guess ? 65536 : 0;
      a = static_cast<std::uint16_t>(a + ((y - int{a}) >> spec_.rate));
      r.cell = -1;
    }
    for (int c = 0; c < 2; ++c) {
      if (r.len[c] == 0) continue;
      const std::vector<std::uint32_t>& src = rows_[r.ptr[c] / stride_].hist;
      const std::size_t i = r.ptr[c] % stride_;
      if (i < src.size() && src[i] == s) {  // (a feed has no mix to check the place first)
        if (r.len[c] < kMaxLen) ++r.len[c];
        ++r.ptr[c];
      } else {
        r.len[c] = 0;
      }
    }
    r.hist.push_back(s);
    const std::size_t n = r.hist.size();
    for (int c = 0; c < 2; ++c) {
      const std::size_t L = static_cast<std::size_t>(c == 0 ? spec_.long_len : spec_.min_len);
      if (n < L) continue;
      const std::uint32_t* tail = r.hist.data() + (n - L);
      std::uint32_t h = 0;
      for (std::size_t t = 0; t < L; ++t) h = (h + tail[t] + 1u) * 0x9E3779B1u;
      std::uint32_t& slot = table_[c][h >> (32 - spec_.hash_bits)];
      if (r.len[c] == 0 && slot != 0) {
        const std::vector<std::uint32_t>& src = rows_[slot / stride_].hist;
        const std::size_t i = slot % stride_;  // >= L: a key of this length ended there
        if (std::equal(tail, tail + L, src.data() + (i - L))) {
          r.ptr[c] = slot;
          r.len[c] = static_cast<std::uint32_t>(L);
        }
      }
      slot = static_cast<std::uint32_t>(ri * stride_ + n);
    }
  }

  Spec spec_;
  std::size_t max_len_, stride_;
  std::vector<Row> rows_;
  std::array<std::vector<std::uint32_t>, 2> table_;
  std::array<std::uint16_t, kBuckets * kKnots> apm_{};
  detail::RowChecker checker_;
};

}  // namespace wave
}  // namespace pyllmcodec
