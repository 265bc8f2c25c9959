// range_coder.hpp -- a batch of independent byte-oriented range coders.
//
// Plain C++17; knows nothing of Python.
//
// ---------------------------------------------------------------------------
// READ ME FIRST
// ---------------------------------------------------------------------------
// A carry-propagating range coder (the LZMA "cache + pending 0xFF" scheme)
// widened to a 56-bit window held in a 64-bit `low`.
//
// Interval convention: the coder state is the half-open interval
// [low, low + range) in units of the current byte position; a symbol with
// cumulative frequency c and frequency f out of 2^P narrows it to
//     r = range >> P;   low += r * c;   range = r * f.
// (The slack range - r * 2^P < 2^P is simply never used.)
//
// Invariants (asserted in debug builds):
//   * between symbols: kBot <= range <= kTop, i.e. 2^48 <= range <= 2^56;
//   * low + range <= 2^57: after a byte is shifted out low < 2^56, and later
//     steps only shrink the interval, so at most one carry bit (bit 56) is
//     ever pending in `low`;
//   * P <= 31, so r = range >> P >= 2^17 > 0 and r * f <= r * 2^P <= range:
//     the coding loss from truncating r is < 2^(P-48) <= 2^-17 relative
//     (<= 1.1e-5 bits/symbol), and no product overflows 64 bits.
//
// Why these constants:
//   kTop = 2^56  the window: 7 bytes, leaving 8 bits of `low` for the carry
//                and the byte being shifted out.
//   kBot = 2^48  renormalise (one byte at a time) when range drops below it;
//                this keeps range >> 31 >= 2^17.
//
// Output: bytes are produced MSB first.  The top byte of the window waits in
// `cache` (and runs of 0xFF bytes in `pending`) until a carry can no longer
// reach it.  There is no leading byte (unlike LZMA): the very first byte can
// never receive a carry, since every interval lies inside the initial
// [0, 2^56).
//
// Flush: finish() picks the value in [low, low + range) with the most
// trailing zero bits, writes it out, and strips ALL trailing zero bytes of
// the stream.  The decoder reads zeros past the end of its input, so the
// stripped bytes come back for free; a stream with no symbols is b"".
// Cost: at most 1 bit plus rounding to a byte over the information content.
//
// Decoder: keeps code = (value - low) in [0, range) instead of low.  Per
// symbol: target = code / r must be < 2^P (else the data is corrupt:
// CorruptData), the symbol is the one whose [c, c + f) holds the target, then
// code -= r * c, range = r * f, and renormalise.  Reading past the end yields
// zero bytes, so truncated or foreign input costs O(1) per symbol, never reads
// out of bounds and never loops: range >= r >= 2^17 after any step, so a
// renormalisation reads at most 4 bytes.
// ---------------------------------------------------------------------------
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "quantizer.hpp"

namespace pyllmcodec {
namespace rc {

constexpr int kWindowBits = 56;
constexpr std::uint64_t kTop = std::uint64_t{1} << kWindowBits;  // window size
constexpr std::uint64_t kBot = std::uint64_t{1} << 48;           // renormalise below
constexpr std::uint64_t kFFTop = std::uint64_t{0xFF} << 48;      // low >= this: top byte is 0xFF
constexpr int kWindowBytes = kWindowBits / 8;                    // 7

// One encoder stream.
struct EncoderStream {
  std::uint64_t low = 0;
  std::uint64_t range = kTop;
  std::uint64_t pending = 0;  // 0xFF bytes waiting behind `cache`
  std::uint8_t cache = 0;     // the byte that may still receive a carry
  bool has_cache = false;     // false until the first byte is shifted out
  std::vector<std::uint8_t> out;

  // Moves the top byte of the window into cache/pending, resolving the carry.
  void shift_low() {
    if (low < kFFTop || low >= kTop) {
      // Top byte is not 0xFF, or a carry arrived: cache and pending are final.
      const std::uint8_t carry = static_cast<std::uint8_t>(low >> kWindowBits);  // 0 or 1
      if (has_cache) {
        out.push_back(static_cast<std::uint8_t>(cache + carry));
      } else {
        assert(carry == 0);  // nothing can carry out of [0, 2^56)
      }
      for (; pending != 0; --pending) out.push_back(static_cast<std::uint8_t>(0xFF + carry));
      cache = static_cast<std::uint8_t>(low >> 48);
      has_cache = true;
    } else {
      ++pending;  // top byte is 0xFF and no carry yet: it may still wrap
    }
    low = (low & (kBot - 1)) << 8;
  }

