// cm.hpp -- the context-mixing stage: adaptive context models mixed with the
// language model's prediction, one byte as eight binary decisions.
//
// Plain C++17; knows nothing of Python (csrc/bindings.cpp binds it).
//
// ---------------------------------------------------------------------------
// READ ME FIRST: the mixing contract (docs/FORMAT.md section 4f)
// ---------------------------------------------------------------------------
// The model is frozen and sees one context window; what it lacks -- the
// chunk's own vocabulary, its repeats, text unlike its training set -- is
// what adaptive models learn as they go (lpaq/paq8/cmix).  Per wave this
// stage keeps hashed bit-level counters for several contexts of the rows'
// own bytes, mixes their predictions with the model's by two logistic
// mixers trained online, and refines the result with two APMs.
//
// Every step is integer arithmetic with fixed tables (no float anywhere):
// the same bits on every CPU, compiler and thread count.  The algorithm IS
// the format: encoder and decoder run it on the same bytes.
//
// Units: a probability p16 is P(bit = 1) in units of 2^-16, in 1..65535.  A
// stretched probability st = ln(p / (1 - p)) in units of 1/256 nat, in
// [-kLim, kLim], kLim = 3071 (12 nats).
//   squash(d): d clamped to [-3072, 3072]; i = (d + 3072) >> 6,
//     f = (d + 3072) & 63; p16 = (K[i] (64 - f) + K[i+1] f + 32) >> 6 with
//     the 97 knots K below (K[i] = round(65536 / (1 + exp(-(i - 48) / 4))),
//     clamped to 1..65535, computed once and written here as integers).
//   stretch(p16) = the smallest d in [-3071, 3071] with squash(d) >= p16
//     (3071 if none): a 65536-entry table built from squash by an integer
//     scan.
//
// A byte is coded MSB first.  Before bit j (7..0) the bits so far select the
// model's symbols [lo, hi) (lo = 0, hi = 256 at the start; mid = (lo+hi)/2;
// bit 1 means [mid, hi)).  From the model's frequency table cdf (the integer
// quantizer's, csrc/quantizer_int.hpp, with the match model's override):
//   n = cdf[hi] - cdf[lo], n1 = cdf[hi] - cdf[mid],
//   p_lm = clamp(floor(n1 * 65536 / n), 1, 65535)   (uint64; n >= 2).
// The row's state predicts p (predict, below); the bit is coded on the
// row's range-coder stream at precision 16: bit 1 -> [0, p), bit 0 ->
// [p, 65536); then the state learns the bit (update).
//
// One learned state (a Model: counters, mixers, APMs) per group of a wave's
// rows -- the rows of one archive; a wave of compress_batch may hold several
// archives, each decodable alone --, shared by the group's rows, which take
// turns: each step codes row k's byte (eight bits, predict then update per
// bit) before row k+1's, in the order the call gives the rows -- the decoder
// gives the same order.  Each row has its own byte history (a RowCtx); what
// a row learns serves every row of its group after it.  So an archive's
// chunks in a wave decode together (random access is per wave), and the
// stage sees a wave's bytes where a per-chunk state would see a chunk's:
// alice29, 19 chunks of 8 KiB in one wave, 2.316 bits/byte (model alone) ->
// 2.19 with a state per chunk -> 1.88 shared (bench/studies/cm_stage.py).
//
// RowCtx (fresh for every chunk): c0 = 1 (the bits of the byte so far,
//   behind a leading 1); hist, hist2 = 0 (the last 16 bytes, newest in the
//   low byte of hist); word = word1 = 0 (hashes of the current and the
//   previous word: letters, case folded).
//   A finished byte b: hist2 = hist2 << 8 | hist >> 56, hist = hist << 8 | b;
//   a letter: word = (word + (b | 32) + 1) * C3; else if word != 0: word1 =
//   word, word = 0; then the contexts are
//   hashed again: h[i] = H(x, k) = ((x + k + 1) C3) ^ (... >> 29), uint64:
//     0..4: the last 1, 2, 3, 4, 6 bytes        (k = 1, 2, 3, 4, 6)
//     5: the word (k 7), or the last byte outside a word (k 8)
//     6: the last 5 bytes (k 5)
//     7: the last 10 bytes: H(hist, 9) ^ H(hist2 & 0xffff, 10)
//     8: the word pair: H(word1 + 3 word, 11)
//   (A column context and a skip context were measured and dropped: they
//   saved under 0.0005 bits/byte on alice29 and linux-doc.)
//
// Model (fresh for every group of every wave; table_bits: the header's, or
// less for a group of fewer bytes, pyllmcodec.scheduler.cm_groups):
//   Counters: kCtx tables of 2^table_bits uint32 slots, each 0x80000000
//   (p22 = 2^21 in the high 22 bits, count n = 0 in the low 10), and an
//   order-0 table of 256 such slots indexed by c0.  The slot of context i
//   for bit c0 (b = bits known, 0..7): key = 0 for b < 4, else the first
//   nibble behind its leading 1, c0 >> (b - 4) (16..31); nib = the bits
//   of the current nibble behind a leading 1 (c0 for b < 4, else (c0 &
//   (2^(b-4) - 1)) | 2^(b-4)), 1..15; z = ((h[i] ^ ((key + 1) * C1)) * C2)
//   >> (64 - table_bits) (uint64); slot = (z & ~15) + nib: buckets of 16,
//   one 64-byte line, two per context per byte.
//   Mixers: kSets x kIn and 256 x kIn int32 weights (16.16), 65536 on the
//   model's input and 0 elsewhere: a fresh wave starts as the model alone.
//   APMs: 256 and 2^ab contexts x 33 uint16 knots (ab = min(12,
//   table_bits - 2)), knot j = squash(192 j - 3072).  (An APM 2 of 2^16
//   contexts, one per c0 and last byte, coded within 0.0003 bits/byte of
//   this and cost 20% more time: its 4.3 MB miss the cache.)
//
// predict(p_lm):
//   x[0] = stretch(p_lm); x[1] = stretch12(order-0 slot >> 20);
//   x[2 + i] = stretch12(slot_i >> 20); x[kIn - 1] = 256 (bias), where
//   stretch12(q) = stretch(16 q + 8) (a 4096-entry table).
//   Mixer 1, weight set s = min(15, (x[0] + 3072) * 16 / 6144) (the model's
//   confidence); mixer 2, weight set c0.  d_m = clamp((sum_k w_m[k] x[k])
//   >> 16, -3071, 3071) (int64, arithmetic shift); pm_m = squash(d_m).
//   dot = (d_1 + d_2) >> 1; pm = squash(dot).
//   APMs: pos = dot + 3072, j = pos / 192, f = pos % 192; APM 1 context c0,
//   APM 2 context ((c0 | (last byte << 8)) * 0x9E3779B1 mod 2^32) >> (32 -
//   ab); pa, pb = (A[j] (192 - f) + A[j+1] f)
//   / 192 of each.  p = clamp((2 pm + 3 pa + 3 pb) >> 3, 1, 65535).
// update(y):
//   Mixer m: err = (y << 16) - pm_m; w_m[k] += (x[k] err lr + 2^19) >> 20.
//   Each APM's nearer knot (j, or j+1 when f >= 96): A += ((y << 16) - A)
//   >> 6.  Every counter slot used (order 0 and the kCtx hashed): with n =
//   slot & 1023 and p22 = slot >> 10, p22 += ((y << 22) - p22) * R[n] >> 16
//   (R[n] = floor(131072 / (2n + 3)), int64, arithmetic shift), n = min(n +
//   1, limit).  Then the row moves on by y (RowCtx above).
//   Constants of both kinds: limit 255, lr 8.
//
// feed(b): a byte read without coding (a dictionary): its eight bits update
//   the counters (not the mixers or the APMs) and move the row on.
//
// Kind cm2 (Params::kind 2; header kind "cm2", what full archives write
// since the long mode): all of the above, plus a match model over the
// group's bytes.  Everything cm1 computes is unchanged; cm2 adds:
//   A ring of 2^(table_bits + 2) bytes and a table of 2^table_bits uint32
//   places (0: empty) per group; 64 counters (as the others, 0x80000000).
//   Places are absolute uint32 (mod 2^32), the ring index is place mod the
//   ring's size.  When a ContextMixer is made, its rows 0..n-1 in order each
//   take the group's next max_len places (the codec passes chunk_size plus
//   the dictionary's length): a row's bytes go to base, base + 1, ...;
//   the group's first place is 1 and places continue across waves in the
//   long mode.
//   Per row: pos (next place), mptr, mlen (0: no match), nb (bytes so far,
//   capped at 32).  After each byte b of a row (coded or fed), match_byte:
//     ring[pos] = b; pos += 1; nb = min(nb + 1, 32).
//     If mlen > 0: if ring[mptr] == b, mlen = min(mlen + 1, 65535) and
//     mptr += 1, else mlen = 0.
//     If nb >= 8: h = H(hist, 12) >> (64 - table_bits) (the last 8 bytes);
//     if mlen == 0 and T[h] != 0: cand = T[h], back = pos - cand (uint32);
//     if 0 < back < ring size - 1: n = the number of k in 0.. with k < nb,
//     k < 32 and ring[cand - 1 - k] == ring[pos - 1 - k] (stopping at the
//     first difference); if n >= 8, mlen = n and mptr = cand.  Then T[h] =
//     pos.
//   predict: x[kIn] (after the bias) = 0 when mlen = 0 or the byte at
//     ring[mptr] (with a leading 1, pb) disagrees with the bits so far
//     (pb >> (8 - b) != c0, b bits known); else e = (pb >> (7 - b)) & 1,
//     counter M[2 min(mlen, 31) + e], x[kIn] = stretch12(M >> 20), and
//     mixer 1's weight set is s + 16 (mlen < 16) or s + 32 (mlen >= 16).
//     The mixers run over kIn + 1 inputs.
//   update: that counter, if any, learns y as the others do.
//
// Kind cm3 (Params::kind 3; header kind "cm3", what full archives write since
// the release after cm2's): cm2's match model and mixers 1 and 2 as they
// are; the hashed counters, their inputs and the final mix change:
//   Checked buckets.  At a nibble's first bit (c0 = 1, or 16..31) each
//     context i finds its bucket for the nibble: z as in cm1's slot (key 0
//     or c0), A = (i << table_bits) + ((z >> (64 - table_bits)) & ~15), B =
//     A ^ 16, check = (z mod 2^32) | 1.  Slot 0 of a bucket (unused by cm1)
//     holds its check as is.  If A's check equals check: A; else if B's: B
//     (both "found"); else the victim is B if the count (low 10 bits) of
//     B's slot 1 is below A's, else A: its check is set and its 15 counters
//     are set to the initial 0x80000000.  The row keeps the nibble's buckets;
//     a bit's counter is bucket + nib.  At c0 = 1 and 16..31 predict also
//     counts the found buckets (found, 0..9); feed finds buckets alike
//     without counting.  (Rows share the group's tables: a bucket a row
//     holds may be taken by another row's miss meanwhile; both sides see it.)
//   Maps.  Per context i, 16 x 64 uint16 probabilities, map[(i * 16 + nq)
//     * 64 + j] initially squash(96 j - 3024), where n is the counter's
//     count, nq = n for n < 8, else 8, 9, 10, 11 for n < 16, 32, 64, 128,
//     and 12 above; j = (x[2 + i] + 3072) / 96.  x[kIn + 1 + i] =
//     stretch(map) (after the match input: 22 inputs in all).  Update:
//     map += ((y << 16) - map) >> 7 (arithmetic shift).
//   Mixer 3.  (kCtx + 1) * 8 sets of inputs (initially 65536 on x[0]); set
//     = found * 8 + b (bits known).  d3 as d1, pm3 = squash(d3), trained as
//     the others with err = (y << 16) - pm3.  dot = clamp(((d1 + d2 + d3) *
//     21846) >> 16, -3071, 3071) (int64, arithmetic shift) replaces (d1 +
//     d2) >> 1; the APMs and the final p are as in cm1.
//   table_bits may be up to 24 (the codec gives 23..24 to cm3 in the long
//   mode only, docs/FORMAT.md section 4f).
//   Measured (bench/studies/cm_stage.py, the model's recorded bits, ideal
//   bits/byte, cm2 -> cm3): linux-doc 1 MiB 1.4577 -> 1.4381, alice29 1.8750
//   -> 1.8490; linux-doc 10 MiB in the long mode 1.4394 -> 1.4096 at 22
//   bits, 1.3949 at 24.  Each part added in turn, linux-doc 1 MiB / alice29: the
//   checks -0.0098 / -0.0085, mixer 3 -0.0049 / -0.0072, the maps -0.0049 /
//   -0.0103.
//
// A State is a group's Model that outlives its wave (the long mode).
// ---------------------------------------------------------------------------
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "batch.hpp"
#include "quantizer.hpp"
#include "quantizer_int.hpp"
#include "range_coder.hpp"
#include "rows.hpp"

