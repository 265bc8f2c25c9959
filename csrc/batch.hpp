// batch.hpp -- BatchEncoder / BatchDecoder: many independent range-coder
// streams stepped together, one symbol per stream per call.
//
// Plain C++17; knows nothing of Python.  Threading: an object is not
// thread-safe (the bindings refuse concurrent use of one object); distinct
// objects may be used from distinct threads at the same time.
//
// Every call is all-or-nothing: it first validates all inputs and computes
// every stream's (cum_low, freq) into scratch arrays, and only then advances
// the streams.  So an exception (bad row, corrupt stream) leaves every stream
// exactly as it was.
//
// `rows`: optional indices of the streams that code in this call (unique, in
// [0, n_streams)); row k of the inputs belongs to stream rows[k].  Without
// rows, row k belongs to stream k and there must be n_streams rows.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "quantizer.hpp"
#include "quantizer_int.hpp"
#include "range_coder.hpp"
#include "rows.hpp"

namespace pyllmcodec {

namespace detail {

inline void check_symbol(std::int64_t s, std::size_t V, std::size_t k) {
  if (s < 0 || static_cast<std::uint64_t>(s) >= V) {
    throw InvalidInput("symbols[" + std::to_string(k) + "] = " + std::to_string(s) +
                       " is outside the alphabet [0, " + std::to_string(V) + ")");
  }
}

// A user-supplied CDF row must start at 0, end at 2^P and never decrease
// (zero-frequency symbols are allowed but cannot be coded).  O(V), one read.
inline void check_cdf_row(const std::uint32_t* cdf, std::size_t V, int precision, std::size_t k) {
  const std::uint32_t total = std::uint32_t{1} << precision;
  int bad = 0;
  for (std::size_t i = 0; i < V; ++i) bad |= cdf[i + 1] < cdf[i];
  if (cdf[0] != 0 || cdf[V] != total || bad) {
    throw InvalidInput("cdf row " + std::to_string(k) + " is not a valid table: it must start at 0, end at 2^" +
                       std::to_string(precision) + " = " + std::to_string(total) +
                       " and never decrease (use quantize() with the same precision)");
  }
}

inline void check_precision(int precision) {
  if (precision < quant::kMinPrecision || precision > quant::kMaxPrecision) {
    throw InvalidInput("precision must be in [" + std::to_string(quant::kMinPrecision) + ", " +
                       std::to_string(quant::kMaxPrecision) + "], got " + std::to_string(precision));
  }
}

}  // namespace detail

class BatchEncoder {
 public:
  BatchEncoder(std::size_t n_streams, int precision)
      : precision_(precision), streams_((detail::check_precision(precision), n_streams)), rows_(n_streams) {}

  std::size_t n_streams() const { return streams_.size(); }
  int precision() const { return precision_; }
  bool finished() const { return finished_; }

  // Codes [cum_low[k], cum_low[k] + freq[k]) on stream rows[k].
  void encode_ranges(const std::uint32_t* cum_low, const std::uint32_t* freq, std::size_t m,
                     const std::int64_t* rows) {
    begin(rows, m);
    const std::uint64_t total = std::uint64_t{1} << precision_;
    for (std::size_t k = 0; k < m; ++k) {
      if (freq[k] == 0 || std::uint64_t{cum_low[k]} + freq[k] > total) {
        throw InvalidInput("range " + std::to_string(k) + " (cum_low = " + std::to_string(cum_low[k]) +
                           ", freq = " + std::to_string(freq[k]) + ") must have freq >= 1 and cum_low + freq <= 2^" +
                           std::to_string(precision_));
      }
    }
    apply(cum_low, freq, m, rows);
  }

  // cdf: m rows of V+1 entries.
  void encode_cdf(const std::uint32_t* cdf, std::size_t m, std::size_t V, const std::int64_t* symbols,
                  const std::int64_t* rows) {
    begin(rows, m);
    quant::check_shape(V, precision_);
    scratch(m);
    for (std::size_t k = 0; k < m; ++k) {
      const std::uint32_t* row = cdf + k * (V + 1);
      detail::check_cdf_row(row, V, precision_, k);
      const std::int64_t s = symbols[k];
      detail::check_symbol(s, V, k);
      c_[k] = row[s];
      f_[k] = row[s + 1] - row[s];
      if (f_[k] == 0) {
        throw InvalidInput("symbols[" + std::to_string(k) + "] = " + std::to_string(s) +
                           " has zero frequency in its cdf row and cannot be coded");
      }
    }
    apply(c_.data(), f_.data(), m, rows);
  }

  // probs: m rows of V float32; exactly the bits of quantize() + encode_cdf().
  void encode_probs(const float* probs, std::size_t m, std::size_t V, const std::int64_t* symbols,
                    const std::int64_t* rows) {
    begin(rows, m);
    quant::check_shape(V, precision_);
    scratch(m);
    for (std::size_t k = 0; k < m; ++k) detail::check_symbol(symbols[k], V, k);
    const quant::FpEnv fp_env;
    const auto& kern = quant::kernels();
    for (std::size_t k = 0; k < m; ++k) {
      kern.symbol_range(probs + k * V, V, precision_, static_cast<std::size_t>(symbols[k]), k, &c_[k], &f_[k]);
    }
    apply(c_.data(), f_.data(), m, rows);
  }