  // Codes [cum_low, cum_low + freq) out of 2^precision.  Caller validated
  // freq >= 1 and cum_low + freq <= 2^precision.
  void put(std::uint32_t cum_low, std::uint32_t freq, int precision) {
    assert(range >= kBot && range <= kTop && low + range <= 2 * kTop);
    const std::uint64_t r = range >> precision;
    low += r * cum_low;
    range = r * freq;
    while (range < kBot) {
      shift_low();
      range <<= 8;
    }
  }

  // Ends the stream and returns its bytes; the stream is left empty.
  std::vector<std::uint8_t> finish() {
    const std::uint64_t hi = low + range;  // exclusive, <= 2^57
    for (int k = kWindowBits + 1; k >= 0; --k) {
      const std::uint64_t m = std::uint64_t{1} << k;
      const std::uint64_t v = (low + m - 1) & ~(m - 1);
      if (v < hi) {
        low = v;
        break;
      }
    }
    // kWindowBytes shifts move the window into cache/pending; one more (with
    // low == 0, which cannot be 0xFF) writes them out.
    for (int i = 0; i <= kWindowBytes; ++i) shift_low();
    while (!out.empty() && out.back() == 0) out.pop_back();
    std::vector<std::uint8_t> result;
    result.swap(out);
    *this = EncoderStream();
    return result;
  }
};

// One decoder stream over bytes [data, data + size) owned elsewhere.
struct DecoderStream {
  std::uint64_t code = 0;  // value - low, in [0, range)
  std::uint64_t range = kTop;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;  // may pass size: past the end we read zeros

  std::uint8_t next_byte() {
    const std::uint8_t b = pos < size ? data[pos] : 0;
    ++pos;
    return b;
  }

  void start(const std::uint8_t* d, std::size_t n) {
    data = d;
    size = n;
    pos = 0;
    range = kTop;
    code = 0;
    for (int i = 0; i < kWindowBytes; ++i) code = (code << 8) | next_byte();
  }

  // Returns target in [0, 2^precision) or throws CorruptData.
  std::uint32_t target(int precision, std::size_t stream) const {
    const std::uint64_t r = range >> precision;
    const std::uint64_t t = code / r;
    if (t >> precision) {
      throw CorruptData("stream " + std::to_string(stream) +
                        " is corrupt or was not produced by this encoder (target out of range)");
    }
    return static_cast<std::uint32_t>(t);
  }

  // A binary decision at precision 16: 1 if target() < p1 (the interval
  // [0, p1)), else 0 ([p1, 2^16)), consumed as advance() would; the same
  // state as target() + advance(), without the division (floor(code / r) <
  // p1 exactly when code < r p1).  0 < p1 < 2^16.
  int decode_bit(std::uint32_t p1, std::size_t stream) {
    const std::uint64_t r = range >> 16;
    if (code >= (r << 16)) {
      throw CorruptData("stream " + std::to_string(stream) +
                        " is corrupt or was not produced by this encoder (target out of range)");
    }
    const std::uint64_t split = r * p1;
    const int y = code < split ? 1 : 0;
    if (y) {
      range = split;
    } else {
      code -= split;
      range = r * (65536 - p1);
    }
    while (range < kBot) {
      code = (code << 8) | next_byte();
      range <<= 8;
    }
    return y;
  }

  // Consumes [cum_low, cum_low + freq), which must contain target().
  void advance(std::uint32_t cum_low, std::uint32_t freq, int precision) {
    const std::uint64_t r = range >> precision;
    assert(code / r >= cum_low && code / r < std::uint64_t{cum_low} + freq);
    code -= r * cum_low;
    range = r * freq;
    while (range < kBot) {
      code = (code << 8) | next_byte();
      range <<= 8;
    }
    assert(code < range);
  }
};

}  // namespace rc
}  // namespace pyllmcodec