#if defined(__linux__)
#include <sys/mman.h>  // madvise (MADV_HUGEPAGE)
#endif

namespace pyllmcodec {
namespace cm {

constexpr int kLim = 3071;
constexpr int kCtx = 9;             // hashed contexts (RowCtx::rehash)
constexpr int kIn = kCtx + 3;       // the model, order 0, the hashed contexts, the bias
constexpr int kInMax = kIn + 1 + kCtx;  // cm2: the match model's input after the bias; cm3: the maps' after it
constexpr int kMinLen = 8;          // cm2: a match is looked up by the row's last 8 bytes
constexpr int kMatchCheck = 32;     // cm2: a candidate is verified over up to 32 bytes back
constexpr int kSets = 16;           // mixer weight sets, by the model's confidence
constexpr int kSetsMax = 3 * kSets;  // cm2: x 3 match states (none, length < 16, 16+)
constexpr int kApmKnots = 33;
constexpr int kSets3 = (kCtx + 1) * 8;  // cm3: mixer 3's weight sets, by contexts found x bits known
constexpr int kMapRate = 7;             // cm3: the counter maps learn at rate 2^-7
// cm3 priors: mixer 1's, 2's and 3's initial weights in that order (each
// [sets][kInMax], row-major), fitted offline and shipped in a bundle
constexpr std::size_t kPriorWeights = std::size_t{kSetsMax + 256 + kSets3} * kInMax;
constexpr std::int32_t kPriorMax = std::int32_t{1} << 24;  // |a prior weight| <= 2^24 (256.0)

// K[i] = round(65536 / (1 + exp(-(i - 48) / 4))), clamped to 1..65535.
constexpr std::array<std::uint16_t, 97> kSquashKnots = {
    1,     1,     1,     1,     1,     1,     2,     2,     3,     4,     5,     6,     8,     10,    13,
    17,    22,    28,    36,    47,    60,    77,    98,    126,   162,   208,   267,   342,   439,   562,
    720,   922,   1179,  1506,  1921,  2446,  3108,  3938,  4971,  6249,  7812,  9702,  11955, 14595, 17625,
    21025, 24743, 28693, 32768, 36843, 40793, 44511, 47911, 50941, 53581, 55834, 57724, 59287, 60565, 61598,
    62428, 63090, 63615, 64030, 64357, 64614, 64816, 64974, 65097, 65194, 65269, 65328, 65374, 65410, 65438,
    65459, 65476, 65489, 65500, 65508, 65514, 65519, 65523, 65526, 65528, 65530, 65531, 65532, 65533, 65534,
    65534, 65535, 65535, 65535, 65535, 65535, 65535};

inline int squash(int d) {
  if (d > 3072) d = 3072;
  if (d < -3072) d = -3072;
  const int u = d + 3072;
  const int i = u >> 6, f = u & 63;
  if (i >= 96) return kSquashKnots[96];
  return (kSquashKnots[i] * (64 - f) + kSquashKnots[i + 1] * f + 32) >> 6;
}

// stretch table: the inverse of squash, by an integer scan (built once).
inline const std::int16_t* stretch_table() {
  static const std::vector<std::int16_t> t = [] {
    std::vector<std::int16_t> v(65536, static_cast<std::int16_t>(kLim));
    int next = 0;  // smallest p16 not yet assigned
    for (int d = -kLim; d <= kLim && next < 65536; ++d) {
      const int p = squash(d);
      for (; next <= p && next < 65536; ++next) v[next] = static_cast<std::int16_t>(d);
    }
    return v;
  }();
  return t.data();
}

inline int stretch(int p16) { return stretch_table()[p16]; }

// A counter's stretch, from its top 12 bits (4096 entries, 8 KiB: the
// lines a bit touches stay few): stretch12(q) = stretch(16 q + 8).
inline const std::int16_t* stretch12_table() {
  static const std::vector<std::int16_t> t = [] {
    std::vector<std::int16_t> v(4096);
    for (int q = 0; q < 4096; ++q) v[q] = static_cast<std::int16_t>(stretch(16 * q + 8));
    return v;
  }();
  return t.data();
}

// R[n] = floor(131072 / (2n + 3)): the counters' rate 1 / (n + 1.5) in 2^-16.
inline const std::int32_t* rate_table() {
  static const std::array<std::int32_t, 1024> t = [] {
    std::array<std::int32_t, 1024> r{};
    for (int n = 0; n < 1024; ++n) r[n] = 131072 / (2 * n + 3);
    return r;
  }();
  return t.data();
}

struct Params {
  int kind = 1;         // 1: cm1; 2: cm2 (cm1 plus the match model); 3: cm3 (cm2 plus checked buckets, maps, mixer 3)
  int table_bits = 16;  // 2^table_bits slots per hashed context, 10..24
  int limit = 255;      // the counters' count cap: the slowest rate 1/(limit + 1.5), 1..1023
  int lr = 8;           // the mixer's learning rate (x err x lr / 2^20), 1..128
  // cm3 only: the mixers' initial weights (kPriorWeights, shared and never
  // written), or null: 65536 on the model's input and 0 elsewhere
  std::shared_ptr<const std::vector<std::int32_t>> priors;

