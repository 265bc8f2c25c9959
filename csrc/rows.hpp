// rows.hpp -- the `rows` argument shared by the batch coder and the mixer:
// optional indices of the rows that take part in a call (unique, in
// [0, n)); row k of the inputs belongs to rows[k], or to k without rows.
//
// Plain C++17; knows nothing of Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "quantizer.hpp"  // InvalidInput

namespace pyllmcodec {
namespace detail {

// Checks rows for range and uniqueness (O(m), using generation stamps).
class RowChecker {
 public:
  // `unit` names what a row indexes in messages ("stream", "mixer row").
  explicit RowChecker(std::size_t n, const char* unit = "stream") : stamp_(n, 0), unit_(unit) {}
  void check(const std::int64_t* rows, std::size_t m) {
    const std::size_t n = stamp_.size();
    if (rows == nullptr) {
      if (m != n) {
        throw InvalidInput("got " + std::to_string(m) + " rows for " + std::to_string(n) +
                           " " + unit_ + "s; pass rows= to code a subset of the " + unit_ + "s");
      }
      return;
    }
    if (m > n) {
      throw InvalidInput("got " + std::to_string(m) + " rows but there are only " + std::to_string(n) + " " +
                         unit_ + "s");
    }
    ++gen_;
    for (std::size_t k = 0; k < m; ++k) {
      const std::int64_t r = rows[k];
      if (r < 0 || static_cast<std::uint64_t>(r) >= n) {
        throw InvalidInput("rows[" + std::to_string(k) + "] = " + std::to_string(r) +
                           " is not a " + unit_ + " index in [0, " + std::to_string(n) + ")");
      }
      if (stamp_[r] == gen_) {
        throw InvalidInput("rows[" + std::to_string(k) + "] = " + std::to_string(r) +
                           " appears twice; each " + unit_ + " codes at most one symbol per step");
      }
      stamp_[r] = gen_;
    }
  }

 private:
  std::vector<std::uint64_t> stamp_;
  std::uint64_t gen_ = 0;
  std::string unit_;
};

inline std::size_t stream_of(const std::int64_t* rows, std::size_t k) {
  return rows ? static_cast<std::size_t>(rows[k]) : k;
}

// The match models' checks (mixer.hpp, wavematch.hpp), all before any row
// changes; row_of(k) is the state of the call's row k (.pending, .hist).
// Before a mix: no row still awaits the push of its last mix.
template <class RowOf>
void check_mix_rows(const std::int64_t* rows, std::size_t m, RowOf row_of) {
  for (std::size_t k = 0; k < m; ++k)
    if (row_of(k).pending)
      throw InvalidInput("mixer row " + std::to_string(stream_of(rows, k)) +
                         " was mixed twice without a push in between");
}

// Before a push (after_mix: each row was mixed) or a feed (no row awaits its
// push): the symbols in range, and room in each row's max_len.
template <class RowOf>
void check_append_rows(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows, bool after_mix,
                       std::size_t max_len, RowOf row_of) {
  for (std::size_t k = 0; k < m; ++k) {
    const auto& r = row_of(k);
    const std::string at = "mixer row " + std::to_string(stream_of(rows, k));
    if (after_mix && !r.pending) throw InvalidInput(at + " got a symbol without a mix first");
    if (!after_mix && r.pending) throw InvalidInput(at + " was fed between a mix and its push");
    if (symbols[k] < 0 || symbols[k] > 0x7fffffff) throw InvalidInput(at + ": symbol out of range");
    if (r.hist.size() >= max_len)
      throw InvalidInput(at + " is full (max_len " + std::to_string(max_len) + " symbols)");
  }
}

}  // namespace detail
}  // namespace pyllmcodec