  // weights: m rows of V uint32 and optional match overrides (match[k] = -1:
  // none; else the symbol given q[k] / 2^16 of the mass); exactly the bits of
  // quantize_int() + encode_cdf() (csrc/quantizer_int.hpp).
  void encode_weights(const std::uint32_t* w, std::size_t m, std::size_t V, const std::int64_t* symbols,
                      const std::int64_t* rows, const std::int64_t* match, const std::uint32_t* q) {
    begin(rows, m);
    quant::check_shape(V, precision_);
    scratch(m);
    for (std::size_t k = 0; k < m; ++k) detail::check_symbol(symbols[k], V, k);
    for (std::size_t k = 0; k < m; ++k) {
      quant::int_symbol_range(w + k * V, V, precision_, match ? match[k] : -1, q ? q[k] : 0,
                              static_cast<std::size_t>(symbols[k]), k, &c_[k], &f_[k]);
    }
    apply(c_.data(), f_.data(), m, rows);
  }

  // For a stage that codes on the streams itself (csrc/cm.hpp): checks
  // rows as every call does; then stream(rows, k) is row k's stream.
  void check_rows(const std::int64_t* rows, std::size_t m) { begin(rows, m); }
  rc::EncoderStream& stream(const std::int64_t* rows, std::size_t k) { return streams_[detail::stream_of(rows, k)]; }

  // Ends every stream; the encoder cannot be used afterwards.
  std::vector<std::vector<std::uint8_t>> finish() {
    check_open();
    finished_ = true;
    std::vector<std::vector<std::uint8_t>> out;
    out.reserve(streams_.size());
    for (auto& s : streams_) out.push_back(s.finish());
    return out;
  }

 private:
  void check_open() const {
    if (finished_) throw InvalidInput("this BatchEncoder was already finished; create a new one");
  }
  void begin(const std::int64_t* rows, std::size_t m) {
    check_open();
    rows_.check(rows, m);
  }
  void scratch(std::size_t m) {
    if (c_.size() < m) {
      c_.resize(m);
      f_.resize(m);
    }
  }
  void apply(const std::uint32_t* c, const std::uint32_t* f, std::size_t m, const std::int64_t* rows) {
    for (std::size_t k = 0; k < m; ++k) streams_[detail::stream_of(rows, k)].put(c[k], f[k], precision_);
  }

  int precision_;
  std::vector<rc::EncoderStream> streams_;
  detail::RowChecker rows_;
  std::vector<std::uint32_t> c_, f_;
  bool finished_ = false;
};

class BatchDecoder {
 public:
  // data: all streams concatenated; offsets: n_streams + 1 boundaries.
  BatchDecoder(std::vector<std::uint8_t> data, std::vector<std::size_t> offsets, int precision)
      : precision_(precision), data_(std::move(data)), offsets_(std::move(offsets)),
        streams_((detail::check_precision(precision), offsets_.size() - 1)), rows_(offsets_.size() - 1) {
    for (std::size_t i = 0; i + 1 < offsets_.size(); ++i) {
      streams_[i].start(data_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]);
    }
  }

  std::size_t n_streams() const { return streams_.size(); }
  int precision() const { return precision_; }

  // Bytes consumed by stream i so far, including zeros read past its end.
  std::size_t position(std::size_t i) const { return streams_[i].pos; }
  std::size_t size(std::size_t i) const { return streams_[i].size; }