  void validate() const {
    auto bad = [](const std::string& what) { throw InvalidInput("context-mixing spec: " + what); };
    if (kind < 1 || kind > 3) bad("kind must be 1 (cm1), 2 (cm2) or 3 (cm3)");
    if (table_bits < 10 || table_bits > 24) bad("table_bits must be in 10..24");
    if (limit < 1 || limit > 1023) bad("limit must be in 1..1023");
    // above ~170 a saturated context's weight drifts without bound (int32)
    if (lr < 1 || lr > 128) bad("lr must be in 1..128");
    if (priors) {
      if (kind != 3) bad("priors are mixer weights of kind 3 (cm3)");
      if (priors->size() != kPriorWeights)
        bad("priors must be " + std::to_string(kPriorWeights) + " weights, got " + std::to_string(priors->size()));
      for (std::size_t k = 0; k < priors->size(); ++k) {
        const std::int32_t v = (*priors)[k];
        if (v < -kPriorMax || v > kPriorMax) bad("priors[" + std::to_string(k) + "] = " + std::to_string(v) +
                                                 " is outside -2^24..2^24");
      }
    }
  }

  // The bytes one row holds.
  std::size_t row_bytes() const {
    const int ab = table_bits - 2 < 12 ? table_bits - 2 : 12;
    return (std::size_t{kCtx} << table_bits) * 4 + 256 * 4 + (kSetsMax + 256) * kInMax * 4 +
           (256 + (std::size_t{1} << ab)) * kApmKnots * 2 + (kind >= 2 ? match_bytes() : 0) +
           (kind == 3 ? kSets3 * kInMax * 4 + kCtx * 16 * 64 * 2 : 0);
  }
  // cm2's match model: a ring of 2^(table_bits + 2) bytes and 2^table_bits uint32 positions.
  std::size_t match_bytes() const {
    return (std::size_t{1} << (table_bits + 2)) + (std::size_t{4} << table_bits) + 64 * 4;
  }
};

constexpr std::uint64_t kC1 = 0xff51afd7ed558ccdULL, kC2 = 0xc4ceb9fe1a85ec53ULL, kC3 = 0x9E3779B97F4A7C15ULL;

inline std::uint64_t hash_ctx(std::uint64_t x, std::uint64_t k) {
  x = (x + k + 1) * kC3;
  return x ^ (x >> 29);
}

// The counters' memory: 64-byte aligned lines (a bucket is one line),
// cleared up front (a table is up to 144 MiB; clearing it costs ~0.05 s, less
// than faulting in zero pages at random later: measured on alice29).  A slot
// is stored XOR 0x80000000, so that zero means the initial 0x80000000.
// Tables of 4 MiB or more sit on 2 MiB boundaries and ask Linux for
// transparent huge pages (where THP is "madvise", the common default): every
// context reads a random line, and with 4 KiB pages nearly each of those
// reads also missed the TLB.  Where the memory lies never changes a result,
// only the speed.
class CounterTable {
 public:
  explicit CounterTable(std::size_t n, bool clear = true) : n_(n), raw_(allocate(n)) {
    if (!raw_) throw std::bad_alloc();
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(raw_.get());
    data_ = raw_.get() + ((64 - a % 64) % 64) / 4;
    if (clear) std::memset(data_, 0, n * 4);
  }
  CounterTable(const CounterTable& o) : CounterTable(o.n_, false) { std::memcpy(data_, o.data_, n_ * 4); }
  CounterTable& operator=(const CounterTable&) = delete;
  std::uint32_t* slot(std::size_t i) { return data_ + i; }
  static std::uint32_t get(const std::uint32_t* s) { return *s ^ 0x80000000u; }
  static void put(std::uint32_t* s, std::uint32_t v) { *s = v ^ 0x80000000u; }

 private:
  struct Free {
    void operator()(std::uint32_t* p) const { std::free(p); }
  };
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  static std::uint32_t* allocate(std::size_t n) {
    const std::size_t bytes = (n + 16) * 4;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= 2 * kHuge) {
      const std::size_t whole = (bytes + kHuge - 1) / kHuge * kHuge;
      void* p = std::aligned_alloc(kHuge, whole);
      if (p != nullptr) madvise(p, whole, MADV_HUGEPAGE);  // a hint: refused, the pages are 4 KiB ones
      return static_cast<std::uint32_t*>(p);
    }
#endif
    return static_cast<std::uint32_t*>(std::malloc(bytes));
  }
  std::size_t n_;
  std::unique_ptr<std::uint32_t, Free> raw_;
  std::uint32_t* data_ = nullptr;
};

inline std::int64_t clamp_st(std::int64_t d) { return d > kLim ? kLim : (d < -kLim ? -kLim : d); }

inline bool is_letter(std::uint32_t b) { return (b | 32u) - 'a' < 26u; }

// A row's own context: the bytes it has coded (the contexts are hashed from
// these); what it predicts with lives in a Model, its own or a shared one.
struct RowCtx {
  std::array<std::uint64_t, kCtx> h{};
  // cm3: each context's bucket for the current nibble (found at its first
  // bit) and how many of them were found rather than taken
  std::array<std::size_t, kCtx> bucket{};
  int found = 0;
  std::uint64_t hist = 0, hist2 = 0, word = 0, word1 = 0;
  int c0 = 1;
  // cm2: where the row's bytes go in its group's ring (absolute, mod 2^32),
  // its first byte's place, and the match it follows (ptr: the predicted
  // byte's place; len 0: none)
  std::uint32_t pos = 0, base = 0, mptr = 0;
  int mlen = 0, nbytes = 0;

  RowCtx() { rehash(); }

  // c0 = 2 c0 + y; a finished byte enters the history and the contexts.
  void next_bit(int y) {
    c0 = 2 * c0 + y;
    if (c0 >= 256) {
      const std::uint32_t b = static_cast<std::uint32_t>(c0 - 256);
      hist2 = (hist2 << 8) | (hist >> 56);
      hist = (hist << 8) | b;
      if (is_letter(b)) {
        word = (word + (b | 32u) + 1) * kC3;
      } else if (word) {
        word1 = word;
        word = 0;
      }
      c0 = 1;
      rehash();
    }
  }

  void rehash() {
    h[0] = hash_ctx(hist & 0xff, 1);
    h[1] = hash_ctx(hist & 0xffff, 2);
    h[2] = hash_ctx(hist & 0xffffff, 3);
    h[3] = hash_ctx(hist & 0xffffffff, 4);
    h[4] = hash_ctx(hist & 0xffffffffffffULL, 6);
    h[5] = word ? hash_ctx(word, 7) : hash_ctx(hist & 0xff, 8);
    h[6] = hash_ctx(hist & 0xffffffffffULL, 5);
    h[7] = hash_ctx(hist, 9) ^ hash_ctx(hist2 & 0xffff, 10);
    h[8] = hash_ctx(word1 + word * 3, 11);
  }
};

// The learned state: counters, mixer weights, APM.  One per row (chunks
// independent) or one for a wave's rows (shared: rows take turns, in row
// order, one byte each per step).  predict and update alternate, one bit at
// a time, each for the RowCtx given.
class Model {
 public:
  explicit Model(const Params& p)
      : p_((p.validate(), p)),
        shift_(64 - p.table_bits),
        mask_((std::size_t{1} << p.table_bits) - 1),
        t_(std::size_t{kCtx} << p.table_bits),
        o0_(256, 0x80000000u),
        w_(kSetsMax * kInMax, 0),
        w2_(256 * kInMax, 0),
        apm_(256 * kApmKnots),
        apm2_bits_(p.table_bits - 2 < 12 ? p.table_bits - 2 : 12),
        apm2_((std::size_t{1} << apm2_bits_) * kApmKnots),
        n_in_(p.kind == 3 ? kInMax : p.kind == 2 ? kIn + 1 : kIn),
        ring_mask_(p.kind >= 2 ? (std::uint32_t{1} << (p.table_bits + 2)) - 1 : 0),
        ring_(p.kind >= 2 ? std::size_t{1} << (p.table_bits + 2) : 0, 0),
        mtab_(p.kind >= 2 ? std::size_t{1} << p.table_bits : 0, 0),
        mcount_(64, 0x80000000u),
        w3_(p.kind == 3 ? kSets3 * kInMax : 0, 0),
        map_(p.kind == 3 ? kCtx * 16 * 64 : 0) {
    for (std::size_t s = 0; s < w3_.size(); s += kInMax) w3_[s] = 65536;
    for (std::size_t k = 0; k < map_.size(); ++k) map_[k] = static_cast<std::uint16_t>(squash(96 * int(k % 64) - 3024));
    for (int s = 0; s < kSetsMax; ++s) w_[s * kInMax] = 65536;
    for (int s = 0; s < 256; ++s) w2_[s * kInMax] = 65536;
    for (int c = 0; c < 256; ++c)
      for (int j = 0; j < kApmKnots; ++j) apm_[c * kApmKnots + j] = static_cast<std::uint16_t>(squash(192 * j - 3072));
    for (std::size_t c = 0; c < (std::size_t{1} << apm2_bits_); ++c)
      for (int j = 0; j < kApmKnots; ++j) apm2_[c * kApmKnots + j] = apm_[j];
    if (p_.priors) {  // cm3 (validated): the fitted weights replace the three mixers' initial ones
      const std::int32_t* q = p_.priors->data();
      std::memcpy(w_.data(), q, w_.size() * 4);
      std::memcpy(w2_.data(), q + w_.size(), w2_.size() * 4);
      std::memcpy(w3_.data(), q + w_.size() + w2_.size(), w3_.size() * 4);
    }
  }