  // out[k] = target of stream rows[k]; read-only.
  void targets(std::uint32_t* out, std::size_t m, const std::int64_t* rows) {
    rows_.check(rows, m);
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t i = detail::stream_of(rows, k);
      out[k] = streams_[i].target(precision_, i);
    }
  }

  // Consumes [cum_low[k], cum_low[k] + freq[k]) on stream rows[k]; each must
  // contain that stream's target (else CorruptData: CDF mismatch/corruption).
  void advance(const std::uint32_t* cum_low, const std::uint32_t* freq, std::size_t m, const std::int64_t* rows) {
    rows_.check(rows, m);
    const std::uint64_t total = std::uint64_t{1} << precision_;
    for (std::size_t k = 0; k < m; ++k) {
      if (freq[k] == 0 || std::uint64_t{cum_low[k]} + freq[k] > total) {
        throw InvalidInput("range " + std::to_string(k) + " (cum_low = " + std::to_string(cum_low[k]) +
                           ", freq = " + std::to_string(freq[k]) + ") must have freq >= 1 and cum_low + freq <= 2^" +
                           std::to_string(precision_));
      }
      const std::size_t i = detail::stream_of(rows, k);
      const std::uint32_t t = streams_[i].target(precision_, i);
      if (t < cum_low[k] || t - cum_low[k] >= freq[k]) {
        throw CorruptData("stream " + std::to_string(i) + ": target " + std::to_string(t) + " is not in [" +
                          std::to_string(cum_low[k]) + ", " + std::to_string(std::uint64_t{cum_low[k]} + freq[k]) +
                          "); the distribution differs from the encoder's, or the stream is corrupt");
      }
    }
    apply(cum_low, freq, m, rows);
  }

  void decode_cdf(const std::uint32_t* cdf, std::size_t m, std::size_t V, std::int64_t* symbols_out,
                  const std::int64_t* rows) {
    rows_.check(rows, m);
    quant::check_shape(V, precision_);
    scratch(m);
    for (std::size_t k = 0; k < m; ++k) {
      const std::uint32_t* row = cdf + k * (V + 1);
      detail::check_cdf_row(row, V, precision_, k);
      const std::size_t i = detail::stream_of(rows, k);
      const std::uint32_t t = streams_[i].target(precision_, i);
      // s = last index with row[s] <= t; exists since row[0] = 0 <= t < row[V].
      const std::size_t s = static_cast<std::size_t>(std::upper_bound(row, row + V + 1, t) - row) - 1;
      symbols_out[k] = static_cast<std::int64_t>(s);
      c_[k] = row[s];
      f_[k] = row[s + 1] - row[s];
    }
    apply(c_.data(), f_.data(), m, rows);
  }

  void decode_probs(const float* probs, std::size_t m, std::size_t V, std::int64_t* symbols_out,
                    const std::int64_t* rows) {
    rows_.check(rows, m);
    quant::check_shape(V, precision_);
    scratch(m);
    const quant::FpEnv fp_env;
    const auto& kern = quant::kernels();
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t i = detail::stream_of(rows, k);
      const std::uint32_t t = streams_[i].target(precision_, i);
      symbols_out[k] = static_cast<std::int64_t>(kern.find_symbol(probs + k * V, V, precision_, t, k, &c_[k], &f_[k]));
    }
    apply(c_.data(), f_.data(), m, rows);
  }

  // Mirror of BatchEncoder::check_rows / stream.
  void check_rows(const std::int64_t* rows, std::size_t m) { rows_.check(rows, m); }
  rc::DecoderStream& stream(const std::int64_t* rows, std::size_t k) { return streams_[detail::stream_of(rows, k)]; }

  // Mirror of BatchEncoder::encode_weights.  Every row's constants are
  // computed (and validated) before any stream moves: all-or-nothing.
  void decode_weights(const std::uint32_t* w, std::size_t m, std::size_t V, std::int64_t* symbols_out,
                      const std::int64_t* rows, const std::int64_t* match, const std::uint32_t* q) {
    rows_.check(rows, m);
    quant::check_shape(V, precision_);
    scratch(m);
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t i = detail::stream_of(rows, k);
      const std::uint32_t t = streams_[i].target(precision_, i);
      symbols_out[k] = static_cast<std::int64_t>(
          quant::int_find_symbol(w + k * V, V, precision_, match ? match[k] : -1, q ? q[k] : 0, t, k, &c_[k], &f_[k]));
    }
    apply(c_.data(), f_.data(), m, rows);
  }

 private:
  void scratch(std::size_t m) {
    if (c_.size() < m) {
      c_.resize(m);
      f_.resize(m);
    }
  }
  void apply(const std::uint32_t* c, const std::uint32_t* f, std::size_t m, const std::int64_t* rows) {
    for (std::size_t k = 0; k < m; ++k) streams_[detail::stream_of(rows, k)].advance(c[k], f[k], precision_);
  }

  int precision_;
  std::vector<std::uint8_t> data_;
  std::vector<std::size_t> offsets_;
  std::vector<rc::DecoderStream> streams_;
  detail::RowChecker rows_;
  std::vector<std::uint32_t> c_, f_;
};

// quantize(): m rows of V probs -> m rows of V+1 cdf entries.
inline void quantize(const float* probs, std::size_t m, std::size_t V, int precision, std::uint32_t* cdf) {
  quant::check_shape(V, precision);
  const quant::FpEnv fp_env;
  const auto& kern = quant::kernels();
  for (std::size_t k = 0; k < m; ++k) kern.quantize_row(probs + k * V, V, precision, cdf + k * (V + 1), k);
}

// quantize_int(): m rows of V uint32 weights -> m rows of V+1 cdf entries.
inline void quantize_int(const std::uint32_t* w, std::size_t m, std::size_t V, int precision, const std::int64_t* match,
                         const std::uint32_t* q, std::uint32_t* cdf) {
  quant::check_shape(V, precision);
  for (std::size_t k = 0; k < m; ++k) {
    quant::quantize_int_row(w + k * V, V, precision, match ? match[k] : -1, q ? q[k] : 0, cdf + k * (V + 1), k);
  }
}

}  // namespace pyllmcodec