  // The three mixers' weights in the priors' layout (kind 3): what a state
  // has learned, from which training/fit_cm_priors.py takes a bundle's priors.
  std::vector<std::int32_t> weights() const {
    std::vector<std::int32_t> v(w_);
    v.insert(v.end(), w2_.begin(), w2_.end());
    v.insert(v.end(), w3_.begin(), w3_.end());
    return v;
  }

  const Params& params() const { return p_; }

  // cm2: a row of at most n bytes joins the group: its bytes take the next
  // n places of the ring (the rows of a wave in the order they are attached).
  void attach(RowCtx& r, std::size_t n) {
    r.pos = r.base = next_;
    next_ += static_cast<std::uint32_t>(n);
  }

  // P(bit = 1) for row context r's next bit, from the model's p_lm (1..65535).
  int predict(RowCtx& r, int p_lm) {
    const int x0 = stretch(p_lm);
    c0_ = r.c0;
    x_[0] = x0;
    const std::int16_t* st12 = stretch12_table();
    x_[1] = st12[o0_[c0_] >> 20];
    if (p_.kind == 3) {
      if (nibble_start(c0_)) find_all(r, true);
      for (int i = 0; i < kCtx; ++i) slot_[i] = t_.slot(r.bucket[i] + nibble(c0_));
    } else {
      for (int i = 0; i < kCtx; ++i) slot_[i] = t_.slot(index(i, r.h[i], c0_));
    }
    for (int i = 0; i < kCtx; ++i) x_[2 + i] = st12[CounterTable::get(slot_[i]) >> 20];
    x_[kIn - 1] = 256;
    if (p_.kind >= 2) x_[kIn] = static_cast<std::int32_t>(match_input(r));
    if (p_.kind == 3) {
      for (int i = 0; i < kCtx; ++i) {
        const int n = static_cast<int>(CounterTable::get(slot_[i]) & 1023u);
        const int nq = n < 8 ? n : n < 16 ? 8 : n < 32 ? 9 : n < 64 ? 10 : n < 128 ? 11 : 12;
        map_k_[i] = (i * 16 + nq) * 64 + static_cast<int>((x_[2 + i] + 3072) / 96);
        x_[kIn + 1 + i] = stretch(map_[map_k_[i]]);
      }
    }
    set_ = (x0 + 3072) * 16 / 6144;
    if (set_ > kSets - 1) set_ = kSets - 1;
    if (p_.kind >= 2 && mslot_ >= 0) set_ += kSets * (r.mlen < 16 ? 1 : 2);
    const std::int32_t* w = &w_[set_ * kInMax];
    const std::int32_t* w2 = &w2_[c0_ * kInMax];
    // The dot products (int64 sums of int64 products: any order gives the
    // same sums); cm3's three in one pass over x with a fixed trip count.
    std::int64_t d1 = 0, d2 = 0, d3 = 0;
    if (p_.kind == 3) {  // n_in_ == kInMax
      set3_ = r.found * 8 + (31 - __builtin_clz(static_cast<unsigned>(c0_)));
      const std::int32_t* w3 = &w3_[set3_ * kInMax];
      for (int k = 0; k < kInMax; ++k) {
        const std::int64_t x = x_[k];
        d1 += w[k] * x;
        d2 += w2[k] * x;
        d3 += w3[k] * x;
      }
    } else {
      for (int k = 0; k < n_in_; ++k) {
        d1 += std::int64_t{w[k]} * x_[k];
        d2 += std::int64_t{w2[k]} * x_[k];
      }
    }
    d1 = clamp_st(d1 >> 16);
    d2 = clamp_st(d2 >> 16);
    pm1_ = squash(static_cast<int>(d1));
    pm2_ = squash(static_cast<int>(d2));
    std::int64_t dot = (d1 + d2) >> 1;
    if (p_.kind == 3) {
      d3 = clamp_st(d3 >> 16);
      pm3_ = squash(static_cast<int>(d3));
      dot = clamp_st(((d1 + d2 + d3) * 21846) >> 16);
    }
    pm_ = squash(static_cast<int>(dot));
    const int pos = static_cast<int>(dot) + 3072;
    apm_j_ = pos / 192;
    apm_f_ = pos % 192;
    const std::uint16_t* a = &apm_[c0_ * kApmKnots + apm_j_];
    const int pa = (a[0] * (192 - apm_f_) + a[1] * apm_f_) / 192;
    const std::uint32_t c01 = static_cast<std::uint32_t>(c0_) | (static_cast<std::uint32_t>(r.hist & 0xff) << 8);
    const std::uint32_t a2 = (c01 * 0x9E3779B1u) >> (32 - apm2_bits_);
    a2_ = std::size_t{a2} * kApmKnots + apm_j_;
    const std::uint16_t* b = &apm2_[a2_];
    const int pb = (b[0] * (192 - apm_f_) + b[1] * apm_f_) / 192;
    int p = (2 * pm_ + 3 * pa + 3 * pb) >> 3;
    if (p < 1) p = 1;
    if (p > 65535) p = 65535;
    return p;
  }

  // Pulls the small, hot tables back into the cache (the model's step ran
  // since the last call and evicted them): the mixers, order 0, the first
  // APM, the counters' stretch and rate tables.  Speed only.
  void warm() const {
    auto touch = [](const void* p, std::size_t bytes) {
      const char* c = static_cast<const char*>(p);
      for (std::size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
    };
    touch(w_.data(), w_.size() * 4);
    touch(w2_.data(), w2_.size() * 4);
    touch(o0_.data(), o0_.size() * 4);
    touch(apm_.data(), apm_.size() * 2);
    touch(stretch12_table(), 4096 * 2);
    touch(rate_table(), 1024 * 4);
    touch(w3_.data(), w3_.size() * 4);
    touch(map_.data(), map_.size() * 2);
  }

  // Learns bit y of the last predict, and moves r on by it.
  void update(RowCtx& r, int y) {
    const std::int64_t err = ((std::int64_t{y} << 16) - pm1_) * p_.lr;
    const std::int64_t err2 = ((std::int64_t{y} << 16) - pm2_) * p_.lr;
    std::int32_t* w = &w_[set_ * kInMax];
    std::int32_t* w2 = &w2_[c0_ * kInMax];
    // w += (x err lr + 2^19) >> 20 per mixer (the three weight rows are
    // distinct arrays: one pass gives the same weights as three)
    if (p_.kind == 3) {  // n_in_ == kInMax
      const std::int64_t err3 = ((std::int64_t{y} << 16) - pm3_) * p_.lr;
      std::int32_t* w3 = &w3_[set3_ * kInMax];
      for (int k = 0; k < kInMax; ++k) {
        const std::int64_t x = x_[k];
        w[k] += static_cast<std::int32_t>((x * err + (1 << 19)) >> 20);
        w2[k] += static_cast<std::int32_t>((x * err2 + (1 << 19)) >> 20);
        w3[k] += static_cast<std::int32_t>((x * err3 + (1 << 19)) >> 20);
      }
      for (int i = 0; i < kCtx; ++i) {
        std::uint16_t& m = map_[map_k_[i]];
        m = static_cast<std::uint16_t>(m + (((y << 16) - int{m}) >> kMapRate));
      }
    } else {
      for (int k = 0; k < n_in_; ++k) {
        w[k] += static_cast<std::int32_t>((x_[k] * err + (1 << 19)) >> 20);
        w2[k] += static_cast<std::int32_t>((x_[k] * err2 + (1 << 19)) >> 20);
      }
    }
    std::uint16_t& a = apm_[c0_ * kApmKnots + apm_j_ + (apm_f_ >= 96 ? 1 : 0)];
    a = static_cast<std::uint16_t>(a + (((y << 16) - int{a}) >> 6));
    std::uint16_t& b = apm2_[a2_ + (apm_f_ >= 96 ? 1 : 0)];
    b = static_cast<std::uint16_t>(b + (((y << 16) - int{b}) >> 6));
    o0_[c0_] = learned(o0_[c0_], y);
    for (int i = 0; i < kCtx; ++i) CounterTable::put(slot_[i], learned(CounterTable::get(slot_[i]), y));
    if (mslot_ >= 0) mcount_[mslot_] = learned(mcount_[mslot_], y);
    r.next_bit(y);
    if (p_.kind >= 2 && r.c0 == 1) match_byte(r);
    // a finished byte: fetch the row's next first-nibble buckets now; the
    // other rows' turns come before its next bit
    if (r.c0 == 1)
      for (int i = 0; i < kCtx; ++i) {
        const std::size_t a = line(i, hashed(r.h[i], 0));
        __builtin_prefetch(t_.slot(a));
        if (p_.kind == 3) __builtin_prefetch(t_.slot(a ^ 16));
      }
  }

  // A byte read without coding (a dictionary): counters and r only.
  void feed(RowCtx& r, int b) {
    for (int j = 7; j >= 0; --j) {
      const int y = (b >> j) & 1;
      o0_[r.c0] = learned(o0_[r.c0], y);
      if (p_.kind == 3 && nibble_start(r.c0)) find_all(r, false);
      for (int i = 0; i < kCtx; ++i) {
        std::uint32_t* s = p_.kind == 3 ? t_.slot(r.bucket[i] + nibble(r.c0)) : t_.slot(index(i, r.h[i], r.c0));
        CounterTable::put(s, learned(CounterTable::get(s), y));
      }
      r.next_bit(y);
    }
    if (p_.kind >= 2) match_byte(r);
  }

 private:
  // Counters live in buckets of 16 (one 64-byte line): a byte's first
  // four bits share the bucket of (h, 0), its last four the bucket of (h,
  // its first nibble); within a bucket the slot is the nibble's bits so
  // far behind a leading 1 (1..15).  Two cache lines per context per byte.
  std::size_t index(int i, std::uint64_t h, int c0) const {
    const int b = 31 - __builtin_clz(static_cast<unsigned>(c0));  // bits known, 0..7
    const int key = b < 4 ? 0 : (c0 >> (b - 4));                   // 0, or 16..31: the first nibble
    return line(i, hashed(h, key)) + static_cast<std::size_t>(nibble(c0));
  }

  // z: context hash h mixed with the nibble's key (0, or the first nibble behind its 1).
  static std::uint64_t hashed(std::uint64_t h, int key) { return (h ^ (std::uint64_t(key + 1) * kC1)) * kC2; }
  // The first slot of context i's line (16 slots, 64 bytes) for z.
  std::size_t line(int i, std::uint64_t z) const {
    return (std::size_t(i) << p_.table_bits) + ((std::size_t(z >> shift_) & mask_) & ~std::size_t{15});
  }

  // cm3: a nibble's first bit (c0 1, or 16..31), where find_all looks up the buckets.
  static bool nibble_start(int c0) { return c0 == 1 || (c0 >= 16 && c0 < 32); }

  // The slot within a bucket: the nibble's bits so far behind a leading 1 (1..15).
  static int nibble(int c0) {
    const int b = 31 - __builtin_clz(static_cast<unsigned>(c0));
    return b < 4 ? c0 : ((c0 & ((1 << (b - 4)) - 1)) | (1 << (b - 4)));
  }

  // cm3, at a nibble's first bit (c0 1 or 16..31): each context's bucket
  // (the contract's find); count: whether r.found counts the hits.
  void find_all(RowCtx& r, bool count) {
    if (count) r.found = 0;
    const int key = r.c0 == 1 ? 0 : r.c0;
    for (int i = 0; i < kCtx; ++i) {
      const std::uint64_t z = hashed(r.h[i], key);
      const std::size_t a = line(i, z);
      const std::size_t b = a ^ 16;
      const std::uint32_t check = static_cast<std::uint32_t>(z) | 1u;  // slot 0 of a bucket, stored as is
      std::uint32_t* pa = t_.slot(a);
      std::uint32_t* pb = t_.slot(b);
      if (*pa == check || *pb == check) {
        r.bucket[i] = *pa == check ? a : b;
        r.found += count ? 1 : 0;
        continue;
      }
      const std::uint32_t na = CounterTable::get(pa + 1) & 1023u, nb = CounterTable::get(pb + 1) & 1023u;
      const bool take_b = nb < na;
      std::uint32_t* v = take_b ? pb : pa;
      *v = check;
      std::memset(v + 1, 0, 15 * 4);  // 15 fresh counters (stored XOR 0x80000000)
      r.bucket[i] = take_b ? b : a;
    }
  }

  // cm2, before a bit: the match's input.  With a match whose predicted
  // byte agrees with the bits so far, its expected bit e and the counter
  // of (min(len, 31), e) give st = stretch12(counter >> 20), the input is
  // st, and that counter learns the bit; otherwise 0 (nothing learns).
  std::int64_t match_input(const RowCtx& r) {
    mslot_ = -1;
    if (r.mlen == 0) return 0;
    const int b = 31 - __builtin_clz(static_cast<unsigned>(r.c0));  // bits known
    const int pb = ring_[r.mptr & ring_mask_] | 256;
    if ((pb >> (8 - b)) != r.c0) return 0;
    const int e = (pb >> (7 - b)) & 1;
    mslot_ = 2 * (r.mlen < 31 ? r.mlen : 31) + e;
    return stretch12_table()[mcount_[mslot_] >> 20];
  }

  // cm2, after a byte (the row's newest, hist & 0xff): the contract's
  // match_byte (top of this file).
  void match_byte(RowCtx& r) {
    const std::uint8_t byte = static_cast<std::uint8_t>(r.hist & 0xff);
    ring_[r.pos & ring_mask_] = byte;
    r.pos += 1;
    r.nbytes += r.nbytes < kMatchCheck ? 1 : 0;
    if (r.mlen > 0) {
      if (ring_[r.mptr & ring_mask_] == byte) {
        r.mlen += r.mlen < 65535 ? 1 : 0;
        r.mptr += 1;
      } else {
        r.mlen = 0;
      }
    }
    if (r.nbytes < kMinLen) return;
    constexpr std::uint64_t kKeyMask = kMinLen >= 8 ? ~std::uint64_t{0} : (std::uint64_t{1} << (8 * kMinLen)) - 1;
    const std::size_t h = static_cast<std::size_t>(hash_ctx(r.hist & kKeyMask, 12) >> shift_);
    if (r.mlen == 0 && mtab_[h] != 0) {
      const std::uint32_t cand = mtab_[h];  // the place after an earlier occurrence
      const std::uint32_t back = r.pos - cand;  // mod 2^32
      if (back > 0 && back < ring_mask_) {
        int n = 0;
        while (n < r.nbytes && n < kMatchCheck &&
               ring_[(cand - 1 - n) & ring_mask_] == ring_[(r.pos - 1 - n) & ring_mask_])
          ++n;
        if (n >= kMinLen) {
          r.mlen = n;
          r.mptr = cand;
        }
      }
    }
    mtab_[h] = r.pos;
  }

  std::uint32_t learned(std::uint32_t s, int y) const {
    const std::uint32_t n = s & 1023u;
    const std::int64_t p22 = s >> 10;
    const std::int64_t np = p22 + ((((std::int64_t{y} << 22) - p22) * rate_table()[n]) >> 16);
    const std::uint32_t nn = n < static_cast<std::uint32_t>(p_.limit) ? n + 1 : n;
    return (static_cast<std::uint32_t>(np) << 10) | nn;
  }

  Params p_;
  int shift_;
  std::size_t mask_;
  CounterTable t_;
  std::vector<std::uint32_t> o0_;
  std::vector<std::int32_t> w_, w2_;
  std::vector<std::uint16_t> apm_;
  int apm2_bits_;
  std::vector<std::uint16_t> apm2_;
  std::size_t a2_ = 0;
  int n_in_;
  std::uint32_t ring_mask_;
  std::vector<std::uint8_t> ring_;
  std::vector<std::uint32_t> mtab_;
  std::vector<std::uint32_t> mcount_;
  std::uint32_t next_ = 1;  // the next row's first place (0 marks an empty table entry)
  int mslot_ = -1;
  std::array<std::uint32_t*, kCtx> slot_{};
  std::array<std::int32_t, kInMax> x_{};  // each |x| <= 3072 (the products and sums are int64)
  std::vector<std::int32_t> w3_;
  std::vector<std::uint16_t> map_;
  std::array<int, kCtx> map_k_{};
  int set3_ = 0, pm3_ = 32768;
  int c0_ = 1, set_ = 0, pm_ = 32768, pm1_ = 32768, pm2_ = 32768, apm_j_ = 0, apm_f_ = 0;
};

// The model's P(bit = 1) for the next bit, given that the bits before it
// selected the symbols [lo, hi), from a row's frequency table cdf[0..256]
// (contract above).
inline int lm_bit(const std::uint32_t* cdf, int lo, int hi) {
  const int mid = (lo + hi) >> 1;
  const std::uint64_t n = std::uint64_t{cdf[hi]} - cdf[lo];
  const std::uint64_t n1 = std::uint64_t{cdf[hi]} - cdf[mid];
  std::uint64_t p = (n1 << 16) / n;
  if (p < 1) p = 1;
  if (p > 65535) p = 65535;
  return static_cast<int>(p);
}


// A group's learned state as an object that outlives its wave: the long
// mode (docs/FORMAT.md section 4f, header key cm.long) continues an
// archive's state in its next wave.  A copy is a deep copy (the encoder
// keeps one to code a wave again).  `busy` refuses concurrent use by two
// calls (a state may sit in several ContextMixers).
struct State {
  explicit State(const Params& p) : model(p) {}
  State(const State& o) : model(o.model) {}
  State& operator=(const State&) = delete;
  Model model;
  std::atomic<bool> busy{false};
};

// The stage for a wave: one Model per group of rows, one RowCtx per row.
// encode / decode code one byte per row given (rows[k], or k), in k order:
// row k's eight bits are predicted, coded and learned before row k+1's.
class ContextMixer {
 public:
  // groups[r]: the state row r learns with and from (0..G-1); bits[g]:
  // group g's table_bits.  The rows of one archive in a wave form one group,
  // so that each archive decodes alone (docs/FORMAT.md section 4f).
  // states (optional, one per group, null: fresh): the states to continue
  // (each with table_bits bits[g]), shared with the caller.
  // kind: 1, 2 or 3 (Params::kind); max_len: the most bytes a row holds (cm2's ring places per row);
  // priors (cm3, optional): the fresh states' initial mixer weights (Params::priors).
  ContextMixer(const std::vector<std::int64_t>& groups, const std::vector<int>& bits,
               const std::vector<std::shared_ptr<State>>& states = {}, int kind = 1, std::size_t max_len = 0,
               std::shared_ptr<const std::vector<std::int32_t>> priors = nullptr)
      : ctx_(groups.size()), group_(groups.size()), checker_(groups.size(), "context-mixing row") {
    if (groups.empty()) throw InvalidInput("a context mixer needs at least one row");
    if (bits.empty()) throw InvalidInput("a context mixer needs at least one group");
    for (std::size_t r = 0; r < groups.size(); ++r) {
      if (groups[r] < 0 || static_cast<std::uint64_t>(groups[r]) >= bits.size())
        throw InvalidInput("groups[" + std::to_string(r) + "] = " + std::to_string(groups[r]) +
                           " is not a group index in [0, " + std::to_string(bits.size()) + ")");
      group_[r] = static_cast<std::size_t>(groups[r]);
    }
    Params p;
    p.kind = kind;
    p.priors = std::move(priors);
    for (int b : bits) {
      p.table_bits = b;
      p.validate();
    }
    if (max_len > (std::size_t{1} << 24)) throw InvalidInput("max_len must be at most 2^24 bytes");
    if (!states.empty() && states.size() != bits.size())
      throw InvalidInput("states: " + std::to_string(states.size()) + " given for " + std::to_string(bits.size()) +
                         " groups");
    models_.reserve(bits.size());
    for (std::size_t g = 0; g < bits.size(); ++g) {
      if (g < states.size() && states[g]) {
        if (states[g]->model.params().kind != kind)
          throw InvalidInput("states[" + std::to_string(g) + "] is of kind " +
                             std::to_string(states[g]->model.params().kind) + ", not " + std::to_string(kind));
        if (states[g]->model.params().table_bits != bits[g])
          throw InvalidInput("states[" + std::to_string(g) + "] has table_bits " +
                             std::to_string(states[g]->model.params().table_bits) + ", group " + std::to_string(g) +
                             " needs " + std::to_string(bits[g]));
        for (std::size_t h = 0; h < g; ++h)
          if (models_[h] == states[g]) throw InvalidInput("states[" + std::to_string(g) + "] is given twice");
        models_.push_back(states[g]);
      } else {
        p.table_bits = bits[g];
        models_.push_back(std::make_shared<State>(p));
      }
    }
    for (std::size_t r = 0; r < ctx_.size(); ++r) models_[group_[r]]->model.attach(ctx_[r], max_len);
  }

  // Group g's state (to continue in a later wave).
  std::shared_ptr<State> state(std::size_t g) const { return models_.at(g); }

  std::size_t n_rows() const { return ctx_.size(); }
  std::size_t n_groups() const { return models_.size(); }
  int table_bits(std::size_t g) const { return models_.at(g)->model.params().table_bits; }
  std::size_t nbytes() const {
    std::size_t n = ctx_.size() * (sizeof(RowCtx) + sizeof(std::size_t));
    for (const auto& m : models_) n += m->model.params().row_bytes();
    return n;
  }

  // w: m rows of V = 256 uint32 weights (an exact model's), with optional
  // match overrides as for encode_weights; symbols: the bytes.  Everything
  // is validated before any stream moves.
  void encode(BatchEncoder& enc, const std::uint32_t* w, std::size_t m, std::size_t V, const std::int64_t* symbols,
              const std::int64_t* rows, const std::int64_t* match, const std::uint32_t* q) {
    prepare(w, m, V, rows, match, q, enc.precision());
    enc.check_rows(rows, m);
    const Claim claim(models_);
    for (const auto& md : models_) md->model.warm();
    for (std::size_t k = 0; k < m; ++k) detail::check_symbol(symbols[k], V, k);
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t i = detail::stream_of(rows, k);
      RowCtx& r = ctx_[i];
      Model& model_ = models_[group_[i]]->model;
      rc::EncoderStream& st = enc.stream(rows, k);
      const std::uint32_t* cdf = &cdf_[k * 257];
      const int s = static_cast<int>(symbols[k]);
      int lo = 0, hi = 256;
      for (int j = 7; j >= 0; --j) {
        const int p = model_.predict(r, lm_bit(cdf, lo, hi));
        const int y = (s >> j) & 1;
        if (y) {
          st.put(0, static_cast<std::uint32_t>(p), 16);
        } else {
          st.put(static_cast<std::uint32_t>(p), static_cast<std::uint32_t>(65536 - p), 16);
        }
        model_.update(r, y);
        (y ? lo : hi) = (lo + hi) >> 1;
      }
    }
  }

  void decode(BatchDecoder& dec, const std::uint32_t* w, std::size_t m, std::size_t V, std::int64_t* out,
              const std::int64_t* rows, const std::int64_t* match, const std::uint32_t* q) {
    prepare(w, m, V, rows, match, q, dec.precision());
    dec.check_rows(rows, m);
    const Claim claim(models_);
    for (const auto& md : models_) md->model.warm();
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t i = detail::stream_of(rows, k);
      RowCtx& r = ctx_[i];
      Model& model_ = models_[group_[i]]->model;
      rc::DecoderStream& st = dec.stream(rows, k);
      const std::uint32_t* cdf = &cdf_[k * 257];
      int lo = 0, hi = 256;
      for (int j = 7; j >= 0; --j) {
        const int p = model_.predict(r, lm_bit(cdf, lo, hi));
        const int y = st.decode_bit(static_cast<std::uint32_t>(p), i);
        model_.update(r, y);
        (y ? lo : hi) = (lo + hi) >> 1;
      }
      out[k] = lo;
    }
  }

  // Bytes read without coding (a dictionary), one per row given.
  void feed(const std::int64_t* symbols, std::size_t m, const std::int64_t* rows) {
    checker_.check(rows, m);
    for (std::size_t k = 0; k < m; ++k) detail::check_symbol(symbols[k], 256, k);
    const Claim claim(models_);
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t i = detail::stream_of(rows, k);
      models_[group_[i]]->model.feed(ctx_[i], static_cast<int>(symbols[k]));
    }
  }

 private:
  // Checks the call and fills cdf_ with every row's table (all-or-nothing).
  void prepare(const std::uint32_t* w, std::size_t m, std::size_t V, const std::int64_t* rows,
               const std::int64_t* match, const std::uint32_t* q, int precision) {
    if (V != 256) {
      throw InvalidInput("the context-mixing stage codes bytes: rows need 256 weights, got " + std::to_string(V));
    }
    quant::check_shape(V, precision);
    checker_.check(rows, m);
    cdf_.resize(m * 257);
    for (std::size_t k = 0; k < m; ++k) {
      quant::quantize_int_row(w + k * V, V, precision, match ? match[k] : -1, q ? q[k] : 0, &cdf_[k * 257], k);
    }
  }

  // Marks every state busy for one call (InvalidInput if another call holds one).
  class Claim {
   public:
    explicit Claim(const std::vector<std::shared_ptr<State>>& s) : s_(s) {
      for (; n_ < s_.size(); ++n_) {
        bool idle = false;
        if (!s_[n_]->busy.compare_exchange_strong(idle, true)) {
          release();
          throw InvalidInput("a context-mixing state is in use by another call (states are not thread-safe)");
        }
      }
    }
    ~Claim() { release(); }
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;

   private:
    void release() {
      for (std::size_t i = 0; i < n_; ++i) s_[i]->busy.store(false);
      n_ = 0;
    }
    const std::vector<std::shared_ptr<State>>& s_;
    std::size_t n_ = 0;
  };

  std::vector<std::shared_ptr<State>> models_;
  std::vector<RowCtx> ctx_;
  std::vector<std::size_t> group_;
  detail::RowChecker checker_;
  std::vector<std::uint32_t> cdf_;
};

}  // namespace cm
}  // namespace pyllmcodec
